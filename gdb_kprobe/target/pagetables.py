"""Kernel virtual addresses through an x86-64 guest's page tables, in a dump that holds
guest-physical memory only (target/elfcore.py reads the file).

`KernelMemory` reads virtual memory through one page-table root (4- or 5-level, 2 MiB
and 1 GiB pages), and `open_kernel_memory()` picks a root that maps a known kernel
address: with page table isolation a CPU stopped in user mode has the user PGD in CR3.
Pure standard library, as drgn does for such dumps.
"""
from __future__ import annotations

from typing import Sequence

from gdb_kprobe.arch.x86_64 import ADDRESS_MASK
from gdb_kprobe.target.elfcore import (DUMP_ADVICE, PAGE_SIZE, CoreDumpError, CpuState,
                                       ElfCore, UnmappedAddress)

__all__ = ["KernelMemory", "candidate_roots", "open_kernel_memory"]

# x86-64 paging (Intel SDM vol. 3, 4.5)
_CR3_ROOT_MASK = 0x000F_FFFF_FFFF_F000          # the low 12 bits are the PCID (or flags)
_PTI_USER_PGD_BIT = 1 << 12                     # arch/x86/mm/pti.c: user PGD = kernel PGD + 4 KiB
_PRESENT = 1 << 0
_PAGE_SIZE_BIT = 1 << 7                         # PS: a 1 GiB or 2 MiB leaf
_ENTRY_ADDRESS_MASK = 0x000F_FFFF_FFFF_F000     # bits 51..12; 63..52 are NX and software bits


class KernelMemory:
    """Virtual memory of an x86-64 guest, read through one page-table root in the dump."""

    def __init__(self, core: ElfCore, root: int, levels: int = 4) -> None:
        if levels not in (4, 5):
            raise ValueError(f"{levels}-level paging")
        self.core = core
        self.root = root & _CR3_ROOT_MASK
        self.levels = levels
        self._pages: dict[int, int] = {}           # virtual page number -> physical page

    def translate(self, address: int) -> int:
        """The physical address of virtual `address`; UnmappedAddress when not mapped."""
        page = address >> 12
        physical = self._pages.get(page)
        if physical is None and not self._canonical(address):
            raise UnmappedAddress(address, f"not canonical with {self.levels}-level paging")
        if physical is None:
            physical = self._walk(address & ~(PAGE_SIZE - 1))
            self._pages[page] = physical
        return physical | (address & (PAGE_SIZE - 1))

    def _canonical(self, address: int) -> bool:
        top = address >> (12 + 9 * self.levels - 1)      # bit 47 (or 56) and everything above
        return top == 0 or top == (1 << (64 - (12 + 9 * self.levels - 1))) - 1

    def _walk(self, address: int) -> int:
        table = self.root
        # PML5 (bits 56..48), PML4 (47..39), PDPT (38..30), PD (29..21), PT (20..12)
        for level in range(self.levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            index = (address >> shift) & 0x1FF
            try:
                raw = self.core.read_physical(table + 8 * index, 8)
            except UnmappedAddress:
                raise UnmappedAddress(address, f"its level-{level} page table at physical "
                                               f"{table:#x} is not in the dump") from None
            entry = int.from_bytes(raw, "little")
            if not entry & _PRESENT:
                raise UnmappedAddress(address, "not mapped in the kernel page tables")
            if level in (2, 3) and entry & _PAGE_SIZE_BIT:      # 2 MiB or 1 GiB page
                span = 1 << shift
                return (entry & _ENTRY_ADDRESS_MASK & ~(span - 1)) | (address & (span - 1))
            table = entry & _ENTRY_ADDRESS_MASK
        return table

    def read(self, address: int, size: int) -> bytes:
        """`size` bytes at virtual `address`, page by page; UnmappedAddress for a page the
        page tables do not map or the dump does not hold."""
        out = bytearray()
        while size > 0:
            count = min(size, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
            physical = self.translate(address)
            try:
                out += self.core.read_physical(physical, count)
            except UnmappedAddress:
                raise UnmappedAddress(address, f"mapped to physical {physical:#x}, which is "
                                               "not in the dump") from None
            address = (address + count) & ADDRESS_MASK
            size -= count
        return bytes(out)

    def matches(self, address: int, expected: bytes) -> bool:
        """Does virtual `address` hold `expected`? False when unmapped."""
        try:
            return self.read(address, len(expected)) == expected
        except CoreDumpError:
            return False


def candidate_roots(states: Sequence[CpuState]) -> list[tuple[int, int]]:
    """(page-table root, levels) to try, each CPU's CR3 first: with page table isolation a CPU
    stopped in user mode has the user PGD in CR3, and the kernel PGD is the 8 KiB-aligned
    page below it (bit 12 clear). The PCID in CR3's low 12 bits is dropped."""
    roots: list[tuple[int, int]] = []
    for state in states:
        if not state.paging:
            continue
        root = state.cr3 & _CR3_ROOT_MASK
        for candidate in (root, root & ~_PTI_USER_PGD_BIT):
            if (candidate, state.levels) not in roots:
                roots.append((candidate, state.levels))
    return roots


def open_kernel_memory(core: ElfCore, anchors: Sequence[tuple[int, bytes]],
                       anchor_name: str = "the symbol file's linux_banner") -> KernelMemory:
    """Kernel memory through the first candidate root under which one of `anchors`
    (virtual address, bytes expected there; e.g. linux_banner and b"Linux version") reads
    as expected. CoreDumpError, saying why (naming the anchor `anchor_name`), when no root
    does."""
    if not core.is_x86_64:
        raise CoreDumpError(f"the dump is not of an x86-64 guest in long mode (ELF machine "
                            f"{core.machine}); {DUMP_ADVICE}")
    states = core.cpu_states()
    if not states:
        raise CoreDumpError("the dump has physical addresses only and no QEMU CPU notes "
                            f"(CR3) to find the kernel page tables; {DUMP_ADVICE}")
    roots = candidate_roots(states)
    if not roots:
        raise CoreDumpError(f"no CPU in the dump has paging enabled (CR0.PG, CR4.PAE); "
                            f"{DUMP_ADVICE}")
    for root, levels in roots:
        memory = KernelMemory(core, root, levels)
        if any(memory.matches(address, expected) for address, expected in anchors):
            return memory
    tried = ", ".join(f"{root:#x}" for root, _levels in roots)
    raise CoreDumpError(f"none of the dump's page tables (CR3 {tried}) maps {anchor_name}: "
                        f"is the vmlinux this dump's kernel? Otherwise {DUMP_ADVICE}")
