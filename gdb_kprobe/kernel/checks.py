"""Would register_kprobe() accept a place? The kernel's checks, replayed in order.

Follows the kprobe_events path of kernel/trace/trace_kprobe.c and register_kprobe()
in kernel/kprobes.c (6.1 and later):
  1. the symbol must exist and be unique in kallsyms (else -ENOENT / -EADDRNOTAVAIL);
  2. _kprobe_addr(): sym+off is re-based on the symbol that contains it (-ENOENT if
     none), endbr64 at a function entry is skipped;
  3. a place that already has a probe joins its aggregate (no further checks);
  4. check_kprobe_address_safe(): kernel or module text, not in the kprobe blacklist
     (including NOKPROBE and noinstr/entry areas, and `.` suffixed copies of blacklisted
     functions), not a jump label / static call site, not a BUG() site (-EINVAL);
  5. can_probe(): an instruction boundary decoded from the function start (-EILSEQ).
"""
from __future__ import annotations

import dataclasses
import errno
import os

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import blacklist, decode, kprobes, patchsites
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.kernel.places import Place, split
from gdb_kprobe.target import disasm, memory, symbols

__all__ = ["Verdict", "check"]


@dataclasses.dataclass
class Verdict:
    """The kernel's answer to one place: accepted, or the errno and why."""

    spec: str
    address: int | None
    place: str | None
    error: int | None                 # errno the kernel would return, None if accepted
    reasons: list[str]
    notes: list[str]

    @property
    def errno_name(self) -> str:
        return errno.errorcode.get(self.error, str(self.error)) if self.error else ""

    @property
    def errno_text(self) -> str:
        return os.strerror(self.error) if self.error else ""


class _Refused(Exception):
    """A check said no: the errno and the reason (and the place, once it is known)."""

    def __init__(self, error: int, reason: str, place: Place | None = None) -> None:
        super().__init__(reason)
        self.error, self.reason, self.place = error, reason, place


def check(spec: str) -> Verdict:
    """The kernel's verdict on `p:EVENT spec` written to kprobe_events."""
    symbolizer = Symbolizer()
    notes: list[str] = []
    try:
        place = _kprobe_addr(spec, symbolizer, notes)
        if _joins_existing(place, notes):
            return Verdict(spec, place.address, str(place), None, [], notes)
        _check_address_safe(place, symbolizer, notes)
        notes.extend(_can_probe(place))
    except _Refused as refused:
        where = refused.place
        return Verdict(spec, where.address if where else None, str(where) if where else None,
                       refused.error, [refused.reason], notes)
    return Verdict(spec, place.address, str(place), None, [], notes)


def _symbol_error(error: int, reason: str) -> _Refused:
    # Newer kprobe_events parsers turn the symbol errors into a parse error: -EINVAL, with
    # the reason in tracing/error_log (validate_probe_symbol(): 9d8616034f16 "tracing/kprobes:
    # Add symbol counting check when module loads", v6.11, also in stable kernels: the
    # symbol tells, not the version).
    if symbols.kernel().address_of("validate_probe_symbol") is not None:
        return _Refused(errno.EINVAL, f"{reason} (kprobe_events reports it as a parse error; "
                        f"register_kprobe() would say -{errno.errorcode[error]})")
    return _Refused(error, reason)


def _symbol_start(module_name: str | None, name: str, symbolizer: Symbolizer) -> int:
    """kallsyms_lookup_name() for kprobe_events: the symbol must be unique."""
    if module_name is not None:
        module = next((m for m in symbolizer.modules if m.name == module_name), None)
        if module is None or module.address_of(name) is None:
            raise _symbol_error(errno.ENOENT, f"no symbol `{module_name}:{name}`")
        return module.address_of(name)
    count = symbols.kernel().name_counts.get(name, 0) + \
        sum(module.count_of(name) for module in symbolizer.modules)
    if count == 0:
        raise _symbol_error(errno.ENOENT, f"no symbol `{name}` in kallsyms")
    if count > 1:
        raise _symbol_error(errno.EADDRNOTAVAIL, f"`{name}` names {count} symbols in kallsyms; "
                            "kprobe_events wants a unique one (use an address or MOD:SYM)")
    start = symbols.kernel().address_of(name)
    if start is None:
        start = next(m for m in symbolizer.modules if m.count_of(name)).address_of(name)
    return start


def _kprobe_addr(spec: str, symbolizer: Symbolizer, notes: list[str]) -> Place:
    """_kprobe_addr(): re-base sym+off on the symbol containing it, then skip endbr64."""
    module_name, name, offset, _ = split(spec.strip())
    address = _symbol_start(module_name, name, symbolizer) + offset
    found = symbolizer.lookup(address)
    if found is None:
        raise _Refused(errno.ENOENT, f"{address:#x} is inside no symbol",
                       Place(address, None, 0, 0, None))
    function_start = address - found.offset
    if found.offset != offset or found.symbol != name:
        notes.append(f"{name}+{offset:#x} is past the end of {name}: the kernel re-bases it "
                     f"on {found.symbol}+{found.offset:#x}")
    rel = found.offset
    try:
        first = memory.read(function_start, len(arch.ENDBR64))
    except KpError:
        first = b""
    if first == arch.ENDBR64 and rel in (0, len(arch.ENDBR64)):
        rel = len(arch.ENDBR64)
        notes.append("the function starts with endbr64 (IBT): a probe at its entry goes after "
                     "it, at +0x4")
    return Place(function_start + rel, found.symbol, rel, found.size, found.module)


def _joins_existing(place: Place, notes: list[str]) -> bool:
    """A place with a probe already: the new one joins its aggregate, nothing else checked."""
    table = kprobes.read_table()
    existing = kprobes.find_entry(table, place.address)
    if existing is None:
        return False
    notes.append(f"a probe is already registered here: the new one joins it "
                 f"({'an aggregate' if table.is_aggregate(existing) else 'making an aggregate'})")
    return True


def _check_address_safe(place: Place, symbolizer: Symbolizer, notes: list[str]) -> None:
    """check_kprobe_address_safe(): text, not blacklisted, not a patch or trap site."""
    address = place.address
    if not _in_text(address, symbolizer):
        raise _Refused(errno.EINVAL, "not in kernel or module text (core_kernel_text / "
                                     "__module_text_address)", place)
    walk = blacklist.read_blacklist()
    if walk.damage:
        notes.append(f"the blacklist could not be read whole: {walk.damage}")
    if blacklist.blacklisted(address, walk.items, symbolizer):
        raise _Refused(errno.EINVAL, f"{place.symbol} is in the kprobe blacklist "
                                     "(debugfs kprobes/blacklist: NOKPROBE_SYMBOL, __kprobes, "
                                     "noinstr or entry text)", place)
    if patchsites.is_jump_label(address):
        raise _Refused(errno.EINVAL, "a jump label (static key) patch site", place)
    if patchsites.is_static_call(address):
        raise _Refused(errno.EINVAL, "a static call site", place)
    if patchsites.is_bug(address):
        raise _Refused(errno.EINVAL, "a BUG()/WARN() trap site (__bug_table)", place)


def _in_text(address: int, symbolizer: Symbolizer) -> bool:
    table = symbols.kernel()
    start, end = table.address_of("_stext"), table.address_of("_etext")
    if start is not None and end is not None and start <= address < end:
        return True
    module = symbolizer.module_for(address)
    return module is not None and module.text_contains(address)


def _can_probe(place: Place) -> list[str]:
    """can_probe(): an instruction boundary; then which mechanism the probe would get."""
    boundary = decode.check(place)
    if not boundary.ok:
        inside = boundary.insn
        function_start = place.address - place.offset
        text = (f"not an instruction boundary: inside `{inside.asm}` at "
                f"{place.symbol}+{inside.address - function_start:#x} ({len(inside.raw)} bytes)"
                if inside else "past the function's decoded instructions")
        raise _Refused(errno.EILSEQ, text, place)
    return _mechanism(place, boundary)


def _mechanism(place: Place, boundary: decode.Boundary) -> list[str]:
    insn = boundary.insn
    # the fentry site: `call __fentry__` in the vmlinux file; module code is read live,
    # where ftrace has turned the call into a 5-byte nop (or a call to a trampoline)
    entry = place.offset in (0, len(arch.ENDBR64))
    if "__fentry__" in insn.asm or (place.module and entry and insn.raw == arch.NOP5):
        return ["ftrace-based: this is the function's fentry call site (KPROBE_FLAG_FTRACE); "
                "no int3, never optimized"]
    likely, why = _optimizable(place, boundary.function_insns)
    kind = "int3 kprobe"
    return [f"{kind}; {'likely optimizable into a jmp (optprobe)' if likely else 'not optimizable'}"
            f": {why}"]


def _optimizable(place: Place, insns: list[disasm.Insn]) -> tuple[bool, str]:
    """A summary of can_optimize() in arch/x86/kernel/kprobes/opt.c."""
    end_of_function = place.address - place.offset + place.size
    if place.address + arch.REL32_SIZE > end_of_function:
        return False, "the 5-byte jmp would not fit before the function's end"
    covered = [i for i in insns if i.address < place.address + arch.REL32_SIZE and
               i.address + len(i.raw) > place.address]
    for insn in insns:
        mnemonic = (insn.asm.split() or [""])[0]      # blank text: no mnemonic
        if mnemonic == "jmp" and "*" in insn.asm and "__x86_indirect" not in insn.asm:
            return False, f"the function has an indirect jump (`{insn.asm}`)"
    region_end = max(i.address + len(i.raw) for i in covered)
    for insn in insns:
        target_text = insn.asm.split()[-1] if insn.asm.split() else ""
        if insn.asm.startswith("j") and target_text.startswith("0x"):
            goal = int(target_text, 16)
            if place.address < goal < region_end:
                return False, f"`{insn.asm}` at {insn.address:#x} jumps into the region"
    for insn in covered:
        if insn.asm.startswith(("call", "jmp", "j", "ret", "int3", "ud2")):
            return False, f"`{insn.asm}` cannot be copied into a detour buffer"
    return True, f"the jmp would replace {region_end - place.address} bytes: " + \
        "; ".join(f"`{i.asm}`" for i in covered)
