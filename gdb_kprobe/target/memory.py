"""Target memory: every read of kernel memory goes through `read()`.

Reads are cached until the target resumes (or memory is written, or objfiles change:
cache.MEMORY), so a command that walks a table and then decodes the same objects again
costs no extra packets over a slow gdbstub link. `stats` counts the reads that reached gdb.
A core file is read through target/dump.py (which knows what a dump holds).
"""
from __future__ import annotations

import struct

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache, dump

__all__ = ["BLOCK", "stats", "read", "read_u64", "read_cstring", "read_slot"]

_cache: dict[tuple[int, int], bytes] = {}
_bad_blocks: set[int] = set()      # blocks that failed to read at this stop (MMIO, holes)
stats = {"reads": 0, "bytes": 0}
cache.register(_cache.clear, *cache.MEMORY)
cache.register(_bad_blocks.clear, *cache.MEMORY)
is_canonical = arch.is_canonical


BLOCK = 2048      # what QEMU's gdbstub serves in one `m` packet; never crosses a page


def read(address: int, size: int) -> bytes:
    """Read `size` bytes of target memory; KpError with the address when unreadable.

    Small reads are served from aligned 2 KiB blocks (one packet each, cached until the
    target runs): kernel objects of one kind tend to sit together, so a walk over a
    thousand probes costs a few hundred packets, not a thousand. A read straddling two
    blocks takes the missing one when its neighbour is already cached (one packet either
    way, and the block serves later reads); otherwise it is read exactly.
    """
    key = (address, size)
    data = _cache.get(key)
    if data is not None:
        return data
    if not is_canonical(address):
        raise KpError(f"non-canonical address {address:#x}")
    first = address & ~(BLOCK - 1)
    offset = address - first
    if offset + size <= BLOCK:
        chunk = _block(first)
        if chunk is not None:
            return chunk[offset: offset + size]
    elif size <= BLOCK:
        second = first + BLOCK
        if (first, BLOCK) in _cache or (second, BLOCK) in _cache:
            head, tail = _block(first), _block(second)
            if head is not None and tail is not None:
                return (head + tail)[offset: offset + size]
    data = _read_exact(address, size)
    _cache[key] = data
    return data


def _block(address: int) -> bytes | None:
    """The aligned block at `address` (cached), or None when it cannot be read whole."""
    chunk = _cache.get((address, BLOCK))
    if chunk is not None or address in _bad_blocks:
        return chunk
    try:
        chunk = _read_exact(address, BLOCK)
    except KpError:
        _bad_blocks.add(address)      # fall back to exact reads, without retrying the block
        return None
    _cache[(address, BLOCK)] = chunk
    return chunk


def _read_exact(address: int, size: int) -> bytes:
    data = dump.read(address, size)      # None: not a dump gdb cannot read by itself
    if data is None:
        try:
            data = bytes(gdb.selected_inferior().read_memory(address, size))
        except gdb.MemoryError as exc:
            raise KpError(f"cannot read {size} bytes at {address:#x}: {exc}") from None
        except gdb.error as exc:
            raise KpError(f"cannot read target memory at {address:#x}: {exc}") from None
    stats["reads"] += 1
    stats["bytes"] += size
    return data


def read_u64(address: int) -> int:
    return struct.unpack("<Q", read(address, 8))[0]


def read_cstring(address: int, limit: int = 256) -> str:
    """A NUL-terminated string of at most `limit` bytes.

    Read block by block, stopping at the block holding the NUL: a short string near the
    end of a block costs no packet for the next block (and is served from the cache when
    its block was read already).
    """
    data = b""
    position = address
    while len(data) < limit:
        if not is_canonical(position):
            raise KpError(f"non-canonical address {position:#x}")
        first = position & ~(BLOCK - 1)
        chunk = _block(first)
        if chunk is None:
            data += read(position, limit - len(data))     # exact bytes, or the read's error
            break
        piece = chunk[position - first: position - first + limit - len(data)]
        data += piece
        if b"\0" in piece:
            break
        position += len(piece)
    end = data.find(b"\0")
    return data[: end if end >= 0 else limit].decode("utf-8", "replace")


def read_slot(address: int) -> str:
    """A stack slot as 0x%016x, or <unreadable>."""
    try:
        return f"{read_u64(address):#018x}"
    except KpError:
        return "<unreadable>"
