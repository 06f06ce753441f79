"""Target access: guarded memory reads with a per-stop cache.

Every read of kernel memory goes through `read()`. Reads are cached until the
target resumes (or memory is written, or objfiles change), so a command that
walks a table and then decodes the same objects again costs no extra packets
over a slow gdbstub link. `stats` counts the reads that reached gdb.
"""
from __future__ import annotations

import struct

import gdb

from gdb_kprobe.errors import KpError

_cache: dict[tuple[int, int], bytes] = {}
stats = {"reads": 0, "bytes": 0}


def _invalidate(*_args) -> None:
    _cache.clear()


for _event in ("cont", "stop", "memory_changed", "exited", "new_objfile", "clear_objfiles",
               "inferior_call"):
    _registry = getattr(gdb.events, _event, None)
    if _registry is not None:
        _registry.connect(_invalidate)


def is_canonical(address: int) -> bool:
    """x86_64 canonical with 5-level paging (bits 63..56 equal); 4-level is a subset.

    A pointer that is only 57-bit canonical on a 4-level kernel still fails to read.
    """
    top = address >> 56
    return top == 0 or top == 0xFF


BLOCK = 2048      # what QEMU's gdbstub serves in one `m` packet; never crosses a page


def read(address: int, size: int) -> bytes:
    """Read `size` bytes of target memory; KpError with the address when unreadable.

    Small reads are served from aligned 2 KiB blocks (one packet each, cached until the
    target runs): kernel objects of one kind tend to sit together, so a walk over a
    thousand probes costs a few hundred packets, not a thousand.
    """
    key = (address, size)
    data = _cache.get(key)
    if data is not None:
        return data
    if not is_canonical(address):
        raise KpError(f"non-canonical address {address:#x}")
    block = address & ~(BLOCK - 1)
    if address + size <= block + BLOCK:
        chunk = _cache.get((block, BLOCK))
        if chunk is None:
            try:
                chunk = _read_exact(block, BLOCK)
            except KpError:
                chunk = None       # e.g. MMIO or a hole: fall back to the exact bytes
            if chunk is not None:
                _cache[(block, BLOCK)] = chunk
        if chunk is not None:
            offset = address - block
            return chunk[offset: offset + size]
    data = _read_exact(address, size)
    _cache[key] = data
    return data


def _read_exact(address: int, size: int) -> bytes:
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
    """A NUL-terminated string (read in one go, up to `limit` bytes)."""
    data = read(address, limit)
    end = data.find(b"\0")
    return data[: end if end >= 0 else limit].decode("utf-8", "replace")


# -- guards -----------------------------------------------------------------------------

def require_symbols() -> None:
    if gdb.current_progspace().filename is None:
        raise KpError("no kernel symbol file loaded; load the DWARF vmlinux first: "
                      "file /path/to/vmlinux")


def require_stopped_target() -> None:
    """Attached (live or core) and not running: in all-stop mode the selected thread tells;
    in non-stop mode every CPU must be stopped (kernel lists change under a running one)."""
    non_stop = _non_stop()
    running = KpError("a CPU of the target is running (non-stop mode); stop them all first: "
                      "interrupt -a" if non_stop else
                      "the target is running; interrupt it first (Ctrl-C or `interrupt`)")
    inferior = gdb.selected_inferior()
    thread = gdb.selected_thread()      # local state: asks the remote nothing
    if inferior.pid == 0 or thread is None:
        if non_stop:
            raise KpError("not attached to a kernel, and non-stop mode is on: QEMU's gdbstub and "
                          "kgdb support only all-stop; set non-stop off, then target remote ...")
        raise KpError("not attached to a kernel; connect to it first: "
                      "target remote 127.0.0.1:PORT (QEMU's gdbstub)")
    if thread.is_running():
        raise running
    try:
        threads = inferior.threads()    # refreshes from the remote: refused while running
    except gdb.error as exc:
        if "running" in str(exc):
            raise running from None
        raise KpError(f"cannot talk to the target: {exc}") from None
    if any(t.is_running() for t in threads):
        raise running


def _non_stop() -> bool:
    try:
        return bool(gdb.parameter("non-stop"))
    except (gdb.error, RuntimeError, AttributeError):
        return False
