"""How a place may be written, for Tab completion: the kernel's text symbols, `module:`
and a module's text symbols, and after `symbol+` the instruction boundaries of that
function (the offsets register_kprobe() can accept; kp-check says which of them it does).

Names come from the vmlinux symbol table (no types, no data) and, with a stopped target,
from the module list and each module's kallsyms (struct mod_kallsyms), as
/proc/kallsyms lists them.
"""
from __future__ import annotations

import bisect

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import decode, places
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import symbols

__all__ = ["complete"]


def complete(token: str, symbolizer: Symbolizer | None) -> list[str]:
    """Every spelling of a place that starts with `token`, sorted. `symbolizer` is None
    when no stopped target can be read: then the vmlinux file's names only."""
    if "+" in token:
        return _offsets(token, symbolizer)
    if ":" in token:
        return _module_symbols(token, symbolizer) if symbolizer is not None else []
    found = _starting_with(symbols.kernel().text_names(), token)
    modules = [] if symbolizer is None else [module.name for module in symbolizer.modules
                                             if module.name.startswith(token)]
    if not found and len(modules) == 1:
        # the module's symbols rather than a lone `module:`, after which gdb's readline
        # would add a space: Tab then stops at `module:` and offers what follows it
        return _module_symbols(f"{modules[0]}:", symbolizer) or [f"{modules[0]}:"]
    return sorted(found + [f"{name}:" for name in modules])


def _starting_with(names: list[str], prefix: str) -> list[str]:
    first = bisect.bisect_left(names, prefix)
    last = bisect.bisect_left(names, prefix + "\U0010ffff")
    return names[first:last]


def _module_symbols(token: str, symbolizer: Symbolizer) -> list[str]:
    module_name, _, prefix = token.partition(":")
    module = next((m for m in symbolizer.modules if m.name == module_name), None)
    if module is None:
        return []
    return [f"{module_name}:{name}"
            for name in _starting_with(module.text_symbol_names(), prefix)]


def _offsets(token: str, symbolizer: Symbolizer | None) -> list[str]:
    """`symbol+` → symbol+0x0, symbol+0x4, ...: every instruction boundary, from the
    vmlinux file's code (or a module's live code with the probes' bytes put back)."""
    base, _, typed = token.rpartition("+")
    if ":" in base and symbolizer is None:
        return []
    try:
        place = places.resolve(base, symbolizer or Symbolizer(), kprobe_entry=False)
    except KpError:
        return []
    if not place.size or place.offset:
        return []
    start = place.address
    code = decode.function_code(start, place.size, place.module is not None)
    spelled = [f"{base}+{insn.address - start:#x}" for insn in code]
    return [text for text in spelled if text.startswith(token)] if typed else spelled
