"""gdb exits cleanly with the plugin loaded: status 0 and no "Fatal signal", after a -batch
run and after an interactive `quit`, attached to a booted lab kernel.

Debian's gdb 13.1 used to die on its way out ("Fatal signal: Segmentation fault", status
245) when the plugin had posted a Python event that was still queued at exit (finish.py).
"""
from __future__ import annotations

import os
import subprocess

import pexpect

from qemu import kernels
from qemu.lab import GDBINIT

LIST = "/sys/kernel/debug/kprobes/list"


def _env() -> dict[str, str]:
    env = dict(os.environ, TERM="dumb")
    env.pop("PYTHONPATH", None)          # gdb embeds the system Python
    return env


def _gdb_args(session) -> list[str]:
    index = kernels.cache_dir() / "gdb-index"
    return ["-q", "-nx", "-iex", "set debuginfod enabled off",
            "-iex", f"set index-cache directory {index}", "-iex", "set index-cache enabled on",
            "-ex", f"file {session.lab.files.vmlinux}", "-ex", f"source {GDBINIT}",
            "-ex", f"target remote 127.0.0.1:{session.lab.gdb_port}"]


def _handed_over(session):
    """Free the gdbstub (it serves one gdb at a time) for the duration of a test."""
    session.stop()
    session.gdb.execute("detach")
    session.running = True


def _take_back(session) -> None:
    session.gdb.execute(f"target remote 127.0.0.1:{session.lab.gdb_port}")
    session.running = False


def test_batch_run_exits_zero(session, gdb_binary):
    _handed_over(session)
    try:
        result = subprocess.run(
            [gdb_binary, "-batch", *_gdb_args(session), "-ex", "kp-list", "-ex", "bt 3",
             "-ex", "detach"], capture_output=True, text=True, timeout=300, env=_env())
    finally:
        _take_back(session)
    output = result.stdout + result.stderr
    assert "Fatal signal" not in output and "internal to GDB" not in output, output[-3000:]
    assert result.returncode == 0, output[-3000:]
    assert "FTRACE" in result.stdout          # kp-list ran against the kernel


def test_batch_run_that_finishes_exits_zero(session, gdb_binary):
    """`finish` arms the plugin's companion breakpoint; exiting right after must be clean."""
    _handed_over(session)
    try:
        gdb = subprocess.Popen(
            [gdb_binary, "-batch", *_gdb_args(session), "-ex", "break vfs_statx",
             "-ex", "continue", "-ex", "finish", "-ex", "delete", "-ex", "detach"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
        # the guest stats a file now and then (in the background) until gdb has hit its
        # breakpoint and left; then the loop is told to stop rather than waited out
        token = session.lab.guest.send(
            "rm -f /tmp/kp-stop; (for i in $(seq 100); do [ -e /tmp/kp-stop ] && break; "
            "stat / > /dev/null; sleep 0.2; done) &")
        output, _ = gdb.communicate(timeout=300)
        session.lab.guest.wait(token, timeout=300)
        session.lab.guest.run("touch /tmp/kp-stop; wait", timeout=60)
    finally:
        _take_back(session)
    result = subprocess.CompletedProcess(gdb.args, gdb.returncode, output, "")
    assert "Fatal signal" not in output, output[-3000:]
    assert result.returncode == 0, output[-3000:]
    assert "Value returned" in output, output[-3000:]


def test_interactive_quit_exits_zero(session, gdb_binary):
    _handed_over(session)
    try:
        child = pexpect.spawn(gdb_binary, ["-iex", "set prompt <exit-gdb> ",
                                           "-iex", "set pagination off", *_gdb_args(session)],
                              encoding="utf-8", codec_errors="replace", timeout=300, env=_env())
        child.expect_exact("<exit-gdb> ")
        child.sendline("kp-list")
        child.expect_exact("<exit-gdb> ")
        listing = child.before
        child.sendline("quit")
        # gdb asks before it quits a live session ("Quit anyway? (y or n)"); say yes
        if child.expect([r"\(y or n\)", pexpect.EOF]) == 0:
            child.sendline("y")
            child.expect(pexpect.EOF)
        transcript = child.before
        child.close()
    finally:
        _take_back(session)
    assert "FTRACE" in listing
    assert "Fatal signal" not in transcript, transcript[-3000:]
    assert child.exitstatus == 0 and child.signalstatus is None, transcript[-3000:]
