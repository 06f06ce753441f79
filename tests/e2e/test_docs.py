"""The command reference is generated from the commands' help and must be current."""
from __future__ import annotations

import subprocess
import sys

from qemu.lab import REPO


def test_command_reference_is_current():
    result = subprocess.run([sys.executable, str(REPO / "docs" / "gen_commands.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
