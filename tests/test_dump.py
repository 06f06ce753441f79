"""Offline: the listing and inspection commands on a QEMU dump-guest-memory ELF dump."""
from __future__ import annotations

from qemu.lab import GDBINIT, Gdb


def test_kp_list_on_a_dump_equals_live(session, tmp_path, gdb_binary):
    live = session.gdb_cmd("kp-list")                       # stopped: the dump is of this moment
    live_show = session.gdb_cmd("kp-show inet_csk_accept")
    core = session.lab.dump(tmp_path / "guest.core")
    gdb = Gdb(["-ex", "set style enabled off", "-ex", f"file {session.lab.files.vmlinux}",
               "-ex", f"core-file {core}", "-ex", f"source {GDBINIT}"], gdb_binary=gdb_binary)
    try:
        assert gdb.execute("kp-list") == live
        assert gdb.execute("kp-show inet_csk_accept") == live_show
        assert gdb.execute("kp-blacklist") == session.gdb_cmd("kp-blacklist")
        assert "kp_lab_kprobe" in gdb.execute("kp-modules")
    finally:
        gdb.close()
        core.unlink()
