"""Target access: guarded memory reads with a per-stop cache.

Every read of kernel memory goes through `read()`. Reads are cached until the
target resumes (or memory is written, or objfiles change), so a command that
walks a table and then decodes the same objects again costs no extra packets
over a slow gdbstub link. `stats` counts the reads that reached gdb.
"""
from __future__ import annotations

import re
import struct

import gdb

from gdb_kprobe import coredump, symbols
from gdb_kprobe.errors import KpError

_cache: dict[tuple[int, int], bytes] = {}
_bad_blocks: set[int] = set()      # blocks that failed to read at this stop (MMIO, holes)
stats = {"reads": 0, "bytes": 0}


def _invalidate(*_args) -> None:
    _cache.clear()
    _bad_blocks.clear()


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
    dump = _open_core()
    if isinstance(dump, coredump.KernelMemory):
        try:
            data = dump.read(address, size)
        except coredump.UnmappedAddress as exc:
            where = "" if exc.address == address else f" ({exc.address:#x})"
            raise KpError(f"cannot read {size} bytes at {address:#x} in the dump{where}: "
                          f"{exc.reason}") from None
        except OSError as exc:
            raise KpError(f"cannot read the dump {dump.core.name}: {exc}") from None
    else:
        if dump is not None and not dump.covers_virtual(address, size):
            raise KpError(f"cannot read {size} bytes at {address:#x}: not in the dump")
        try:
            data = bytes(gdb.selected_inferior().read_memory(address, size))
        except gdb.MemoryError as exc:
            raise KpError(f"cannot read {size} bytes at {address:#x}: {exc}") from None
        except gdb.error as exc:
            raise KpError(f"cannot read target memory at {address:#x}: {exc}") from None
    stats["reads"] += 1
    stats["bytes"] += size
    return data


# -- core files ---------------------------------------------------------------------------
# gdb reads an address that a core file does not hold from the vmlinux file instead, without
# a word: kprobe_table (.bss) reads as zeros, every list as empty. So reads outside the
# core's segments are refused, and a QEMU dump without virtual addresses (dump-guest-memory
# without -p: every address outside) is read through the guest's page tables (coredump.py).

_core_key: tuple | None = None          # (gdb connection number, symbol file) of the state
_core: coredump.KernelMemory | coredump.ElfCore | None = None
_core_problem: str | None = None        # why the dump cannot be read, for every read


def _forget_core(*_args) -> None:
    global _core_key, _core, _core_problem
    if isinstance(_core, coredump.KernelMemory):
        _core.core.close()
    elif _core is not None:
        _core.close()
    _core_key = _core = _core_problem = None


for _event in ("clear_objfiles", "exited", "corefile_changed"):      # the last: gdb 17+
    _registry = getattr(gdb.events, _event, None)
    if _registry is not None:
        _registry.connect(_forget_core)


def _open_core() -> coredump.KernelMemory | coredump.ElfCore | None:
    """For a core file: the page-table reader of a dump without virtual addresses, or the
    ELF core whose segments bound gdb's reads. None for a live target or a core that is not
    ELF64. KpError when a dump without virtual addresses cannot be read."""
    global _core_key, _core, _core_problem
    connection = getattr(gdb.selected_inferior(), "connection", None)    # gdb 12+
    if connection is None or getattr(connection, "type", None) != "core":
        return None
    # a new core-file is a new connection; a new symbol file changes the anchor
    key = (connection.num, gdb.current_progspace().filename)
    if key != _core_key:
        _forget_core()
        _core_key = key
        try:
            _core = _load_core()
        except KpError as exc:
            _core_problem = str(exc)
    if _core_problem is not None:
        raise KpError(_core_problem)
    return _core


def reads_through_page_tables() -> bool:
    """Are kernel reads translated from a dump without virtual addresses? (gdb's own reads,
    e.g. its disassembler's, would see the vmlinux file there.)"""
    return isinstance(_open_core(), coredump.KernelMemory)


def _load_core() -> coredump.KernelMemory | coredump.ElfCore | None:
    path = _core_file_name()
    if path is None:
        return None
    anchors = _banner_anchors()
    try:
        core = coredump.ElfCore.open(path)
    except (OSError, coredump.CoreDumpError):
        return None                     # not ELF64: gdb alone knows how to read it
    if not core.physical_only:
        core.close()                    # its segment table is all that is needed
        if not any(core.covers_virtual(address, len(text)) for address, text in anchors):
            raise KpError(f"cannot read the kernel in {path}: the dump does not hold "
                          f"linux_banner (a dump of part of memory, or not of this kernel?); "
                          f"{coredump.DUMP_ADVICE}")
        return core
    try:
        return coredump.open_kernel_memory(core, anchors)
    except coredump.CoreDumpError as exc:
        core.close()
        raise KpError(f"cannot read the kernel in {path}: {exc}") from None
    except BaseException:
        core.close()
        raise


def _core_file_name() -> str | None:
    corefile = getattr(gdb.selected_inferior(), "corefile", None)       # gdb 17+
    if corefile is not None:
        return corefile.filename
    text = gdb.execute("info target", to_string=True)
    found = re.search(r"Local core dump file:\s*`(.+)', file type", text)
    return found.group(1) if found else None


def _banner_anchors() -> list[tuple[int, bytes]]:
    """Where linux_banner may be (the symbol file's address, then every KASLR slide), to
    tell the kernel's page tables from a PTI user PGD that does not map it."""
    banner = symbols.kernel().address_of("linux_banner")
    if banner is None:
        raise KpError("the symbol file has no linux_banner: is it a vmlinux?")
    from gdb_kprobe import kaslr     # imports this module
    slides = [0] + [slide for slide in range(-kaslr.KASLR_RANGE, kaslr.KASLR_RANGE,
                                             kaslr.KASLR_ALIGN) if slide]
    return [((banner + slide) & ((1 << 64) - 1), b"Linux version") for slide in slides]


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
    _open_core()        # a dump without virtual addresses: readable, or one line saying why


def _non_stop() -> bool:
    try:
        return bool(gdb.parameter("non-stop"))
    except (gdb.error, RuntimeError, AttributeError):
        return False
