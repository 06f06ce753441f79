"""kprobe_events' own rules (kernel/trace/trace_kprobe.c), before it registers a place the
way a module would: the place syntax (kernel/probe_spec.py), a unique symbol, an entry for
%return, a function with an ftrace call site (within_notrace_func(), unless
CONFIG_KPROBE_EVENTS_ON_NOTRACE), and a symbol of a module that is not loaded yet waits.
"""
from __future__ import annotations

import bisect
import errno

from gdb_kprobe.kernel import ftrace, probe_spec
from gdb_kprobe.kernel.register_checks import Answer, Refused, RegisterChecker, Registered
from gdb_kprobe.target import symbols

__all__ = ["EventsChecker", "notrace_rule_applies"]

NOTRACE_WARNING = b"Could not probe notrace function"


def notrace_rule_applies() -> bool:
    """within_notrace_func() is built only without CONFIG_KPROBE_EVENTS_ON_NOTRACE; its
    warning text is then in the vmlinux's strings."""
    return symbols.kernel().contains_bytes(NOTRACE_WARNING)




class EventsChecker:
    """register_trace_kprobe() for `p PLACE`, on top of a RegisterChecker."""

    def __init__(self, register_checker: RegisterChecker) -> None:
        self.register_checker = register_checker

    def events(self, parsed: probe_spec.EventPlace, notes: list[str]) -> Registered:
        """__trace_kprobe_create() and register_trace_kprobe() for `p PLACE`."""
        if parsed.error is not None:
            return Registered(Answer(parsed.error, parsed.reason), None, [])
        try:
            if parsed.symbol is not None:
                self._events_symbol(parsed)
            address = parsed.address
            if parsed.symbol is not None:
                found = self.register_checker.lookup_name(parsed.kallsyms_name)
                address = found + parsed.offset if found is not None else None
            if address and notrace_rule_applies() and self._within_notrace_func(address):
                raise Refused(errno.EINVAL, "no ftrace call site in this function: "
                               "kprobe_events refuses notrace functions (trace_kprobe: "
                               "\"Could not probe notrace function\"); register_kprobe() "
                               "from a module does not ask")
        except Refused as refused:
            return Registered(refused.answer, refused.place, [])
        result = self.register_checker.register(parsed.kallsyms_name, parsed.address, parsed.offset,
                               parsed.is_return)
        if result.answer.error == errno.ENOENT and not self._module_exists(parsed):
            notes.append("kprobe_events keeps it as a probe waiting for a module to load "
                         "(register_trace_kprobe() takes -ENOENT as \"might be able to "
                         "register after target module is loaded\")")
            return Registered(Answer(None), result.place, [])
        return result

    def _module_exists(self, parsed: probe_spec.EventPlace) -> bool:
        """trace_kprobe_module_exist(): false for an address (no symbol) and for MOD:SYM
        of a module that is not loaded; true for a plain symbol."""
        if parsed.symbol is None:
            return False
        if parsed.module is None:
            return True
        return any(m.name == parsed.module for m in self.register_checker.symbolizer.modules)

    def _events_symbol(self, parsed: probe_spec.EventPlace) -> None:
        """The symbol rules of __trace_kprobe_create(): a unique name (validate_probe_symbol()
        folds its errors into the parse error -EINVAL; older kernels say them as they are),
        and an entry for %return (-EINVAL)."""
        folded = symbols.kernel().address_of("validate_probe_symbol") is not None
        name = parsed.kallsyms_name
        loaded = parsed.module is None or any(m.name == parsed.module
                                              for m in self.register_checker.symbolizer.modules)

        def count_check() -> None:
            count = self._count(parsed)
            if count != 1:
                error = errno.ENOENT if count == 0 else errno.EADDRNOTAVAIL
                what = f"no symbol `{name}` in kallsyms" if count == 0 else \
                    f"`{name}` names {count} symbols in kallsyms; kprobe_events wants a " \
                    "unique one (use an address or MOD:SYM)"
                if folded:
                    raise Refused(errno.EINVAL, f"{what} (kprobe_events reports it as a "
                                   f"parse error; register_kprobe() would say "
                                   f"-{errno.errorcode[error]})")
                raise Refused(error, what)

        if folded and loaded:
            count_check()                 # 6.11+: before the entry check
        if parsed.is_return and self.register_checker.lookup_name(name) is not None:
            self.register_checker.kprobe_addr(name, None, parsed.offset, [], is_return=True)
        if not folded and parsed.module is None:
            count_check()

    def _count(self, parsed: probe_spec.EventPlace) -> int:
        if parsed.module is not None:
            module = next(m for m in self.register_checker.symbolizer.modules if m.name == parsed.module)
            return module.count_of(parsed.symbol)
        return symbols.kernel().name_counts.get(parsed.symbol, 0) + \
            sum(module.count_of(parsed.symbol) for module in self.register_checker.symbolizer.modules)

    def _within_notrace_func(self, address: int) -> bool:
        """within_notrace_func(): the function containing `address` has no ftrace call site
        (a `.`-suffixed copy is judged by its base function)."""
        found = self.register_checker.symbolizer.lookup(address)
        if found is None or not self._no_ftrace_site(address - found.offset):
            return False
        if "." in found.symbol:
            base = self.register_checker.lookup_name(found.symbol.split(".")[0])
            if base is not None:
                return self._no_ftrace_site(base)
        return True

    def _no_ftrace_site(self, start: int) -> bool:
        size = self._kallsyms_size(start)
        return ftrace.location_range(start, start + max(size, 1) - 1) is None

    def _kallsyms_size(self, start: int) -> int:
        """kallsyms_lookup_size_offset()'s size: up to the next symbol's address."""
        if symbols.in_kernel_image(start):
            addresses = symbols.kernel().addresses
            following = bisect.bisect_right(addresses, start)
            return addresses[following] - start if following < len(addresses) else 1
        found = self.register_checker.symbolizer.lookup(start)
        return found.size if found and found.size else 1
