"""The placed copy of a .ko: section addresses written into a relocatable object."""
from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

SOURCE = """
int in_text(void) { return 1; }
__attribute__((section(".kprobes.text"))) int in_kprobes_text(void) { return 2; }
int data_word = 3;
"""


def section_addresses(data: bytes) -> dict[str, int]:
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    names_at = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
    result = {}
    for index in range(shnum):
        header = shoff + index * shentsize
        name_offset = struct.unpack_from("<I", data, header)[0]
        end = data.index(b"\0", names_at + name_offset)
        result[data[names_at + name_offset:end].decode()] = \
            struct.unpack_from("<Q", data, header + 0x10)[0]
    return result


@pytest.fixture
def elf_relocate(fake_gdb):
    from gdb_kprobe.target import elf_relocate
    return elf_relocate


@pytest.fixture(scope="module")
def object_file(tmp_path_factory) -> bytes:
    compiler = shutil.which("gcc") or shutil.which("gcc-12")
    if compiler is None:
        pytest.skip("no gcc")
    folder = tmp_path_factory.mktemp("elf")
    (folder / "m.c").write_text(SOURCE)
    subprocess.run([compiler, "-c", "-g", "-O1", "-o", str(folder / "m.o"), str(folder / "m.c")],
                   check=True)
    return (folder / "m.o").read_bytes()


def test_allocated_sections_get_their_load_addresses(elf_relocate, object_file):
    wanted = {".text": 0xFFFFFFFFC0207000, ".kprobes.text": 0xFFFFFFFFC0207030,
              ".data": 0xFFFFFFFFC0209040, ".debug_info": 0x1234}
    placed = section_addresses(elf_relocate.placed(object_file, wanted))
    assert placed[".text"] == wanted[".text"]
    assert placed[".kprobes.text"] == wanted[".kprobes.text"]
    assert placed[".data"] == wanted[".data"]
    assert placed[".debug_info"] == 0          # not allocated: left alone
    assert placed[".bss"] == 0                 # not named: left alone


def test_everything_but_the_headers_and_build_id_is_unchanged(elf_relocate, object_file):
    copy = elf_relocate.placed(object_file, {".text": 0x1000})
    assert len(copy) == len(object_file)
    assert copy[:0x40] == object_file[:0x40]


@pytest.mark.parametrize("data, message", [
    (b"not an elf file at all........................................................",
     "not a 64-bit little-endian ELF file"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<H", 2) + b"\0" * 60,
     "not a relocatable object"),
])
def test_other_files_are_refused(elf_relocate, data, message):
    with pytest.raises(elf_relocate.ElfError, match=message):
        elf_relocate.placed(data, {".text": 0})
