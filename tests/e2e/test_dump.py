"""Offline: the listing and inspection commands on a QEMU dump-guest-memory ELF dump.

Both forms of the dump: with virtual addresses (`dump-guest-memory -p`, gdb reads it by
itself) and QEMU's default, physical addresses only (also what `virsh dump --memory-only`
makes), which the plugin reads through the guest's page tables (gdb_kprobe/target/pagetables.py).
"""
from __future__ import annotations

import os
import pathlib
import re
import struct

import pytest

from conftest import LIST, Session
from qemu import kernels
from qemu.lab import GDBINIT, Gdb, Lab



def open_dump(session, core: pathlib.Path, gdb_binary: str) -> Gdb:
    return Gdb(["-ex", "set style enabled off", "-ex", f"file {session.lab.files.vmlinux}",
                "-ex", f"core-file {core}", "-ex", f"source {GDBINIT}"], gdb_binary=gdb_binary)


COMMANDS = ("kp-list", "kp-show inet_csk_accept", "kp-blacklist", "kp-hooks", "kp-hooks --json")


def live_outputs(session) -> dict[str, str]:
    """What the commands print on the stopped guest: the dump made next is of this moment."""
    outputs = {command: session.gdb_cmd(command) for command in COMMANDS}
    assert outputs["kp-list"].count("\n") >= 8, outputs["kp-list"]    # the default scenario
    return outputs


def assert_dump_equals_live(session, core: pathlib.Path, live: dict[str, str],
                            gdb_binary: str) -> None:
    gdb = open_dump(session, core, gdb_binary)
    try:
        for command in COMMANDS:
            assert gdb.execute(command) == live[command], command
        assert "kp_lab_kprobe" in gdb.execute("kp-modules")
    finally:
        gdb.close()


def test_kp_list_on_a_dump_equals_live(session, tmp_path, gdb_binary):
    live = live_outputs(session)
    core = session.lab.dump(tmp_path / "guest.core")
    try:
        assert_dump_equals_live(session, core, live, gdb_binary)
    finally:
        core.unlink()


def test_kp_list_on_a_dump_without_virtual_addresses_equals_live(session, tmp_path, gdb_binary):
    """QEMU's default dump: PT_LOAD segments by physical address only. gdb alone would read
    the vmlinux file there and kp-list would print nothing at all."""
    live = live_outputs(session)
    core = session.lab.dump(tmp_path / "guest-physical.core", paging=False)
    try:
        assert coredump_module().is_physical_only_dump(core)
        assert_dump_equals_live(session, core, live, gdb_binary)
    finally:
        core.unlink()


def test_damaged_dump_without_virtual_addresses_says_what_to_do(session, tmp_path, gdb_binary):
    """Without QEMU's CPU notes (CR3), or with CR3s that do not map the kernel, no command
    prints an empty list or a traceback: one line saying why and which dump command works."""
    session.stop()
    core = session.lab.dump(tmp_path / "guest-damaged.core", paging=False)
    try:
        rewrite_qemu_notes(core, cr3=0x1000)          # a page that holds no page table
        expect_one_line(session, core, gdb_binary,
                        r"cannot read the kernel in .*guest-damaged\.core: none of the dump's "
                        r"page tables \(CR3 0x1000, 0x0\) maps the symbol file's linux_banner: "
                        r"is the vmlinux this dump's kernel\? Otherwise make the dump with "
                        r"QEMU's monitor command `dump-guest-memory -p PATH` .*")
        rewrite_qemu_notes(core, name=b"XEMU")        # the notes stripped (renamed)
        expect_one_line(session, core, gdb_binary,
                        r"cannot read the kernel in .*guest-damaged\.core: the dump has physical "
                        r"addresses only and no QEMU CPU notes \(CR3\) to find the kernel page "
                        r"tables; make the dump with QEMU's monitor command "
                        r"`dump-guest-memory -p PATH` .*")
    finally:
        core.unlink()


def test_dump_of_part_of_memory_says_so(session, tmp_path, gdb_binary):
    """A dump with virtual addresses of the first 16 MiB only: the kernel image is not in it,
    and gdb would read the vmlinux file there (kprobe_table in .bss: an empty list)."""
    core = tmp_path / "guest-part.core"
    session.stop()
    session.lab.qmp("dump-guest-memory", {"paging": True, "protocol": f"file:{core}",
                                          "begin": 0, "length": 16 << 20})
    try:
        expect_one_line(session, core, gdb_binary,
                        r"cannot read the kernel in .*guest-part\.core: the dump does not hold "
                        r"linux_banner \(a dump of part of memory, or not of this kernel\?\); "
                        r"make the dump with QEMU's monitor command `dump-guest-memory -p PATH` "
                        r".*")
    finally:
        core.unlink()


@pytest.fixture
def pti_session(kernel, gdb_binary):
    config = kernels.fetch(kernel).config.read_text()
    if "PAGE_TABLE_ISOLATION=y" not in config:
        pytest.skip(f"{kernel} is built without page table isolation")
    lab = Lab(kernel, append="pti=on")             # a second guest, for this test only
    lab.start()
    try:
        yield Session(lab, lab.gdb(gdb_binary=gdb_binary))
    finally:                       # also when attaching gdb failed
        lab.stop()


def test_dump_without_virtual_addresses_of_cpus_in_user_mode_with_pti(pti_session, tmp_path,
                                                                        gdb_binary):
    """With page table isolation a CPU stopped in user mode has the user PGD in CR3, which
    maps next to nothing of the kernel: the kernel PGD next to it is used. (The live gdbstub
    reads through that CR3 too, so the dump is compared with debugfs instead.)"""
    session = pti_session
    debugfs = session.stable_list()
    session.guest("(while :; do :; done) & (while :; do :; done) &")    # both CPUs in user mode
    # where a CPU stops is chance (an interrupt, the shell's own syscalls): try a few stops
    for _ in range(8):
        session.guest("sleep 0.5")
        session.stop()
        core = session.lab.dump(tmp_path / "guest-pti.core", paging=False)
        with coredump_module().ElfCore.open(core) as elf:
            user_pgds = [state.cr3 for state in elf.cpu_states() if state.cr3 & 0x1000]
        if user_pgds:
            break
        core.unlink()
    else:
        raise AssertionError("no CPU was stopped in user mode in 8 stops")
    try:
        assert session.guest(f"cat {LIST}") == debugfs
        gdb = open_dump(session, core, gdb_binary)
        try:
            assert gdb.execute("kp-list") == debugfs
        finally:
            gdb.close()
    finally:
        core.unlink()


def expect_one_line(session, core: pathlib.Path, gdb_binary: str, pattern: str) -> None:
    gdb = open_dump(session, core, gdb_binary)
    try:
        for command in ("kp-list", "kp-show inet_csk_accept", "kp-modules", "kp-blacklist"):
            out = gdb.execute(command)
            assert out.count("\n") == 1 and "Traceback" not in out, (command, out)
            assert re.fullmatch(pattern, out.strip()), (command, out)
    finally:
        gdb.close()


def coredump_module():
    """gdb_kprobe/target/elfcore.py: pure, importable without gdb."""
    from gdb_kprobe.target import elfcore
    return elfcore


def rewrite_qemu_notes(core: pathlib.Path, name: bytes | None = None,
                       cr3: int | None = None) -> None:
    """Patch the dump's "QEMU" notes in place: rename them, or set every CPU's CR3."""
    with open(core, "rb") as handle:
        data = handle.read(1 << 20)                   # the headers and notes come first
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    patches = []
    for index in range(phnum):
        p_type, _flags, p_offset, *_rest, p_filesz = \
            struct.unpack_from("<IIQQQQ", data, phoff + index * phentsize)
        if p_type != 4:                                # PT_NOTE
            continue
        position = p_offset
        while position + 12 <= p_offset + p_filesz:
            namesz, descsz, _type = struct.unpack_from("<III", data, position)
            name_at = position + 12
            desc_at = name_at + ((namesz + 3) & ~3)
            if data[name_at: name_at + 4] == b"QEMU":
                if name is not None:
                    patches.append((name_at, name))
                if cr3 is not None:
                    patches.append((desc_at + 416, struct.pack("<Q", cr3)))   # cr[3]
            position = desc_at + ((descsz + 3) & ~3)
    assert patches, "no QEMU notes in the dump"
    os.chmod(core, 0o600)                             # QEMU writes it read-only
    with open(core, "r+b") as handle:
        for offset, content in patches:
            handle.seek(offset)
            handle.write(content)
