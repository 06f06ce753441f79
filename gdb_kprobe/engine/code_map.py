"""Which PCs are kprobe machinery, decided from the PC alone for ordinary code.

The unwinder asks about every frame gdb builds, at every stop, so the answer for an
ordinary kernel PC must cost a range test: the image's entry-path code (asm_exc_int3,
ftrace_regs_caller) and the rethook trampoline come from the vmlinux's ELF symbols once
per symbol file. Code outside the image is either a module's (gdb has its symbols after
kp-modules --load) or pages the kernel allocates at run time (ftrace trampolines, the
optprobe detour buffers in kprobe insn pages), which no symbol file knows: those PCs
are looked at, once per PC and stop.
"""
from __future__ import annotations

import bisect
import struct

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache, memory, symbols

__all__ = ["CodeMap", "kernel_code", "outside_entry_kind"]

# The entry code by name (arch.ENTRY_SYMBOLS, arch.ENTRY_PREFIXES) and the C functions run-time
# code calls with a pt_regs (arch.ENTRY_CALLEES) are the arch seam's.
# kernel/trace/rethook.c (v5.18, 54ecbe6f1ed5); kretprobe_trampoline before it
TRAMPOLINES = ("arch_rethook_trampoline", "__kretprobe_trampoline", "kretprobe_trampoline")


class CodeMap:
    """What the vmlinux's ELF symbols say about PCs, computed once per symbol file: the
    image's range, its entry-path code (sorted, disjoint ranges) and the trampoline."""

    def __init__(self) -> None:
        table = symbols.kernel()
        # symbols.in_kernel_image()'s range, as a pair to compare with inline
        start = table.address_of("_text") or table.address_of("_stext") or 0
        end = table.address_of("_end") or (table.addresses[-1] if table.addresses else 0)
        self.image = (start, end)
        ranges = []
        entry_symbols, entry_prefixes = arch.ENTRY_SYMBOLS, arch.ENTRY_PREFIXES
        prefixes = tuple(entry_prefixes)
        for index, name in enumerate(table.names):
            kind = entry_symbols.get(name)
            if kind is None and prefixes and name.startswith(prefixes):
                kind = next(k for p, k in entry_prefixes.items() if name.startswith(p))
            if kind is None:
                continue
            start = table.addresses[index]
            following = bisect.bisect_right(table.addresses, start)
            end = table.addresses[following] if following < len(table.addresses) else start + 1
            ranges.append((start, end, kind))
        ranges.sort()
        self.starts = [start for start, _end, _kind in ranges]
        self.ranges = ranges
        self.trampoline = next((a for a in map(table.address_of, TRAMPOLINES) if a), None)

    def entry_kind(self, pc: int) -> str | None:
        index = bisect.bisect_right(self.starts, pc) - 1
        if index >= 0 and pc < self.ranges[index][1]:
            return self.ranges[index][2]
        return None


_code_map: CodeMap | None = None
# PC outside the image → entry kind, for this stop (pages come and go while it runs)
_outside_kinds: dict[int, str | None] = {}


def _forget_code_map() -> None:
    global _code_map
    _code_map = None


cache.register(_forget_code_map, *cache.OBJFILE, "relocate")
cache.register(_outside_kinds.clear, *cache.RESUME)


def kernel_code() -> CodeMap:
    """The CodeMap of the loaded vmlinux (made at the first stop that unwinds)."""
    global _code_map
    if _code_map is None:
        _code_map = CodeMap()
    return _code_map


def outside_entry_kind(pc: int) -> str | None:
    """Is pc, outside the kernel image, the return address of an entry path's call into
    C code (an ftrace trampoline or optprobe detour buffer, allocated at run time)?"""
    if pc < arch.CODE_SPACE_START or not arch.ENTRY_CALLEES:
        return None                             # user space, or the end of the stack (0)
    if pc in _outside_kinds:
        return _outside_kinds[pc]
    kind = None
    if gdb.block_for_pc(pc) is None:           # module code gdb has symbols for: no
        try:
            before = memory.read(pc - 5, 5)     # look at the call
        except KpError:
            before = b""
        if before[:1] == bytes([arch.CALL32]):
            callee = arch.u64(pc + struct.unpack("<i", before[1:])[0])
            name = symbols.kernel().lookup(callee)
            kind = arch.ENTRY_CALLEES.get(name[0]) if name and name[1] == 0 else None
    _outside_kinds[pc] = kind
    return kind


