"""Page-table translation in QEMU dumps without virtual addresses, on hand-made ELF cores.

Each core holds a few physical pages: a 4-level page table (a 4 KiB page, a 2 MiB page,
a 1 GiB page, a page that is not present), the user PGD that page table isolation puts
next to the kernel's, QEMU's per-CPU notes with CR3 and CR4. gdb_kprobe/target/elfcore.py and pagetables.py
are imported without gdb: the package registers nothing on import, and these two are pure.
"""
from __future__ import annotations

import ast
import pathlib
import struct
import sys
import types

import pytest

TARGET = pathlib.Path(__file__).resolve().parents[2] / "gdb_kprobe" / "target"
MODULES = ("elfcore", "pagetables")

BANNER = b"Linux version 6.1.0-test (synthetic) #1 SMP\n\0"
KERNEL_PGD = 0x2000          # 8 KiB aligned: the PTI user PGD is the page after it
USER_PGD = 0x3000
PML5 = 0x1000
PDPT_KERNEL, PD_KERNEL, PT_KERNEL = 0x4000, 0x5000, 0x6000
PDPT_USER = 0x9000
BANNER_PAGE, DATA_PAGE = 0x7000, 0x8000
HUGE_2M_PHYS = 0x400000      # the dump holds only its first 8 KiB
TEXT = 0xFFFFFFFF81000000    # PML4 511, PDPT 510, PD 8, PT 0
HUGE_2M = 0xFFFFFFFF81200000  # PD 9: a 2 MiB page
DIRECT_MAP = 0xFFFF888000000000  # PML4 273, PDPT 0: a 1 GiB page at physical 0
USER_ONLY = 0x0000000000400000   # mapped in neither PGD

P, RW, PS, NX = 1, 2, 0x80, 1 << 63
CR0_PG, CR4_PAE, CR4_LA57 = 1 << 31, 1 << 5, 1 << 12


@pytest.fixture(scope="module")
def coredump():
    """Both modules' public names in one namespace, imported with no `gdb` module at all."""
    assert "gdb" not in sys.modules
    from gdb_kprobe.target import elfcore, pagetables
    assert "gdb" not in sys.modules
    names = {}
    for module in (elfcore, pagetables):
        names.update({name: getattr(module, name) for name in module.__all__})
    return types.SimpleNamespace(**names)


def index(address: int, level: int) -> int:
    return (address >> (12 + 9 * (level - 1))) & 0x1FF


def physical_memory() -> dict[int, bytes]:
    """Physical address -> bytes: the page tables and the data pages."""
    memory: dict[int, bytes] = {}

    def entry(table: int, slot: int, value: int) -> None:
        memory[table + 8 * slot] = struct.pack("<Q", value)

    entry(KERNEL_PGD, index(TEXT, 4), PDPT_KERNEL | P | RW)
    entry(KERNEL_PGD, index(DIRECT_MAP, 4), 0x0 | P)              # see below: PDPT at 0
    entry(PDPT_KERNEL, index(TEXT, 3), PD_KERNEL | P | RW)
    entry(PD_KERNEL, index(TEXT, 2), PT_KERNEL | P | RW)
    entry(PD_KERNEL, index(HUGE_2M, 2), HUGE_2M_PHYS | P | PS | (1 << 12))   # bit 12: PAT
    entry(PT_KERNEL, 0, BANNER_PAGE | P | NX)
    entry(PT_KERNEL, 1, DATA_PAGE | P | RW | NX)
    entry(PT_KERNEL, 2, DATA_PAGE)                                  # not present
    # the direct map's PDPT is the first physical page: entry 0 is a 1 GiB page at 0
    entry(0x0, index(DIRECT_MAP, 3), 0x0 | P | PS | NX)
    # the PTI user PGD maps only a user page table, no kernel text
    entry(USER_PGD, index(TEXT, 4), PDPT_USER | P)
    # a PML5 whose last entry is the kernel PGD (5-level paging)
    entry(PML5, index(TEXT, 5), KERNEL_PGD | P | RW)
    memory[BANNER_PAGE + 0x100] = BANNER
    memory[DATA_PAGE] = bytes(range(256)) * 16
    memory[HUGE_2M_PHYS + 0x1FF8] = b"HUGEPAGE"
    return memory


def qemu_note(cr0: int, cr3: int, cr4: int, version: int = 1) -> tuple[bytes, int, bytes]:
    """A "QEMU" note: struct QEMUCPUState with kernel_gs_base (QEMU 7.2's size, 440)."""
    state = bytearray(440)
    struct.pack_into("<II", state, 0, version, len(state))
    struct.pack_into("<5Q", state, 392, cr0, 0, 0, cr3, cr4)
    return b"QEMU", 0, bytes(state)


def prstatus_note(cpu: int) -> tuple[bytes, int, bytes]:
    desc = bytearray(336)
    struct.pack_into("<I", desc, 32, cpu)
    return b"CORE", 1, bytes(desc)


def note_bytes(notes) -> bytes:
    out = b""
    for name, note_type, desc in notes:
        name_z = name + b"\0"
        out += struct.pack("<III", len(name_z), len(desc), note_type)
        out += name_z.ljust((len(name_z) + 3) & ~3, b"\0")
        out += desc.ljust((len(desc) + 3) & ~3, b"\0")
    return out


def build_core(cpus=((CR0_PG, KERNEL_PGD, CR4_PAE),), machine: int = 62,
               segments=((0x0, 0x10000), (HUGE_2M_PHYS, 0x2000)), vaddr: int | None = None,
               qemu_notes: bool = True) -> bytes:
    """An ELF64 core laid out as QEMU writes it: PT_NOTE, then one PT_LOAD per RAM block,
    whose p_vaddr is its p_paddr (QEMU without paging) unless `vaddr` is given."""
    notes = []
    for number, (cr0, cr3, cr4) in enumerate(cpus):
        notes.append(prstatus_note(number))
        if qemu_notes:
            notes.append(qemu_note(cr0, cr3, cr4))
    note_data = note_bytes(notes)
    memory = physical_memory()
    phnum = 1 + len(segments)
    data_at = 64 + 56 * phnum
    headers = struct.pack("<IIQQQQQQ", 4, 0, data_at, 0, 0, len(note_data), 0, 0)
    body = note_data
    for start, size in segments:
        block = bytearray(size)
        for address, content in memory.items():
            if start <= address < start + size:
                block[address - start: address - start + len(content)] = content
        headers += struct.pack("<IIQQQQQQ", 1, 0, data_at + len(body),
                               start if vaddr is None else vaddr, start, size, size, 0)
        body += bytes(block)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, 64, 0, 0, 64, 56, phnum,
                                 64, 0, 0)
    return header + headers + body


@pytest.fixture
def write(tmp_path):
    def write_core(data: bytes, name: str = "guest.core") -> pathlib.Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return write_core


ANCHOR = [(TEXT + 0x100, b"Linux version")]


def open_memory(coredump, path):
    core = coredump.ElfCore.open(path)
    return core, coredump.open_kernel_memory(core, ANCHOR)


# -- parsing and detection ---------------------------------------------------------------

def test_segments_notes_and_cpu_states(coredump, write):
    cpus = ((CR0_PG, KERNEL_PGD | 5, CR4_PAE), (CR0_PG, USER_PGD | 5, CR4_PAE | CR4_LA57))
    with coredump.ElfCore.open(write(build_core(cpus))) as core:
        assert core.is_core and core.is_x86_64 and core.physical_only
        assert [(s.paddr, s.memsz) for s in core.segments] == [(0, 0x10000),
                                                                (HUGE_2M_PHYS, 0x2000)]
        assert [n.name for n in core.notes] == [b"CORE", b"QEMU", b"CORE", b"QEMU"]
        states = core.cpu_states()
        assert [(s.index, s.cr3, s.levels) for s in states] == [(0, KERNEL_PGD | 5, 4),
                                                                (1, USER_PGD | 5, 5)]
        assert core.read_physical(BANNER_PAGE + 0x100, 13) == b"Linux version"


def test_detects_a_dump_without_virtual_addresses(coredump, write, tmp_path):
    assert coredump.is_physical_only_dump(write(build_core()))           # p_vaddr = p_paddr
    assert coredump.is_physical_only_dump(write(build_core(vaddr=0), "zero.core"))
    # a paged dump (dump-guest-memory -p) has virtual addresses: gdb reads it by itself
    assert not coredump.is_physical_only_dump(write(build_core(vaddr=TEXT), "paged.core"))
    # a damaged dump without QEMU notes is still recognised: the error then says what to do
    assert coredump.is_physical_only_dump(write(build_core(qemu_notes=False), "bare.core"))
    assert not coredump.is_physical_only_dump(write(b"not an ELF file at all", "text"))
    assert not coredump.is_physical_only_dump(tmp_path / "missing.core")
    executable = bytearray(build_core())
    struct.pack_into("<H", executable, 16, 2)                   # ET_EXEC, not a core
    assert not coredump.is_physical_only_dump(write(bytes(executable), "vmlinux"))


def test_virtual_coverage_of_a_paged_dump(coredump, write):
    """A dump with virtual addresses: reads outside its segments would make gdb fall back to
    the vmlinux file, so they are told apart."""
    segments = ((0x0, 0x10000), (0x10000, 0x2000), (HUGE_2M_PHYS, 0x2000))
    data = bytearray(build_core(segments=segments))
    for number, vaddr in enumerate((TEXT, TEXT + 0x10000, DIRECT_MAP)):   # p_vaddr fields
        struct.pack_into("<Q", data, 64 + 56 * (number + 1) + 16, vaddr)
    with coredump.ElfCore.open(write(bytes(data))) as core:
        assert not core.physical_only
        assert core.covers_virtual(TEXT, 8)
        assert core.covers_virtual(TEXT + 0xFFF8, 0x10)             # two adjacent segments
        assert core.covers_virtual(TEXT + 0x11FF8, 8)
        assert not core.covers_virtual(TEXT + 0x11FF8, 9)           # runs past the end
        assert not core.covers_virtual(TEXT - 8, 8)
        assert not core.covers_virtual(HUGE_2M, 8)
        assert core.covers_virtual(DIRECT_MAP + 0x1FF8, 8)


def test_cpu_state_of_an_unknown_version_is_ignored(coredump):
    name, note_type, desc = qemu_note(CR0_PG, KERNEL_PGD, CR4_PAE, version=2)
    notes = list(coredump.parse_notes(note_bytes([(name, note_type, desc)])))
    assert notes[0].name == b"QEMU"
    core = coredump.ElfCore.__new__(coredump.ElfCore)
    core.notes = notes
    assert core.cpu_states() == []


# -- translation -------------------------------------------------------------------------

def test_4k_page_translation_and_read(coredump, write):
    core, memory = open_memory(coredump, write(build_core()))
    with core:
        assert memory.root == KERNEL_PGD and memory.levels == 4
        assert memory.translate(TEXT + 0x123) == BANNER_PAGE + 0x123      # NX bit dropped
        assert memory.read(TEXT + 0x100, len(BANNER)) == BANNER
        assert memory.read(TEXT + 0x1000 + 0x10, 4) == bytes([0x10, 0x11, 0x12, 0x13])


def test_read_across_a_page_boundary_joins_both_pages(coredump, write):
    core, memory = open_memory(coredump, write(build_core()))
    with core:
        tail = memory.read(TEXT + 0xFFC, 8)
        assert tail == bytes(4) + bytes([0, 1, 2, 3])


def test_2m_page_ignores_the_pat_bit(coredump, write):
    core, memory = open_memory(coredump, write(build_core()))
    with core:
        assert memory.translate(HUGE_2M + 0x1FF8) == HUGE_2M_PHYS + 0x1FF8
        assert memory.read(HUGE_2M + 0x1FF8, 8) == b"HUGEPAGE"
        assert memory.translate(HUGE_2M + 0x1FFFFF) == HUGE_2M_PHYS + 0x1FFFFF


def test_1g_page(coredump, write):
    core, memory = open_memory(coredump, write(build_core()))
    with core:
        assert memory.translate(DIRECT_MAP + 0x3FFFFFFF) == 0x3FFFFFFF
        assert memory.read(DIRECT_MAP + BANNER_PAGE + 0x100, 13) == b"Linux version"


def test_5_level_paging_with_la57(coredump, write):
    core, memory = open_memory(coredump, write(build_core(
        cpus=((CR0_PG, PML5, CR4_PAE | CR4_LA57),))))
    with core:
        assert memory.root == PML5 and memory.levels == 5
        assert memory.read(TEXT + 0x100, 13) == b"Linux version"
        assert memory.read(HUGE_2M + 0x1FF8, 8) == b"HUGEPAGE"


# -- unmapped and missing memory ---------------------------------------------------------

def test_not_present_page_is_a_clear_error(coredump, write):
    core, memory = open_memory(coredump, write(build_core()))
    with core:
        with pytest.raises(coredump.UnmappedAddress,
                           match=r"^0xffffffff81002000: not mapped in the kernel page tables$"):
            memory.read(TEXT + 0x2000, 8)
        with pytest.raises(coredump.UnmappedAddress, match="not mapped"):
            memory.read(USER_ONLY, 8)
        # a read that starts mapped and runs into the hole fails as a whole
        with pytest.raises(coredump.UnmappedAddress, match=r"^0xffffffff81002000: "):
            memory.read(TEXT + 0x1FF0, 0x20)


def test_mapped_page_missing_from_the_dump(coredump, write):
    core, memory = open_memory(coredump, write(build_core()))
    with core:
        with pytest.raises(coredump.UnmappedAddress,
                           match=r"mapped to physical 0x402000, which is not in the dump"):
            memory.read(HUGE_2M + 0x2000, 8)


def test_non_canonical_address(coredump, write):
    core, memory = open_memory(coredump, write(build_core()))
    with core:
        with pytest.raises(coredump.UnmappedAddress, match="not canonical with 4-level"):
            memory.read(0x0000800000000000, 8)


def test_unmapped_is_a_core_dump_error(coredump):
    assert issubclass(coredump.UnmappedAddress, coredump.CoreDumpError)


# -- choosing the page-table root ----------------------------------------------------------

def test_pti_user_pgd_in_cr3_falls_back_to_the_kernel_pgd(coredump, write):
    """A CPU stopped in user mode with PTI: CR3 is the user PGD (bit 12 set) plus a PCID."""
    core, memory = open_memory(coredump, write(build_core(
        cpus=((CR0_PG, USER_PGD | 0x7, CR4_PAE),))))
    with core:
        assert memory.root == KERNEL_PGD
        assert memory.read(TEXT + 0x100, 13) == b"Linux version"


def test_candidate_roots_order_and_deduplication(coredump):
    states = [coredump.CpuState(0, CR0_PG, USER_PGD | 0x7, CR4_PAE),
              coredump.CpuState(1, CR0_PG, KERNEL_PGD | 0x1, CR4_PAE),
              coredump.CpuState(2, 0, 0x5000, 0),                    # paging off: skipped
              coredump.CpuState(3, CR0_PG, PML5, CR4_PAE | CR4_LA57)]
    assert coredump.candidate_roots(states) == [(USER_PGD, 4), (KERNEL_PGD, 4), (PML5, 5),
                                                (PML5 & ~0x1000, 5)]


def test_a_second_cpu_in_kernel_mode_is_used_when_the_first_is_useless(coredump, write):
    cpus = ((CR0_PG, 0x5000, CR4_PAE), (CR0_PG, KERNEL_PGD, CR4_PAE))
    core, memory = open_memory(coredump, write(build_core(cpus)))
    with core:
        assert memory.root == KERNEL_PGD


def test_no_qemu_notes_names_the_dump_command_that_works(coredump, write):
    with coredump.ElfCore.open(write(build_core(qemu_notes=False))) as core:
        with pytest.raises(coredump.CoreDumpError) as failure:
            coredump.open_kernel_memory(core, ANCHOR)
    message = str(failure.value)
    assert "no QEMU CPU notes" in message and "dump-guest-memory -p PATH" in message
    assert "\n" not in message


def test_no_root_maps_the_anchor(coredump, write):
    with coredump.ElfCore.open(write(build_core())) as core:
        with pytest.raises(coredump.CoreDumpError,
                           match=r"CR3 0x2000\) maps the symbol file's linux_banner.*"
                                 r"dump-guest-memory -p PATH"):
            coredump.open_kernel_memory(core, [(TEXT + 0x100, b"Linux version 9")])


def test_paging_off_everywhere(coredump, write):
    with coredump.ElfCore.open(write(build_core(cpus=((0x11, 0, 0),)))) as core:
        with pytest.raises(coredump.CoreDumpError, match="no CPU in the dump has paging"):
            coredump.open_kernel_memory(core, ANCHOR)


def test_not_x86_64(coredump, write):
    with coredump.ElfCore.open(write(build_core(machine=3))) as core:   # EM_386
        with pytest.raises(coredump.CoreDumpError, match="not of an x86-64 guest"):
            coredump.open_kernel_memory(core, ANCHOR)


def test_truncated_or_foreign_files(coredump, write):
    with pytest.raises(coredump.CoreDumpError, match="is not an ELF file"):
        coredump.ElfCore.open(write(b"\x7fELX" + bytes(100), "x"))
    elf32 = bytearray(build_core())
    elf32[4] = 1
    with pytest.raises(coredump.CoreDumpError, match="not a 64-bit little-endian"):
        coredump.ElfCore.open(write(bytes(elf32), "y"))
    with pytest.raises(coredump.CoreDumpError, match="truncated"):
        coredump.ElfCore.open(write(build_core()[:64 + 20], "z"))


def test_truncated_memory_data(coredump, write):
    data = build_core()
    core = coredump.ElfCore.open(write(data[:len(data) - 0x1000]))   # loses the 2 MiB page's tail
    with core:
        memory = coredump.open_kernel_memory(core, ANCHOR)
        with pytest.raises(coredump.UnmappedAddress, match="not in the dump"):
            memory.read(HUGE_2M + 0x1FF8, 8)


def test_modules_are_pure(coredump):
    """Standard library only (they run inside gdb's Python and in plain Python alike)."""
    for name in MODULES:
        tree = ast.parse((TARGET / f"{name}.py").read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert "gdb" not in imported, name
        assert imported <= set(sys.stdlib_module_names) | {"gdb_kprobe", "__future__"}, name
