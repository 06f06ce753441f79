"""kp-show on each mechanism of the default scenario, checked against what the guest says."""
from __future__ import annotations

import re

import pytest

from qemu.lab import ACCEPT_TRAFFIC as TRAFFIC

LIST = "/sys/kernel/debug/kprobes/list"
TRACING = "/sys/kernel/tracing"


def debugfs_line(session, needle: str) -> str:
    lines = [line for line in session.guest(f"cat {LIST}").splitlines() if needle in line]
    assert lines, f"{needle} not in {LIST}"
    return lines[0]


def planted(session) -> dict[int, int]:
    """offset → address of the lab module's kprobes, from its own printk."""
    dmesg = session.guest("dmesg | grep 'kp_lab_kprobe: planted kprobe'")
    return {int(off, 16): int(addr, 16) for addr, off in
            re.findall(r"planted kprobe at ([0-9a-f]+) \(inet_csk_accept\+0x([0-9a-f]+)\)", dmesg)}


def show(session, place: str) -> str:
    out = session.gdb_cmd(f"kp-show {place}")
    assert "Traceback" not in out and "internal error" not in out, out
    return out


def section(out: str, title: str) -> list[str]:
    """The indented lines under a heading line that starts with `title`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("      "):
            break
        body.append(line.strip())
    return body


def insn(line: str) -> tuple[int, bytes, str]:
    address, rest = line.split(":", 1)
    raw, asm = rest[:26].split(), rest[26:].strip()
    return int(address, 16), bytes(int(b, 16) for b in raw), asm


def test_int3_probe(session):
    offset, address = max(planted(session).items())
    assert offset > 0
    line = debugfs_line(session, f"{address:016x}")
    assert "[OPTIMIZED]" not in line and "[FTRACE]" not in line
    out = show(session, f"inet_csk_accept+{offset}")
    assert "mechanism: int3:" in out
    live = insn(section(out, "live memory:")[0])
    original = insn(section(out, "vmlinux file:")[0])
    assert live[1] == b"\xcc" and live[2] == "int3"
    saved = int(re.search(r"saved opcode \(kprobe.opcode\): (0x[0-9a-f]+)", out).group(1), 16)
    assert saved == original[1][0], "kprobe.opcode holds the byte int3 replaced"
    copy = insn(section(out, "single-step copy")[0])
    assert (copy[1], copy[2]) == (original[1], original[2]), "ainsn.insn is a copy of it"
    assert "owner: module kp_lab_kprobe" in out
    assert "pre_handler   " in out and "<handler_pre [kp_lab_kprobe]>" in out
    assert "<handler_post [kp_lab_kprobe]>" in out


def test_optimized_probe(session):
    line = debugfs_line(session, "inet_accept+0x")
    assert line.endswith("[OPTIMIZED]")
    address = int(line.split()[0], 16)
    out = show(session, f"{address:#x}")
    assert "mechanism: optprobe jmp:" in out
    live = insn(section(out, "live memory:")[0])
    assert live[1][0] == 0xE9
    detour = int(re.search(r"optinsn.insn @ (0x[0-9a-f]+); (\d+) bytes", out).group(1), 16)
    copied = int(re.search(r"optinsn.insn @ 0x[0-9a-f]+; (\d+) bytes", out).group(1))
    assert f"-> {detour:#x}" in out or live[2].endswith(f"{detour:#x}")
    code = [insn(x) for x in section(out, "optprobe detour buffer")]
    assert code[0][0] == detour
    assert any("optimized_callback" in c[2] for c in code)
    jump_back = int(re.search(r"jmp\s+(0x[0-9a-f]+)", code[-1][2]).group(1), 16)
    assert jump_back == address + copied, "the detour ends by jumping back behind the copied bytes"


def test_ftrace_probe(session):
    line = debugfs_line(session, "do_sys_openat2+0x")
    assert line.endswith("[FTRACE]")
    out = show(session, line.split()[2])
    assert "mechanism: ftrace call:" in out
    assert "__fentry__" in section(out, "vmlinux file:")[0]
    assert insn(section(out, "live memory:")[0])[1][0] == 0xE8
    assert "single-step copy (ainsn.insn): none" in out
    assert "owner: trace event kprobes/kp_entry" in out


def test_disabled_probe(session):
    line = debugfs_line(session, "vfs_fsync+0x")
    assert "[DISABLED]" in line
    out = show(session, line.split()[2])
    assert "mechanism: not patched: the probe is disabled" in out
    assert re.search(r"flags\s+0x[0-9a-f]+\s+\(DISABLED\|", out)


def test_aggregate_and_kprobe_profile_hits(session):
    session.guest("stat / > /dev/null; stat /tmp > /dev/null")
    profile = session.guest(f"cat {TRACING}/kprobe_profile")
    hits = {m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"^\s+(\S+)\s+(\d+)\s+(\d+)$", profile, re.M)}
    out = show(session, "vfs_statx")
    assert re.search(r"vfs_statx\+0x[04] \(0x[0-9a-f]+\): aggregate of 2 probes", out)
    for event in ("kp_aggr_a", "kp_aggr_b"):
        shown = re.search(rf"trace event kprobes/{event}: struct trace_kprobe @ 0x[0-9a-f]+, "
                          rf"hits (\d+), misses (\d+)", out)
        assert shown, event
        assert (int(shown.group(1)), int(shown.group(2))) == hits[event]
        assert hits[event][0] >= 2


def test_module_kretprobe(session):
    dmesg = session.guest("dmesg | grep 'kp_lab_kretprobe: planted'")
    address, maxactive = re.search(r"planted return probe at inet_csk_accept: ([0-9a-f]+) "
                                   r"maxactive=(\d+)", dmesg).groups()
    session.guest(TRAFFIC)
    out = show(session, f"0x{address}")
    block = out.split("return probe (kretprobe), owner: module kp_lab_kretprobe")[1]
    assert f"maxactive      {maxactive}" in block
    assert "handler        ret_handler [kp_lab_kretprobe]" in block
    assert "entry_handler  entry_handler [kp_lab_kretprobe]" in block
    assert f"instances: 0 in use, {maxactive} free of {maxactive}" in block
    assert "nmissed        0" in block


def test_trace_event_kretprobe(session):
    events = session.guest(f"cat {TRACING}/kprobe_events")
    maxactive = re.search(r"^r(\d+):kprobes/kp_ret ", events, re.M).group(1)
    out = show(session, debugfs_line(session, "ksys_write+0x").split()[2])
    block = out.split("return probe (kretprobe), owner: trace event kprobes/kp_ret")[1]
    assert f"maxactive      {maxactive}" in block
    assert "handler        kretprobe_dispatcher" in block
    assert re.search(r"instances: \d+ in use, \d+ free of " + maxactive, block)


def test_stopped_in_the_pre_handler(session):
    shown = show(session, "inet_csk_accept")
    handler = re.search(r"pre_handler\s+(0x[0-9a-f]+)\s+<handler_pre ", shown).group(1)
    session.stop()
    # by name: the module's DWARF (handler_pre is in .kprobes.text) is placed where the
    # kernel loaded each section, so gdb's address is kallsyms' and the source line is right
    made = session.gdb.execute("break handler_pre")
    assert re.search(rf"Breakpoint \d+ at {handler}: file .*kp_lab_kprobe\.c, line \d+", made), \
        (made, handler)
    session.resume()
    token = session.lab.guest.send(TRAFFIC)
    hit = session.gdb.wait_prompt(timeout=60)
    session.running = False
    assert re.search(r"handler_pre \(p=0x[0-9a-f]+ <kp>, regs=0x[0-9a-f]+\) at .*kp_lab_kprobe\.c", hit), hit
    try:
        out = show(session, "inet_csk_accept")
        handling = [line for line in out.splitlines() if "<- this probe" in line]
        assert len(handling) == 1 and "KPROBE_HIT_ACTIVE" in handling[0], out
    finally:
        session.gdb.execute("delete")
        session.resume()
        session.lab.guest.wait(token)


def listed_in(session, function: str) -> list[tuple[int, int, str]]:
    """(address, offset, kind) of the debugfs list's probes in `function`, in address order
    (debugfs order within an address)."""
    found = re.findall(rf"^([0-9a-f]+)  ([kr])  {function}\+(0x[0-9a-f]+) ", session.stable_list(),
                       re.M)
    rows = [(int(address, 16), int(offset, 16), kind) for address, kind, offset in found]
    return sorted(rows, key=lambda row: row[0])


def in_words(rows: list[tuple[int, int, str]]) -> str:
    """`+0x0 (kretprobe, kprobe) and +0x7 (kprobe)`, from debugfs rows."""
    kinds: dict[int, list[str]] = {}
    for _, offset, kind in rows:
        kinds.setdefault(offset, []).append("kretprobe" if kind == "r" else "kprobe")
    parts = [f"+{offset:#x} ({', '.join(names)})" for offset, names in kinds.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def test_function_shows_every_probe_in_it(session):
    """The issue's case: inet_csk_accept has the lab's probes at its entry and a few bytes in;
    kp-show of the function shows both places, in address order, with the guest's offsets."""
    rows = listed_in(session, "inet_csk_accept")
    assert len({address for address, _, _ in rows}) >= 2, rows
    out = show(session, "inet_csk_accept")
    assert out.splitlines()[0] == (f"inet_csk_accept: {len(rows)} probes in the function, at "
                                   f"{in_words(rows)}")
    headings = re.findall(r"^inet_csk_accept\+(0x[0-9a-f]+) \((0x[0-9a-f]+)\): "
                          r"(?:aggregate of )?(\d+) probes?$", out, re.M)
    expected = {}
    for address, offset, _ in rows:
        expected[(offset, address)] = expected.get((offset, address), 0) + 1
    assert [(int(offset, 16), int(address, 16), int(count)) for offset, address, count
            in headings] == [(offset, address, count) for (offset, address), count
                             in expected.items()]
    assert out.count("per-CPU kprobe state") == len(headings)
    assert "also in" not in out


def test_one_place_names_the_other_probes_of_its_function(session):
    rows = listed_in(session, "inet_csk_accept")
    for address, offset, _ in rows[:1] + rows[-1:]:
        others = [row for row in rows if row[0] != address]
        for place in (f"inet_csk_accept+{offset:#x}", f"{address:#x}"):
            out = show(session, place).splitlines()
            assert out[0].startswith(f"inet_csk_accept+{offset:#x} ({address:#x}): "), out[0]
            assert out[-1] == (f"also in inet_csk_accept: {in_words(others)}; kp-show "
                               "inet_csk_accept shows every probe in it")
    # a function whose probes all sit at one place names nothing else
    assert "also in" not in show(session, "vfs_statx+0")


@pytest.mark.parametrize("place, error", [
    ("nosuch_function", "no symbol `nosuch_function` in the kernel; check the spelling (tab "
                        "completes symbols) or name a module symbol as module:nosuch_function"),
    ("vfs_read+0x1", "no kprobe is registered at"),
    ("vfs_read", "no kprobe is registered in vfs_read (0x"),
    ("kp_lab_kprobe:kp_lab_target", "no kprobe is registered in kp_lab_target [kp_lab_kprobe] "
                                    "(0x"),
    ("#99", "no line 99 in the last kp-list"),
    ("inet_accept+0xfffff", "offset 0xfffff is beyond the end of inet_accept"),
    ("inet_accept+zz", "bad offset `zz` in `inet_accept+zz`"),
])
def test_bad_places_are_one_line(session, place, error):
    session.gdb_cmd("kp-list -n")
    out = session.gdb_cmd(f"kp-show {place}").strip()
    assert len(out.splitlines()) == 1 and out.startswith(error), out
