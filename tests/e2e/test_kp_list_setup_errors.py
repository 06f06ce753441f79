"""kp-list before there is anything to list: no vmlinux, no target, no DWARF."""
from __future__ import annotations

import pathlib
import subprocess

import pytest

from qemu.lab import GDBINIT, Gdb


def one_line(gdb: Gdb, command: str) -> str:
    out = gdb.execute(command).strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    return out


def test_no_symbol_file(gdb_binary):
    gdb = Gdb(["-ex", f"source {GDBINIT}"], gdb_binary=gdb_binary)
    try:
        assert one_line(gdb, "kp-list") == (
            "no kernel symbol file loaded; load the DWARF vmlinux first: file /path/to/vmlinux")
    finally:
        gdb.close()


def test_not_attached(session, gdb_binary):
    gdb = session.lab.gdb(gdb_binary=gdb_binary, attach=False)
    try:
        assert one_line(gdb, "kp-list") == (
            "not attached to a kernel; connect to it first: target remote 127.0.0.1:PORT "
            "(QEMU's gdbstub)")
    finally:
        gdb.close()


@pytest.fixture(scope="module")
def stripped_vmlinux(session) -> pathlib.Path:
    """The same kernel's vmlinux without DWARF (ELF symbols only), cached next to it."""
    vmlinux = session.lab.files.vmlinux
    stripped = vmlinux.with_name("vmlinux.nodebug")
    if not stripped.exists():
        tmp = stripped.with_suffix(".tmp")
        subprocess.run(["objcopy", "--strip-debug", str(vmlinux), str(tmp)], check=True)
        tmp.rename(stripped)
    return stripped


def test_no_dwarf(session, stripped_vmlinux, gdb_binary):
    session.stop()
    session.gdb.execute("detach")
    lab = session.lab
    gdb = Gdb(["-ex", "set pagination off", "-ex", f"file {stripped_vmlinux}",
               "-ex", f"source {GDBINIT}", "-ex", f"target remote 127.0.0.1:{lab.gdb_port}"],
              gdb_binary=gdb_binary)
    try:
        assert one_line(gdb, "kp-list") == (
            "type `struct kprobe` is not in the symbol file's debug info; load the DWARF "
            "vmlinux of the running kernel (the linux-image-<ver>-dbg package)")
    finally:
        gdb.close()
    session.gdb.execute(f"target remote 127.0.0.1:{lab.gdb_port}")
    assert "inet_accept" in session.gdb.execute("kp-list")
