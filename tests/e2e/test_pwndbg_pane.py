"""pwndbg's backtrace pane shows our frame labels, as `bt` does (issue #20).

pwndbg draws that pane itself from `info symbol` per frame and never asks gdb's frame
filters. A stand-in pwndbg (tests/e2e/standin_pwndbg, pwndbg is in no registry) draws it
the way pwndbg does; it is imported into the session's gdb after the plugin, as when a
user loads pwndbg after gdb-kprobe, and the plugin attaches at the next prompt."""
from __future__ import annotations

import pathlib
import re

import pytest
from test_unwind import handler_bp, int3_offset, run

pytestmark = pytest.mark.e2e

STANDIN = pathlib.Path(__file__).resolve().parent / "standin_pwndbg"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PANE = 'python print("\\n".join(pwndbg.commands.context.context_sections["b"]()))'


@pytest.fixture(scope="module")
def pane_session(session):
    session.gdb_cmd(f"python import sys; sys.path.insert(0, {str(STANDIN)!r}); "
                    "import pwndbg.commands.context")
    # that command's prompt attached the plugin (its before_prompt hook)
    notes = session.gdb_cmd("python import gdb_kprobe.integration.pwndbg as kp_pwndbg; "
                            "print(kp_pwndbg.notes)")
    assert "frame labels added to pwndbg's backtrace pane" in notes, notes
    return session


def pane_and_bt(session, place: str) -> tuple[str, str]:
    seen = {}

    def on_stop(_number):
        seen["pane"] = ANSI.sub("", session.gdb.execute(PANE))
        seen["bt"] = session.gdb.execute("bt 12")
        return True

    run(session, [handler_bp(session, place)], on_stop, max_stops=1)
    return seen["pane"], seen["bt"]


@pytest.mark.parametrize("path", ["int3", "ftrace"])
def test_pane_shows_the_labels_bt_shows(pane_session, path):
    place = (f"inet_csk_accept+{int3_offset(pane_session)}" if path == "int3"
             else "inet_csk_accept")
    pane, bt = pane_and_bt(pane_session, place)
    labels = re.findall(r"(<kprobe: [^>]+>|\[probed at [^\]]+\])", bt)
    assert any(label.startswith(f"<kprobe: {path} on inet_csk_accept") for label in labels), bt
    assert any(label.startswith("[probed at inet_csk_accept") for label in labels), bt
    for label in labels:
        assert label in pane, (label, pane, bt)
    entry = next(line for line in pane.splitlines() if "<kprobe: " in line)
    assert " None" not in entry, pane          # the trampoline has bt's name, not None
    probed = next(line for line in pane.splitlines() if "[probed at " in line)
    assert re.search(r"0x[0-9a-f]+ inet_csk_accept\+\d+ \[probed at ", probed), pane


def test_pane_without_labels_is_pwndbg_own(pane_session):
    """At an ordinary stop (no kprobe frame) the pane is exactly what pwndbg drew.

    The stop is a plain breakpoint on accept's syscall path, above every probe the lab
    plants: an interrupt could land in a task inside a kretprobed function (the lab's
    `r:` on ksys_write), whose restored return address is rightly labelled."""
    seen = {}

    def on_stop(_number):
        seen["wrapped"] = pane_session.gdb.execute(PANE)
        seen["original"] = pane_session.gdb.execute(
            'python print("\\n".join(pwndbg.commands.context.context_sections["b"]'
            '.__gdb_kprobe_wraps__()))')
        seen["bt"] = pane_session.gdb.execute("bt")
        return True

    run(pane_session, ["__sys_accept4"], on_stop, max_stops=1)
    assert "<k" not in seen["bt"] and "[probed at" not in seen["bt"], seen["bt"]
    assert seen["wrapped"] == seen["original"] and "f 0" in seen["wrapped"], seen
