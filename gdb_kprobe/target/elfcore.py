"""ELF64 core files (QEMU's dump-guest-memory): segments, notes, QEMU's per-CPU state.

QEMU's `dump-guest-memory PATH` without `-p` (QMP `"paging": false`, also what
`virsh dump --memory-only` makes) writes PT_LOAD segments for guest-physical ranges
whose p_vaddr is just the physical address, so gdb finds no kernel virtual address in
them: it falls back to the vmlinux file and shows the kernel as it was on disk (every
list empty), without a word. This module does what drgn does for such dumps: it takes
each CPU's CR3 and CR4 from QEMU's per-CPU "QEMU" notes (struct QEMUCPUState,
target/i386/arch_dump.c) and translates x86-64 virtual addresses through the guest's
own page tables (4- or 5-level, 2 MiB and 1 GiB pages), which are in the dump.

Pure standard library (no gdb): `ElfCore` parses the program headers and notes (and
tells whether a dump with virtual addresses holds a range); target/pagetables.py reads
virtual memory through the guest's page tables.
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import struct
from typing import BinaryIO, Iterable

__all__ = [
    "DUMP_ADVICE", "CoreDumpError", "UnmappedAddress", "LoadSegment", "Note", "CpuState",
    "ElfCore", "is_physical_only_dump", "parse_notes", "PAGE_SIZE",
]

DUMP_ADVICE = ("make the dump with QEMU's monitor command `dump-guest-memory -p PATH` (QMP "
               "\"paging\": true), which writes virtual addresses")

# ELF constants (elf.h)
_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ET_CORE = 4
_EM_X86_64 = 62
_PT_LOAD = 1
_PT_NOTE = 4

# struct QEMUCPUState (QEMUCPUSTATE_VERSION 1): version, size, 18 general registers,
# 10 segments of 24 bytes, then cr[5]; newer QEMUs append kernel_gs_base.
QEMU_NOTE_NAME = b"QEMU"
QEMU_CPU_STATE_VERSION = 1
_QEMU_CR_OFFSET = 8 + 18 * 8 + 10 * 24          # 392
_QEMU_CPU_STATE_MIN_SIZE = _QEMU_CR_OFFSET + 5 * 8

# x86-64 paging (Intel SDM vol. 3, 4.5)
_CR0_PG = 1 << 31
_CR4_PAE = 1 << 5
_CR4_LA57 = 1 << 12
PAGE_SIZE = 4096


class CoreDumpError(Exception):
    """The dump cannot be read as kernel virtual memory; the message is one line."""


class UnmappedAddress(CoreDumpError):
    """A virtual address the dump's page tables do not map (or whose page is not in the dump)."""

    def __init__(self, address: int, reason: str) -> None:
        super().__init__(f"{address:#x}: {reason}")
        self.address = address
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD program header."""

    paddr: int
    vaddr: int
    offset: int           # in the file
    filesz: int
    memsz: int


@dataclasses.dataclass(frozen=True)
class Note:
    name: bytes           # without the NUL
    type: int
    desc: bytes


@dataclasses.dataclass(frozen=True)
class CpuState:
    """The control registers of one CPU, from its QEMU note."""

    index: int
    cr0: int
    cr3: int
    cr4: int

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & _CR0_PG) and bool(self.cr4 & _CR4_PAE)

    @property
    def levels(self) -> int:
        """4, or 5 with CR4.LA57."""
        return 5 if self.cr4 & _CR4_LA57 else 4


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` (fewer at the end of the file), without moving the file
    position: pread where there is a descriptor, seek and read otherwise (e.g. BytesIO)."""
    try:
        descriptor = handle.fileno()
    except (AttributeError, OSError, ValueError):
        handle.seek(offset)
        return handle.read(size)
    return os.pread(descriptor, size, offset)


class ElfCore:
    """An ELF64 little-endian core: its PT_LOAD segments by physical address, and its notes.

    The file stays open (reads use pread) until `close()`.
    """

    def __init__(self, handle: BinaryIO, name: str = "<core>") -> None:
        self.name = name
        self._handle = handle
        header = _read_at(handle, 0, 64)
        if len(header) < 64 or header[:4] != _ELF_MAGIC:
            raise CoreDumpError(f"{name} is not an ELF file")
        if header[4] != _ELFCLASS64 or header[5] != _ELFDATA2LSB:
            raise CoreDumpError(f"{name} is not a 64-bit little-endian ELF file")
        (self.type, self.machine) = struct.unpack_from("<HH", header, 16)
        phoff = struct.unpack_from("<Q", header, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        if phnum == 0xFFFF:
            raise CoreDumpError(f"{name}: more than 65534 program headers (PN_XNUM) are "
                                "not supported")
        if phentsize < 56:
            raise CoreDumpError(f"{name}: program headers of {phentsize} bytes")
        table = _read_at(handle, phoff, phentsize * phnum)
        if len(table) < phentsize * phnum:
            raise CoreDumpError(f"{name} is truncated (program headers cut short)")
        self.segments: list[LoadSegment] = []
        self.notes: list[Note] = []
        for index in range(phnum):
            (p_type, _flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz,
             _align) = struct.unpack_from("<IIQQQQQQ", table, index * phentsize)
            if p_type == _PT_LOAD:
                self.segments.append(LoadSegment(p_paddr, p_vaddr, p_offset, p_filesz, p_memsz))
            elif p_type == _PT_NOTE:
                self.notes.extend(parse_notes(_read_at(handle, p_offset, p_filesz)))
        self._by_paddr = sorted((s for s in self.segments if s.memsz), key=lambda s: s.paddr)
        self._starts = [segment.paddr for segment in self._by_paddr]
        self._by_vaddr = sorted((s for s in self.segments if s.memsz), key=lambda s: s.vaddr)
        self._vstarts = [segment.vaddr for segment in self._by_vaddr]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ElfCore":
        handle = open(path, "rb")
        try:
            return cls(handle, os.fspath(path))
        except BaseException:
            handle.close()
            raise

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ElfCore":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def is_core(self) -> bool:
        return self.type == _ET_CORE

    @property
    def is_x86_64(self) -> bool:
        return self.machine == _EM_X86_64

    @property
    def physical_only(self) -> bool:
        """A core whose memory segments carry no virtual address: QEMU without paging sets
        each p_vaddr to the block's physical address (some writers leave it 0)."""
        return self.is_core and bool(self.segments) and \
            all(segment.vaddr in (0, segment.paddr) for segment in self.segments)

    def cpu_states(self) -> list[CpuState]:
        """Each CPU's control registers from QEMU's notes, in CPU order."""
        states = []
        for note in self.notes:
            if note.name != QEMU_NOTE_NAME or len(note.desc) < 8:
                continue
            version, size = struct.unpack_from("<II", note.desc, 0)
            if version != QEMU_CPU_STATE_VERSION or size < _QEMU_CPU_STATE_MIN_SIZE \
                    or len(note.desc) < _QEMU_CPU_STATE_MIN_SIZE:
                continue
            cr0, _cr1, _cr2, cr3, cr4 = struct.unpack_from("<5Q", note.desc, _QEMU_CR_OFFSET)
            states.append(CpuState(len(states), cr0, cr3, cr4))
        return states

    def covers_virtual(self, address: int, size: int) -> bool:
        """Do the segments' virtual ranges hold all of [address, address + size)? Where they
        do not, gdb reads the executable file instead, silently."""
        while size > 0:
            at = bisect.bisect_right(self._vstarts, address) - 1
            if at < 0:
                return False
            segment = self._by_vaddr[at]
            end = segment.vaddr + segment.memsz       # beyond p_filesz gdb reads zeros
            if address >= end:
                return False
            step = min(size, end - address)
            address += step
            size -= step
        return True

    def read_physical(self, address: int, size: int) -> bytes:
        """`size` guest-physical bytes; UnmappedAddress where the dump has none."""
        out = bytearray()
        while size > 0:
            at = bisect.bisect_right(self._starts, address) - 1
            segment = self._by_paddr[at] if at >= 0 else None
            if segment is None or address >= segment.paddr + segment.memsz:
                raise UnmappedAddress(address, "physical address not in the dump")
            inside = address - segment.paddr
            count = min(size, segment.memsz - inside)
            stored = max(0, min(count, segment.filesz - inside))   # beyond p_filesz: zeros
            if stored:
                data = _read_at(self._handle, segment.offset + inside, stored)
                if len(data) < stored:
                    raise UnmappedAddress(address, "the dump file is truncated here")
                out += data
            out += bytes(count - stored)
            address += count
            size -= count
        return bytes(out)


def parse_notes(data: bytes) -> Iterable[Note]:
    """ELF notes: 4-byte namesz, descsz, type; name and desc each padded to 4 bytes."""
    position = 0
    while position + 12 <= len(data):
        namesz, descsz, note_type = struct.unpack_from("<III", data, position)
        name_at = position + 12
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if end > len(data):
            return                      # a damaged note table: keep what was whole
        yield Note(data[name_at: name_at + namesz].rstrip(b"\0"), note_type,
                   data[desc_at: desc_at + descsz])
        position = end


def _align4(value: int) -> int:
    return (value + 3) & ~3


def is_physical_only_dump(path: str | os.PathLike) -> bool:
    """Is this an ELF64 core whose memory has physical addresses only (QEMU's
    dump-guest-memory without -p)? False for anything else, unreadable files included."""
    try:
        with ElfCore.open(path) as core:
            return core.physical_only
    except (OSError, CoreDumpError):
        return False
