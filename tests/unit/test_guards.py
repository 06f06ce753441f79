"""The stopped-target guard in all-stop and non-stop mode (gdb's thread states faked)."""
from __future__ import annotations

import types

import pytest


def fake_target(fake_gdb, non_stop: bool, running: list[bool], pid: int = 1):
    threads = [types.SimpleNamespace(num=n + 1, is_running=lambda r=r: r)
               for n, r in enumerate(running)]
    inferior = types.SimpleNamespace(pid=pid, threads=lambda: threads)
    fake_gdb.selected_inferior = lambda: inferior
    fake_gdb.selected_thread = lambda: threads[0] if threads else None
    fake_gdb.parameter = lambda name: non_stop if name == "non-stop" else None


@pytest.fixture
def target(fake_gdb):
    from gdb_kprobe.target import guards
    return guards


@pytest.mark.parametrize("non_stop", [False, True])
def test_all_stopped_passes(fake_gdb, target, non_stop):
    fake_target(fake_gdb, non_stop, [False, False])
    target.require_stopped_target()


def test_all_stop_running(fake_gdb, target):
    fake_target(fake_gdb, False, [True, True])
    with pytest.raises(target.KpError, match=r"^the target is running; interrupt it first"):
        target.require_stopped_target()


@pytest.mark.parametrize("running", [[True, False], [False, True]])
def test_non_stop_one_cpu_running_is_refused(fake_gdb, target, running):
    """In non-stop mode the selected CPU may be stopped while another runs and changes
    the lists: refused as well, with the command that stops them all."""
    fake_target(fake_gdb, True, running)
    with pytest.raises(target.KpError, match=r"non-stop mode\); stop them all first: "
                                             r"interrupt -a$"):
        target.require_stopped_target()


def test_non_stop_not_attached(fake_gdb, target):
    fake_target(fake_gdb, True, [], pid=0)
    with pytest.raises(target.KpError, match=r"non-stop mode is on: .* set non-stop off"):
        target.require_stopped_target()
