"""Plain gdb, no pwndbg: loading gdb-kprobe leaves the pwndbg integration inert (no target
needed; the e2e suite covers the commands themselves)."""
from __future__ import annotations

import os
import subprocess

import pytest

from qemu.lab import GDBINIT

pytestmark = pytest.mark.e2e

PROBE = ("python import sys; from gdb_kprobe.integration import pwndbg as p; "
         "from gdb_kprobe.commands.base import palette; "
         "print('STATE', 'pwndbg' in sys.modules, p.attached(), p.notes, p.theme(), "
         "gdb.prompt_hook, palette().theme)")


def test_plain_gdb_without_pwndbg(gdb_binary):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [gdb_binary, "-q", "-nx", "-batch", "-iex", "set debuginfod enabled off",
         "-ex", f"source {GDBINIT}", "-ex", PROBE, "-ex", "set kp-debug on",
         "-ex", "help kp-list"],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "STATE False False [] None None {}" in result.stdout, result.stdout
    assert "pwndbg" not in result.stdout.replace("STATE False", "")
    assert "List the registered kprobes" in result.stdout
