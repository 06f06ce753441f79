"""Backtraces on arm64 (`--kernels 6.1-arm64,6.12-arm64`, issue #18): through the kprobe's BRK
exception entry (el1h_64_sync's pt_regs), past return addresses signed with pointer
authentication, and through the kretprobe trampoline (__kretprobe_trampoline, instances on
the task: no rethook on arm64 6.1 or 6.12); `set kp-unwind off` shows gdb alone; kp-where.

The guest is the oracle: /proc/kallsyms names the frames' code, its kprobes/list gives the
probed places, and /proc/PID/stack of a task blocked in accept() gives inet_accept's return
address (the kernel's own unwinder resolves the kretprobe trampoline there).
"""
from __future__ import annotations

import re

import pytest

from qemu import kernels
from qemu.lab import ACCEPT_TRAFFIC
from test_unwind import without_kp_unwind

LIST = "/sys/kernel/debug/kprobes/list"
KRETPROBE_LABEL = ("<kretprobe: return address restored from kretprobe_instance "
                   "(was __kretprobe_trampoline)>")


@pytest.fixture(autouse=True)
def _arm64_only(kernel):
    if kernels.arch_of(kernel) != "arm64":
        pytest.skip(f"{kernel} is not an arm64 kernel (this file runs on 6.1-arm64, 6.12-arm64)")


def kallsyms(session, name: str) -> int:
    rows = session.guest(f"grep ' {name}$' /proc/kallsyms").split()
    return int(rows[0], 16)


def kallsyms_near(session, name: str) -> list[tuple[int, str]]:
    """The guest's /proc/kallsyms entries in the 64 KiB around `name`, read before a stop
    (the guest answers nothing while gdb holds it)."""
    prefix = f"{kallsyms(session, name) >> 16:012x}"
    rows = session.guest(f"grep '^{prefix}' /proc/kallsyms").splitlines()
    return sorted((int(row.split()[0], 16), row.split()[2]) for row in rows)


def name_at(entries: list[tuple[int, str]], pc: int) -> str:
    """%pS's rule: the nearest entry at or below pc."""
    return max(entry for entry in entries if entry[0] <= pc)[1]


def probed_offsets(session) -> set[int]:
    """Offsets of the kprobes (not the return probe) on inet_csk_accept, from debugfs."""
    listing = session.guest(f"cat {LIST}")
    return {int(offset, 16) for offset in re.findall(r"  k  inet_csk_accept\+(0x[0-9a-f]+) ",
                                                     listing)}


def accept_return_offset(session) -> int:
    """inet_accept's return address into it, from /proc/PID/stack of an `nc -l` blocked in
    inet_csk_accept (which the lab's kretprobe holds)."""
    stack = session.guest("(nc -l -p 5558 > /dev/null &) ; sleep 0.5; "
                          "cat /proc/$(pidof nc | cut -d' ' -f1)/stack; killall nc; sleep 0.3")
    return int(re.search(r"\] inet_accept\+(0x[0-9a-f]+)/", stack).group(1), 16)


def at_stop(session, breakpoint: str, on_stop) -> None:
    """Break at `breakpoint`, make the guest accept a connection, run on_stop() at the stop."""
    session.stop()
    assert "Breakpoint" in session.gdb.execute(f"break {breakpoint}")
    session.resume()
    token = session.lab.guest.send(ACCEPT_TRAFFIC)
    try:
        session.gdb.wait_prompt(timeout=120)
        session.running = False
        on_stop()
    finally:
        session.stop()
        session.gdb.execute("delete")
        session.resume()
        session.lab.guest.wait(token)


def frames(bt: str) -> list[tuple[int, int | None, str, str]]:
    """(level, pc or None for an inlined frame, function, the rest) of each bt line."""
    found = []
    for match in re.finditer(r"^#(\d+)\s+(?:(0x[0-9a-f]+) in )?(\S+)(.*)$", bt, re.M):
        pc = int(match.group(2), 16) if match.group(2) else None
        found.append((int(match.group(1)), pc, match.group(3), match.group(4)))
    return found


def pc_of(session, frame: tuple[int, int | None, str, str]) -> int:
    """A frame's pc; bt leaves it out of a frame at a line's start (the probed frame at the
    function's first instruction, which the frame filter names: gdb would say pc - 1's)."""
    if frame[1] is not None:
        return frame[1]
    session.gdb.execute(f"frame {frame[0]}")
    return int(session.gdb.execute("p/x $pc").split()[-1], 16)


def test_bt_in_the_pre_handler_reaches_do_accept(session):
    """In the lab module's pre-handler: bt names the BRK's entry frame as the guest does,
    labels it and the probed frame with a place the guest lists, and goes on past the probed
    function (its return address taken by the kretprobe) to inet_accept and do_accept.
    gdb alone stops at the first signed return address."""
    offsets = probed_offsets(session)
    accept = kallsyms(session, "inet_csk_accept")
    returns_at = kallsyms(session, "inet_accept") + accept_return_offset(session)
    entry_code = kallsyms_near(session, "el1h_64_sync")
    seen = {}

    def on_stop():
        bt = session.gdb.execute("bt 40")
        assert "Python Exception" not in bt and "Traceback" not in bt, bt
        shown = frames(bt)
        names = [name for _level, _pc, name, _rest in shown]
        entry = next(f for f in shown if "<kprobe: brk on inet_csk_accept+" in f[3])
        offset = int(re.search(r"<kprobe: brk on inet_csk_accept\+(0x[0-9a-f]+)>",
                               entry[3]).group(1), 16)
        assert offset in offsets, (offset, offsets, bt)
        assert entry[2] == name_at(entry_code, entry[1]) == "el1h_64_sync", bt
        probed = next(f for f in shown if f[3].startswith(" [probed at "))
        assert probed[2] == "inet_csk_accept" and pc_of(session, probed) == accept + offset, bt
        assert f"[probed at inet_csk_accept+{offset:#x}]" in probed[3], bt
        after = names[names.index("inet_csk_accept"):]
        assert after[1] == "inet_accept" and "do_accept" in after, bt
        caller = next(f for f in shown if f[2] == "inet_accept")
        assert caller[1] == returns_at and KRETPROBE_LABEL in caller[3], (hex(returns_at), bt)
        alone = without_kp_unwind(session, "bt 40")
        # gdb alone puts the caller of the first kernel frame that saved its return
        # address at the signed pc (no pauth registers from QEMU 7.2's gdbstub) and stops
        assert "<kprobe" not in alone and "[probed" not in alone and "do_accept" not in alone, alone
        assert re.search(r"^#\d+\s+0x(?!ffff)[0-9a-f]{16} in \?\? \(\)$", alone, re.M), alone
        seen["done"] = True

    at_stop(session, "handler_pre", on_stop)
    assert seen


def test_kretprobe_caller(session):
    """Past the module's second probe (inet_csk_accept+0x20, after the prologue saved the
    return address the kretprobe took): the caller is inet_accept at the return address the
    guest's own stack trace gives, labelled as restored; gdb alone has no inet_accept."""
    returns_at = kallsyms(session, "inet_accept") + accept_return_offset(session)
    after_probe = max(probed_offsets(session)) + 4

    def on_stop():
        shown = frames(session.gdb.execute("bt 6"))
        assert shown[0][2] == "inet_csk_accept", shown
        assert shown[1][1:3] == (returns_at, "inet_accept") and KRETPROBE_LABEL in shown[1][3], \
            (hex(returns_at), shown)
        alone = without_kp_unwind(session, "bt 6")
        assert "inet_accept" not in alone and "kretprobe" not in alone, alone

    at_stop(session, f"*inet_csk_accept+{after_probe}", on_stop)


def test_kp_where(session):
    offsets = probed_offsets(session)

    def on_stop():
        out = session.gdb.execute("kp-where")
        match = re.search(r"cpu\d+ is handling a kprobe: inet_csk_accept\+(0x[0-9a-f]+) ", out)
        assert match and int(match.group(1), 16) in offsets, out
        assert "stage: pre-handler" in out and ": brk entry" in out, out
        assert re.search(r"frame #\d+: el1h_64_sync <kprobe: brk on inet_csk_accept\+", out), out
        assert re.search(r"frame #\d+: inet_csk_accept \[probed at", out), out
        assert "??" not in out, out

    at_stop(session, "handler_pre", on_stop)


def test_kp_where_outside_kprobe_handling(session):
    def on_stop():
        out = session.gdb.execute("kp-where")
        assert re.search(r"^cpu\d+ is not handling a kprobe", out, re.M), out

    at_stop(session, "*inet_accept", on_stop)       # its entry nop: no probe there


def test_bt_in_the_kretprobe_return_handler(session):
    """In the lab kretprobe's return handler: the trampoline's frame (6.1: __kretprobe_trampoline
    saved a pt_regs and called the handler; 6.12: its BRK trapped into el1h_64_sync) says where
    the function returns to, the guest's own return address into inet_accept, and bt goes on
    to do_accept; gdb alone does not. kp-where names the stage."""
    returns_at = kallsyms(session, "inet_accept") + accept_return_offset(session)
    offset = returns_at - kallsyms(session, "inet_accept")

    def on_stop():
        bt = session.gdb.execute("bt 30")
        shown = frames(bt)
        trampoline = next(f for f in shown if "<kretprobe: returns to inet_accept+" in f[3])
        assert f"<kretprobe: returns to inet_accept+{offset:#x}>" in trampoline[3], bt
        caller = shown[shown.index(trampoline) + 1]
        assert caller[1:3] == (returns_at, "inet_accept"), (hex(returns_at), bt)
        assert "do_accept" in [name for _level, _pc, name, _rest in shown], bt
        where = session.gdb.execute("kp-where")
        assert "stage: kretprobe return handler (kretprobe_instance)" in where, where
        alone = without_kp_unwind(session, "bt 30")
        assert "do_accept" not in alone and "<kretprobe" not in alone, alone

    at_stop(session, "ret_handler", on_stop)
