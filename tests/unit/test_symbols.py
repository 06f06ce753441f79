"""kallsyms-style lookups in an ELF symbol table, on a small object compiled here."""
from __future__ import annotations

import subprocess

import pytest

SOURCE = r"""
void first(void) { __asm__ volatile("nop; nop; nop; nop"); }
void second(void) { __asm__ volatile("nop; nop"); }
void __attribute__((alias("second"))) _second_alias(void);
void __attribute__((weak, alias("second"))) weak_second(void);
int data_object = 1;
"""


@pytest.fixture
def elf(tmp_path, fake_gdb):
    (tmp_path / "t.c").write_text(SOURCE)
    # linked, so symbol values are addresses (as in vmlinux), not section offsets
    subprocess.run(["gcc", "-O0", "-nostdlib", "-no-pie", "-Wl,-e,first", str(tmp_path / "t.c"),
                    "-o", str(tmp_path / "t")], check=True)
    from gdb_kprobe.target.symbols import ElfSymbols
    return ElfSymbols(str(tmp_path / "t"))


def test_lookup_inside_a_function(elf):
    start = elf.address_of("first")
    name, offset, _size = elf.lookup(start + 3)
    assert (name, offset) == ("first", 3)


def test_aliases_prefer_strong_then_fewer_underscores(elf):
    start = elf.address_of("second")
    assert elf.lookup(start)[0] == "second"
    assert elf.address_of("_second_alias") == start == elf.address_of("weak_second")


def test_not_an_elf(tmp_path, fake_gdb):
    from gdb_kprobe.errors import KpError
    from gdb_kprobe.target.symbols import ElfSymbols
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"MZ" + b"\0" * 100)
    with pytest.raises(KpError, match="cannot read the symbol table of .*not a 64-bit ELF"):
        ElfSymbols(str(bogus))
