"""ftrace's function hashes: `struct ftrace_hash` (kernel/trace/trace.h), `size_bits` and an
array of hlist heads of `struct ftrace_func_entry` {ip, direct} (include/linux/ftrace.h), as
__ftrace_lookup_ip() searches them, and hash_contains_ip()'s rule for an ops' filter and
notrace hashes. Each hash is read once per stop; `direct_functions` is the hash of every
direct call (ip -> trampoline) that ftrace_find_rec_direct() reads.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Callable

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache, layouts, memory, symbols

__all__ = ["HashLayout", "read_hash_ips", "hash_contains", "hash_layout", "hash_ips",
           "direct_functions"]

MAX_HASH_BITS = 20          # FTRACE_HASH_MAX_BITS is 12; anything far past it is damage


@dataclasses.dataclass(frozen=True)
class HashLayout:
    """Offsets in `struct ftrace_hash` and `struct ftrace_func_entry` (kernel/trace/trace.h,
    include/linux/ftrace.h), from DWARF."""

    size: int                  # sizeof(struct ftrace_hash)
    size_bits: int
    buckets: int
    count: int
    entry_size: int            # sizeof(struct ftrace_func_entry)
    entry_next: int            # hlist.next
    entry_ip: int
    entry_direct: int | None   # ftrace_func_entry.direct: "ftrace: Add
                               # register_ftrace_direct()" (v5.5)


def read_hash_ips(address: int, layout: HashLayout, read: Callable[[int, int], bytes],
                  with_direct: bool = False) -> dict[int, int]:
    """The ips of the `struct ftrace_hash` at `address` (a NULL hash: none), each with its
    entry's `direct` (0 unless asked for), as __ftrace_lookup_ip() would find them. A damaged
    hash raises KpError saying where."""
    if not address:
        return {}
    head = read(address, layout.size)
    bits = struct.unpack_from("<Q", head, layout.size_bits)[0]
    buckets = struct.unpack_from("<Q", head, layout.buckets)[0]
    count = struct.unpack_from("<Q", head, layout.count)[0]
    if bits > MAX_HASH_BITS:
        raise KpError(f"ftrace hash at {address:#x}: size_bits {bits} is not a hash's")
    if not count or not buckets:
        return {}                               # ftrace_hash_empty()
    heads = read(buckets, 8 << bits)
    found: dict[int, int] = {}
    for index in range(1 << bits):
        node = struct.unpack_from("<Q", heads, index * 8)[0]
        steps = 0
        while node:
            if not arch.is_canonical(node) or steps > count:
                raise KpError(f"ftrace hash at {address:#x}: bucket {index} is damaged "
                              f"at {node:#x}")
            entry = read(node, layout.entry_size)
            ip = struct.unpack_from("<Q", entry, layout.entry_ip)[0]
            direct = struct.unpack_from("<Q", entry, layout.entry_direct)[0] \
                if with_direct and layout.entry_direct is not None else 0
            found[ip] = direct
            node = struct.unpack_from("<Q", entry, layout.entry_next)[0]
            steps += 1
    return found


def hash_contains(filter_ips: frozenset[int] | set[int], notrace_ips: frozenset[int] | set[int],
                  ip: int) -> bool:
    """hash_contains_ip(): an empty filter hash takes every ip, an empty notrace hash none."""
    return (not filter_ips or ip in filter_ips) and ip not in notrace_ips


# ---------------------------------------------------------- classification (pure, testable)

@cache.cache_until(*cache.OBJFILE)
def hash_layout() -> HashLayout:
    hash_layout = layouts.layout("struct ftrace_hash")
    entry = layouts.layout("struct ftrace_func_entry")
    return HashLayout(size=hash_layout.size, size_bits=hash_layout.offset("size_bits"),
                      buckets=hash_layout.offset("buckets"), count=hash_layout.offset("count"),
                      entry_size=entry.size, entry_next=entry.offset("hlist.next"),
                      entry_ip=entry.offset("ip"),
                      entry_direct=entry.offset("direct") if entry.has_field("direct") else None)


@cache.cache_until(*cache.MEMORY)
def hash_ips(address: int) -> frozenset[int]:
    """The ips of one ftrace_hash, read once per stop (ops share hashes: global_ops'
    local_hash serves every ops whose func_hash points at it)."""
    return frozenset(read_hash_ips(address, hash_layout(), memory.read))


@cache.cache_until(*cache.MEMORY)
def direct_functions() -> dict[int, int]:
    """ip → direct trampoline of every direct call, from the `direct_functions` hash that
    ftrace_find_rec_direct() reads, on 6.1 and 6.12 alike (6.12's per-ops
    ops->direct_call holds the same address)."""
    table = symbols.kernel()
    where = table.address_of("direct_functions")
    if where is None:
        return {}
    try:
        return read_hash_ips(memory.read_u64(where), hash_layout(), memory.read,
                             with_direct=True)
    except KpError:
        return {}

