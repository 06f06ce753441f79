"""Target memory: every read of kernel memory goes through `read()`.

Reads are cached until the target resumes (or memory is written, or objfiles change:
cache.MEMORY), so a command that walks a table and then decodes the same objects again
costs no extra packets over a slow gdbstub link. How big the reads to gdb are is
`set kp-read-block auto|N` (target/read_model.py): aligned blocks that serve the
neighbours of an object from one packet on a fast link, the exact bytes on a link that
pays per byte (kgdb over a serial line). `stats` counts the reads that reached gdb.
A core file is read through target/dump.py (which knows what a dump holds).
"""
from __future__ import annotations

import struct
import time

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache, dump, read_model

__all__ = ["BLOCK", "stats", "read", "read_parts", "prefetch", "read_u64", "read_cstring",
           "read_slot", "set_read_block", "describe_reads"]

_cache: dict[tuple[int, int], bytes] = {}
_bad_blocks: set[tuple[int, int]] = set()   # blocks that failed at this stop (MMIO, holes)
_block_sizes: set[int] = set()              # block sizes cached at this stop
_strings: dict[tuple[int, int], str] = {}   # read_cstring() at this stop: a trace event
#                                             group's name is asked for once per event
stats = {"reads": 0, "bytes": 0}
_policy = read_model.policy
cache.register(_cache.clear, *cache.MEMORY)
cache.register(_bad_blocks.clear, *cache.MEMORY)
cache.register(_block_sizes.clear, *cache.MEMORY)
cache.register(_strings.clear, *cache.MEMORY)
cache.register(_policy.new_stop, *cache.MEMORY)

BLOCK = read_model.MAX_BLOCK     # the largest block; never crosses a page
PAGE = 4096


def set_read_block(setting: str) -> None:
    """`set kp-read-block`: "auto", or a block size (0 or 1: exact reads); ValueError when
    it is neither."""
    _policy.forced = read_model.parse_setting(setting)


def describe_reads() -> str:
    """The fitted link and the block size in use (for `show kp-read-block`)."""
    return _policy.describe()


def read(address: int, size: int) -> bytes:
    """Read `size` bytes of target memory; KpError with the address when unreadable.

    Served from a cached block when one holds the bytes; else read as the policy says:
    the aligned block around them (one packet, cached until the target runs: kernel
    objects of one kind tend to sit together, so on a fast link a walk over a thousand
    probes costs a few hundred packets, not a thousand), or exactly. A read straddling
    two blocks takes the missing one when its neighbour is already cached (one packet
    either way, and the block serves later reads); otherwise it is read exactly.
    """
    _policy.need(address, size)
    data = _cached(address, size)
    return data if data is not None else _fetch(address, size)


def read_parts(address: int, size: int, parts: read_model.Parts
               ) -> tuple[bytes, read_model.Parts | None]:
    """The `size` bytes of an object at `address` of which a walk uses only `parts`
    ((offset, size) inside it), and which of its bytes were read (None: all of them).

    On a link that pays per byte (`kp-read-block` chose exact reads) only the parts are
    read, neighbours together when the bytes between clearly cost less than a round trip
    (read_model.cover); the bytes not read are zeros, and `layouts.View` refuses them.
    Otherwise the whole object, from the blocks, as `read()` would.
    """
    _policy.need(address, size, parts)
    whole = _cached(address, size)
    if whole is not None:
        return whole, None
    pieces = _policy.parts(size, parts)
    if pieces is None or pieces == ((0, size),):
        return _fetch(address, size), None
    data = bytearray(size)
    for offset, length in pieces:
        piece = _cached(address + offset, length)
        data[offset: offset + length] = piece if piece is not None else \
            _fetch(address + offset, length)
    return bytes(data), pieces


def prefetch(addresses: list[int], size: int) -> None:
    """Read now, back to back, the blocks that will hold the `size`-byte objects at
    `addresses` (a walk's next round): gdb's reads cost less in a row than with Python
    between them. Nothing when the policy reads exactly (a link that pays per byte), for
    an object across two blocks, or a block that cannot be read (the object's own read
    then says why)."""
    block = _policy.block(size)
    if not block or size > block:
        return
    for address in addresses:
        first = address & ~(block - 1)
        if address + size <= first + block and (first, block) not in _cache \
                and arch.is_canonical(address):
            _block(first, block)


def _cached(address: int, size: int) -> bytes | None:
    """The bytes when a read at this stop holds them already (the same read, or a block)."""
    data = _cache.get((address, size))
    if data is not None:
        return data
    for cached in _block_sizes:
        first = address & ~(cached - 1)
        if address + size <= first + cached:
            chunk = _cache.get((first, cached))
            if chunk is not None:
                return chunk[address - first: address - first + size]
    return None


def _fetch(address: int, size: int) -> bytes:
    """Read what no cached read holds, in a block or exactly as the policy says."""
    if not arch.is_canonical(address):
        raise KpError(f"non-canonical address {address:#x}")
    block = _policy.block(size)
    if block and size <= block:
        first = address & ~(block - 1)
        offset = address - first
        if offset + size <= block:
            chunk = _block(first, block)
            if chunk is not None:
                return chunk[offset: offset + size]
        else:
            second = first + block
            if (first, block) in _cache or (second, block) in _cache:
                head, tail = _block(first, block), _block(second, block)
                if head is not None and tail is not None:
                    return (head + tail)[offset: offset + size]
    data = _read_exact(address, size)
    _cache[(address, size)] = data
    return data


def _block(address: int, block: int) -> bytes | None:
    """The aligned block at `address` (cached), or None when it cannot be read whole."""
    chunk = _cache.get((address, block))
    if chunk is not None or (address, block) in _bad_blocks:
        return chunk
    try:
        chunk = _read_exact(address, block)
    except KpError:
        _bad_blocks.add((address, block))   # fall back to exact reads, without a retry
        return None
    _cache[(address, block)] = chunk
    _block_sizes.add(block)
    return chunk


def _read_exact(address: int, size: int) -> bytes:
    data = dump.read(address, size)      # None: not a dump gdb cannot read by itself
    if data is None:
        started = time.perf_counter()
        try:
            data = bytes(gdb.selected_inferior().read_memory(address, size))
        except gdb.MemoryError as exc:
            raise KpError(f"cannot read {size} bytes at {address:#x}: {exc}") from None
        except gdb.error as exc:
            raise KpError(f"cannot read target memory at {address:#x}: {exc}") from None
        # what the link charged for this read: the auto block size is fitted to it
        _policy.observe(size, time.perf_counter() - started)
    stats["reads"] += 1
    stats["bytes"] += size
    return data


def read_u64(address: int) -> int:
    return struct.unpack("<Q", read(address, 8))[0]


def read_cstring(address: int, limit: int = 256) -> str:
    """A NUL-terminated string of at most `limit` bytes.

    With blocks, read block by block, stopping at the block holding the NUL: a short
    string near the end of a block costs no packet for the next block (and is served
    from the cache when its block was read already). With exact reads, `limit` bytes at
    most, never past the page (the next one may be unmapped).
    """
    text = _strings.get((address, limit))
    if text is None:
        text = _strings[(address, limit)] = _read_cstring(address, limit)
    return text


def _read_cstring(address: int, limit: int) -> str:
    data = b""
    position = address
    while len(data) < limit:
        if not arch.is_canonical(position):
            raise KpError(f"non-canonical address {position:#x}")
        block = _policy.block(limit - len(data))
        if not block:
            want = min(limit - len(data), PAGE - position % PAGE)
            piece = read(position, want)
        else:
            first = position & ~(block - 1)
            chunk = _cache.get((first, block)) or _block(first, block)
            if chunk is None:
                data += read(position, limit - len(data))   # exact bytes, or the read's error
                break
            piece = chunk[position - first: position - first + limit - len(data)]
        data += piece
        if b"\0" in piece:
            break
        position += len(piece)
    end = data.find(b"\0")
    if block:       # what was needed (exact reads went through read(), which noted them)
        _policy.need(address, end + 1 if end >= 0 else len(data))
    return data[: end if end >= 0 else limit].decode("utf-8", "replace")


def read_slot(address: int) -> str:
    """A stack slot as 0x%016x, or <unreadable>."""
    try:
        return f"{read_u64(address):#018x}"
    except KpError:
        return "<unreadable>"
