"""`python -m qemu.probe_module load DIR` (the tutorial's last chapter) fails in one line,
before touching the guest, when there is nothing to load or no lab to load it into."""
from __future__ import annotations

import pytest

from qemu import probe_module


def test_no_module_built_yet(tmp_path):
    with pytest.raises(SystemExit, match=r"0 \.ko files in .*build it first: make -C"):
        probe_module.main(["load", str(tmp_path)])


def test_no_lab_console(tmp_path, monkeypatch):
    (tmp_path / "kp_locals_x_1.ko").write_bytes(b"")
    monkeypatch.setenv(probe_module.CONSOLE_ENV, str(tmp_path / "no-such.sock"))
    with pytest.raises(SystemExit, match=r"console .*no-such\.sock does not answer .*make lab"):
        probe_module.main(["load", str(tmp_path)])
