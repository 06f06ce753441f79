"""kp-locals at inet_accept after its prologue: DWARF placement, values equal to gdb's own,
and a kprobe_events line whose recorded values equal them for the same call."""
from __future__ import annotations

import re

from qemu.lab import ACCEPT_TRAFFIC as TRAFFIC

TRACING = "/sys/kernel/tracing"


def place_after_prologue(session) -> str:
    """The first place after inet_accept's prologue that is actually executed (not inside
    the optimized probe's jmp)."""
    static = session.gdb_cmd("kp-locals inet_accept")
    prologue_end = int(re.search(r"the prologue ends at \+(0x[0-9a-f]+)", static).group(1), 16)
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    inner = re.search(r"  k  inet_accept\+(0x[0-9a-f]+)    \[OPTIMIZED\]", listing).group(1)
    shown = session.gdb_cmd(f"kp-show inet_accept+{inner}")
    copied = int(re.search(r"; (\d+) bytes of original instructions", shown).group(1))
    return f"inet_accept+{max(prologue_end, int(inner, 16) + copied):#x}"


def stop_there(session, place: str) -> str:
    session.stop()
    session.gdb.child.sendline(f"kp-locals {place} --break")
    token = session.lab.guest.send(TRAFFIC)
    out = session.gdb.wait_prompt(timeout=120)
    session.running = False
    return out, token


def rows(out: str) -> dict[str, tuple[str, str, str]]:
    found = {}
    for line in out.splitlines():
        match = re.match(r"  (param|local)\s+(\w+)\s+(.{26})\s(.*)$", line)
        if match:
            found[match.group(2)] = (match.group(1), match.group(3).strip(), match.group(4))
    return found


def test_locals_and_their_kprobe_events_line(session):
    place = place_after_prologue(session)
    static = session.gdb_cmd(f"kp-locals {place}")
    assert "values: not stopped here" in static
    table = rows(static)
    # 6.12 folded flags and kern into `struct proto_accept_arg *arg`
    params = ("sock", "newsock", "flags", "kern") if session.lab.kernel_name.startswith("6.1") \
        and not session.lab.kernel_name.startswith("6.12") else ("sock", "newsock", "arg")
    for name in params:
        assert table[name][0] == "param", name
    fetch = re.search(r"^kprobe_events: (p:kp_locals .*)$", static, re.M).group(1)
    assert all(f" {name}=" in fetch for name in params), fetch
    session.guest(f"echo '{fetch}' >> {TRACING}/kprobe_events")
    session.guest(f"echo 1 > {TRACING}/events/kprobes/kp_locals/enable; echo > {TRACING}/trace")
    try:
        out, token = stop_there(session, place)
        assert f"{place} (" in out and "values: frame #0" in out, out
        ours = {name: value[2].split()[-1] for name, value in rows(out).items()}
        gdb_args = dict(line.split(" = ", 1) for line in
                        session.gdb.execute("info args").strip().splitlines())
        assert set(params) <= set(gdb_args)
        for name in gdb_args:
            assert ours[name] == gdb_args[name], name
        session.resume()
        session.lab.guest.wait(token)
        trace = session.guest(f"grep kp_locals: {TRACING}/trace | tail -1")
        recorded = dict(re.findall(r"(\w+)=(\S+)", trace.split(")", 1)[1]))
        assert recorded, trace
        for name, value in recorded.items():
            expected = {"false": "0", "true": "1"}.get(ours[name], ours[name])
            assert int(value, 0) == int(expected, 0), (name, value, expected)
    finally:
        session.guest(f"echo 0 > {TRACING}/events/kprobes/kp_locals/enable; "
                      f"echo '-:kprobes/kp_locals' >> {TRACING}/kprobe_events")


def test_placement_matches_the_disassembly(session):
    out = session.gdb_cmd(f"kp-locals {place_after_prologue(session)}")
    facts = re.search(r"frame pointer (yes|no)", out).group(1)
    if session.lab.kernel_name.endswith("-fp"):
        assert facts == "yes"
        assert re.search(r"[+-]0x[0-9a-f]+\(%rbp\)", out), "locals on the stack are %rbp slots"
    else:
        assert facts == "no" and "CFA = %rsp+" in out


def test_bad_places(session):
    for command, expected in [
        ("kp-locals inet_accept+0xfffff", "re:offset 0xfffff is beyond the end of inet_accept "),
        ("kp-locals nosuch_fn", "no symbol `nosuch_fn` in the kernel"),
        ("kp-locals inet_accept+1", "re:inet_accept\\+0x1 is not an instruction boundary"),
        ("kp-locals inet_accept --frame 999", "no frame 999 in the current backtrace"),
    ]:
        out = session.gdb_cmd(command).strip()
        assert len(out.splitlines()) == 1, out
        if expected.startswith("re:"):
            assert re.match(expected[3:], out), out
        else:
            assert out.startswith(expected), out


def test_types_are_named_in_c_whatever_the_frame_language(session):
    """Stopped in an assembler stub, gdb's `auto` language is asm, which drops the struct tag
    ("socket *"); kp-locals must print C and leave the user's language setting as it was."""
    session.gdb_cmd("set language asm")
    try:
        out = session.gdb_cmd("kp-locals inet_accept")
        after = session.gdb_cmd("show language")
    finally:
        session.gdb_cmd("set language auto")
    assert "struct socket *" in out, out
    assert '"asm"' in after, after
