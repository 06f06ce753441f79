"""Core files: what gdb would read wrongly, refused or read through the page tables.

gdb reads an address that a core file does not hold from the vmlinux file instead, without
a word: kprobe_table (.bss) reads as zeros, every list as empty. So reads outside the
core's segments are refused, and a QEMU dump without virtual addresses (dump-guest-memory
without -p: every address outside) is read through the guest's page tables
(target/pagetables.py). A live target is not this module's business: `read()` says None.
"""
from __future__ import annotations

import re

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import cache, elfcore, pagetables, symbols

__all__ = ["read", "check", "reads_through_page_tables"]

_core_key: tuple | None = None          # (gdb connection number, symbol file) of the state
_core: pagetables.KernelMemory | elfcore.ElfCore | None = None
_core_problem: str | None = None        # why the dump cannot be read, for every read


def _forget_core() -> None:
    global _core_key, _core, _core_problem
    if isinstance(_core, pagetables.KernelMemory):
        _core.core.close()
    elif _core is not None:
        _core.close()
    _core_key = _core = _core_problem = None


cache.register(_forget_core, "clear_objfiles", "exited", "corefile_changed")


def read(address: int, size: int) -> bytes | None:
    """`size` bytes at `address` from a dump that gdb cannot be trusted to read; None when
    gdb reads it right (a live target, a dump with virtual addresses that holds the range).
    KpError when the dump does not hold it."""
    core = _open_core()
    if isinstance(core, pagetables.KernelMemory):
        try:
            return core.read(address, size)
        except elfcore.UnmappedAddress as exc:
            where = "" if exc.address == address else f" ({exc.address:#x})"
            raise KpError(f"cannot read {size} bytes at {address:#x} in the dump{where}: "
                          f"{exc.reason}") from None
        except OSError as exc:
            raise KpError(f"cannot read the dump {core.core.name}: {exc}") from None
    if core is not None and not core.covers_virtual(address, size):
        raise KpError(f"cannot read {size} bytes at {address:#x}: not in the dump")
    return None


def check() -> None:
    """A dump without virtual addresses: readable, or KpError saying why."""
    _open_core()


def reads_through_page_tables() -> bool:
    """Are kernel reads translated from a dump without virtual addresses? (gdb's own reads,
    e.g. its disassembler's, would see the vmlinux file there.)"""
    return isinstance(_open_core(), pagetables.KernelMemory)


def _open_core() -> pagetables.KernelMemory | elfcore.ElfCore | None:
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


def _load_core() -> pagetables.KernelMemory | elfcore.ElfCore | None:
    path = _core_file_name()
    if path is None:
        return None
    anchors = _banner_anchors()
    try:
        core = elfcore.ElfCore.open(path)
    except (OSError, elfcore.CoreDumpError):
        return None                     # not ELF64: gdb alone knows how to read it
    if not core.physical_only:
        core.close()                    # its segment table is all that is needed
        if not any(core.covers_virtual(address, len(text)) for address, text in anchors):
            raise KpError(f"cannot read the kernel in {path}: the dump does not hold "
                          f"linux_banner (a dump of part of memory, or not of this kernel?); "
                          f"{elfcore.DUMP_ADVICE}")
        return core
    try:
        return pagetables.open_kernel_memory(core, anchors)
    except elfcore.CoreDumpError as exc:
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
    if arch.KASLR_RANGE // arch.KASLR_ALIGN > 4096:
        # arm64's range has 2**26 granules: too many to list; only the file's address
        return [(banner, b"Linux version")]
    slides = [0] + [slide for slide in range(-arch.KASLR_RANGE, arch.KASLR_RANGE,
                                             arch.KASLR_ALIGN) if slide]
    return [(arch.u64(banner + slide), b"Linux version") for slide in slides]
