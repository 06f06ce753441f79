"""Which functions the compiler inlined into another, from the DWARF block tree: a rule the
kernel applies in a static inline helper has no symbol of its own, but its inlined copy is
a block of its caller."""
from __future__ import annotations

import gdb

from gdb_kprobe.target import cache

__all__ = ["inlined_into"]


@cache.cache_until(*cache.OBJFILE)
def inlined_into(caller: str, callee: str) -> bool | None:
    """Is `callee` inlined into `caller`? None when `caller` has no DWARF here."""
    symbol = gdb.lookup_global_symbol(caller) or gdb.lookup_static_symbol(caller)
    if symbol is None or symbol.type is None:
        return None
    try:
        block = gdb.block_for_pc(int(symbol.value().address))
    except (gdb.error, RuntimeError):
        return None
    while block is not None and block.function is None:
        block = block.superblock
    if block is None:
        return None
    start, end = block.start, block.end
    pc = start
    while pc < end:
        inner = gdb.block_for_pc(pc)
        while inner is not None and inner.start >= start:
            if inner.function is not None and inner.function.name == callee:
                return True
            inner = inner.superblock
        pc += 1
    return False
