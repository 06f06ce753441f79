"""Parse the places users name: `sym+off`, `sym`, `mod:sym+off`, `0xaddr`, `*0xaddr`.

Offsets are accepted in decimal and hex (`inet_accept+20`, `inet_accept+0x14`), as
kprobe_events does. Symbols are checked against the local symbol table (or the
module's kallsyms for `mod:sym`), and an offset must stay inside the function.
"""
from __future__ import annotations

import dataclasses
import re

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError, KpUsageError
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import memory, symbols

__all__ = ["Place", "parse_offset", "split", "names_function", "resolve", "has_entry_marker",
           "entry_adjusted"]

_SYM_OFF = re.compile(r"^(?:(?P<mod>[A-Za-z0-9_\-]+):)?(?P<sym>[A-Za-z_.][\w.]*)"
                      r"(?:\+(?P<off>\S+))?$")
_ADDRESS = re.compile(r"^\*?(0[xX][0-9a-fA-F]+|[0-9a-fA-F]{16})$")


@dataclasses.dataclass(frozen=True)
class Place:
    """A place a user named, resolved: an address and the symbol it is in."""

    address: int
    symbol: str | None          # the function (or data symbol) containing it
    offset: int
    size: int                   # of the symbol, 0 when unknown
    module: str | None

    def __str__(self) -> str:
        if self.symbol is None:
            return f"{self.address:#x}"
        where = f"{self.symbol}+{self.offset:#x}"
        return f"{self.module}:{where}" if self.module else where


def parse_offset(text: str, spec: str) -> int:
    try:
        value = int(text, 0) if not re.fullmatch(r"0\d+", text) else int(text, 10)
    except ValueError:
        raise KpUsageError(f"bad offset `{text}` in `{spec}`: use a decimal or 0x-hex number, "
                           "e.g. inet_accept+20 or inet_accept+0x14") from None
    if value < 0:
        raise KpUsageError(f"negative offset in `{spec}`: offsets count forward from the symbol")
    return value



def split(spec: str) -> tuple[str | None, str, int, bool]:
    """(module, symbol, offset, offset given) of `[mod:]sym[+off]`; KpUsageError if malformed."""
    match = _SYM_OFF.match(spec)
    if not match:
        raise KpUsageError(f"bad place `{spec}`: expected symbol, symbol+offset, "
                           "module:symbol+offset or a 0x address")
    offset_text = match.group("off")
    offset = parse_offset(offset_text, spec) if offset_text is not None else 0
    return match.group("mod"), match.group("sym"), offset, offset_text is not None


def names_function(spec: str) -> bool:
    """Is `spec` a whole function, `sym` or `mod:sym` without an offset (not an address)?
    kp-show then shows every probe in it; `sym+0` still names the entry alone."""
    spec = spec.strip()
    match = _SYM_OFF.match(spec)
    return bool(match) and match.group("off") is None and not _ADDRESS.match(spec)


def resolve(spec: str, symbolizer: Symbolizer | None = None, kprobe_entry: bool = True) -> Place:
    """Turn a user's place into an address, checking it names something real.

    With `kprobe_entry`, `sym` and `sym+0` mean what they mean to register_kprobe():
    on IBT kernels a function starting with endbr64 is probed after it, at +4
    (arch_adjust_kprobe_addr()).
    """
    spec = spec.strip()
    if not spec:
        raise KpUsageError("no place given: name one as symbol+offset or an address")
    symbolizer = symbolizer or Symbolizer()
    match = _ADDRESS.match(spec)
    if match:
        address = int(match.group(1), 16)
        if address > arch.ADDRESS_MASK:
            raise KpUsageError(f"address `{spec}` is wider than 64 bits")
        found = symbolizer.lookup(address)
        if found is None:
            return Place(address, None, 0, 0, None)
        return Place(address, found.symbol, found.offset, found.size, found.module)
    if "-" in spec.split(":")[-1] and "+" not in spec:
        raise KpUsageError(f"bad place `{spec}`: offsets are added (symbol+offset), never "
                           "subtracted")
    module_name, name, offset, _ = split(spec)
    if module_name:
        module = next((m for m in symbolizer.modules if m.name == module_name), None)
        if module is None:
            raise KpError(f"no module `{module_name}` is loaded in the target")
        start = module.address_of(name)
        if start is None:
            raise KpError(f"no symbol `{name}` in module {module_name}")
        found = module.symbol(start)
        size = found[2] if found else 0
    else:
        table = symbols.kernel()
        start = table.address_of(name)
        if start is None:
            raise KpError(f"no symbol `{name}` in the kernel; check the spelling "
                          f"(tab completes symbols) or name a module symbol as module:{name}")
        size = table.lookup(start)[2]
    if size and offset >= size:
        raise KpError(f"offset {offset:#x} is beyond the end of {name} "
                      f"(size {size:#x})")
    if kprobe_entry and offset == 0 and has_entry_marker(start):
        offset = len(arch.ENDBR64)
    return Place(start + offset, name, offset, size, module_name)


def has_entry_marker(function_start: int) -> bool:
    """Does register_kprobe() put an entry probe of this function at +4? It does where
    is_endbr() (asm/ibt.h) takes the first four live bytes: endbr64 or endbr32, or the nop
    that seals an unused endbr64 (apply_seal_endbr(): the vmlinux file still shows endbr64
    there). Only on kernels built with IBT (CONFIG_X86_KERNEL_IBT, where `ibt_save` exists):
    elsewhere is_endbr() is a stub that says no."""
    if symbols.kernel().address_of("ibt_save") is None:
        return False
    try:
        live = memory.read(function_start, len(arch.ENDBR64))
    except KpError:
        return False
    return live in (arch.ENDBR64, arch.ENDBR32, arch.ENDBR_POISON)


def entry_adjusted(function_start: int, offset: int) -> tuple[int, bool]:
    """arch_adjust_kprobe_addr(): (the offset register_kprobe() uses, whether that is the
    function's entry). With an entry marker, +0 and +4 both mean +4."""
    if has_entry_marker(function_start):
        on_entry = offset in (0, len(arch.ENDBR64))
        return (len(arch.ENDBR64) if on_entry else offset), on_entry
    return offset, offset == 0
