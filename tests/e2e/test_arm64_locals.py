"""kp-locals and kp-sim on arm64 (`--kernels 6.1-arm64,6.12-arm64`), against the guest.

kp-locals at inet_accept past its prologue: each parameter and local in a register (%x0..%x30),
an x29 frame-record slot (`-12(%x29)`) or an sp slot; the values equal a plain gdb
breakpoint's `info args` / `info locals` there, and the kprobe_events line it emits, registered
in the guest, records the same values for the same call. kp-sim at inet_csk_accept (the lab
module's kprobe, a live `brk #0x4`): the registers a pre_handler gets equal what the module's
handler_pre printed (qemu/modules/kp_lab_regs.h: pc x0..x3 sp pstate).
"""
from __future__ import annotations

import random
import re

import pytest

from qemu import kernels, oracle, probe_module
from qemu.lab import ACCEPT_TRAFFIC as TRAFFIC
from test_kp_locals import rows

TRACING = "/sys/kernel/tracing"
NO_BREAKPOINTS = "No breakpoints"


@pytest.fixture(autouse=True)
def _arm64_only(kernel):
    if kernels.arch_of(kernel) != "arm64":
        pytest.skip(f"{kernel} is not an arm64 kernel (this file runs on 6.1-arm64, 6.12-arm64)")


def prologue_end(session) -> int:
    static = session.gdb_cmd("kp-locals inet_accept")
    return int(re.search(r"the prologue ends at \+(0x[0-9a-f]+)", static).group(1), 16)


def probed_offsets(session, function: str) -> set[int]:
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    return {int(m, 16) for m in re.findall(rf"  k  {function}\+(0x[0-9a-f]+)", listing)}


def place_after_prologue(session) -> str:
    """The first instruction past inet_accept's prologue that holds no probe of the
    scenario's (kp_inner's brk is a few instructions earlier or later)."""
    offset, taken = prologue_end(session), probed_offsets(session, "inet_accept")
    while offset in taken:
        offset += 4
    return f"inet_accept+{offset:#x}"


def gdb_values(session, command: str) -> dict[str, str]:
    text = session.gdb.execute(command).strip()
    return dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)


def same(ours: str, gdbs: str) -> bool:
    if gdbs.startswith("<"):                    # <optimized out>: ours says so too
        return ours.startswith("<")
    return ours == gdbs


def check_place(session, place: str) -> dict[str, str]:
    """Register kp-locals' line for `place`, stop there with kp-locals --break during an
    accept, compare with gdb's info args/locals, then with what the kprobe recorded."""
    static = session.gdb_cmd(f"kp-locals {place}")
    assert "values: not stopped here" in static and "Traceback" not in static, static
    fetch = re.search(r"^kprobe_events: (p:kp_locals .*)$", static, re.M).group(1)
    write = session.guest(f"echo '{fetch}' >> {TRACING}/kprobe_events", check=False)
    assert "rror" not in write, (fetch, write)
    session.guest(f"echo 1 > {TRACING}/events/kprobes/kp_locals/enable; echo > {TRACING}/trace")
    try:
        session.stop()
        session.gdb.child.sendline(f"kp-locals {place} --break")
        token = session.lab.guest.send(TRAFFIC)
        out = session.gdb.wait_prompt(timeout=180)
        session.running = False
        assert f"{place} (" in out and "values: frame #0" in out, out
        ours = {name: value[2].split()[-1] if not value[2].rstrip().endswith(">")
                else value[2][value[2].index("<"):] for name, value in rows(out).items()}
        gdb_args = gdb_values(session, "info args")
        gdb_locals = gdb_values(session, "info locals")
        assert gdb_args, out
        for name, value in {**gdb_args, **gdb_locals}.items():
            assert same(ours[name], value), (place, name, ours[name], value)
        session.resume()
        session.lab.guest.wait(token)
        trace = session.guest(f"grep kp_locals: {TRACING}/trace | tail -1")
        recorded = dict(re.findall(r"(\w+)=(\S+)", trace.split(")", 1)[1])) if trace else {}
        fetched = re.findall(r" (\w+)=", fetch)
        assert set(recorded) == set(fetched), (fetch, trace)
        for name, value in recorded.items():
            expected = {"false": "0", "true": "1"}.get(ours[name], ours[name])
            assert int(value, 0) == int(expected, 0), (place, name, value, expected)
        return {"fetch": fetch, "out": out}
    finally:
        session.guest(f"echo 0 > {TRACING}/events/kprobes/kp_locals/enable; "
                      f"echo '-:kprobes/kp_locals' >> {TRACING}/kprobe_events", check=False)


def test_kp_locals_after_the_prologue(session):
    place = place_after_prologue(session)
    checked = check_place(session, place)
    fetch, out = checked["fetch"], checked["out"]
    # the parameters in callee-saved or argument registers, err in the frame record's frame
    assert re.search(r" sock=%x\d+:x64", fetch) and re.search(r" newsock=%x\d+:x64", fetch)
    assert re.search(r"frame pointer yes: CFA = %x29\+0x[0-9a-f]+", out), out
    if "err" in rows(out):          # 6.1: `int err` lives in the frame; 6.12 has none there
        assert re.search(r" err=-?\d+\(%x29\):s32", fetch), fetch
        assert re.search(r"  local  err .* -0x[0-9a-f]+\(%x29\)  \[CFA-0x[0-9a-f]+\]", out), out


def test_kp_locals_at_the_entry_is_sp_based(session):
    """At the function's first DWARF instruction nothing is saved: CFA = %sp, the arguments in
    x0..x3, err not allocated yet (below %sp)."""
    out = session.gdb_cmd("kp-locals inet_accept+0x8")
    assert "frame pointer no: CFA = %sp+0x0" in out, out
    fetch = re.search(r"^kprobe_events: (p:kp_locals .*)$", out, re.M).group(1)
    assert " sock=%x0:x64 newsock=%x1:x64" in fetch, fetch
    if "err" in rows(out):
        assert "err (CFA-0x" in out and "below %sp, not allocated yet" in out, out


def test_kp_locals_sp_slot_before_the_frame_record(session):
    """Between `sub sp, sp, #N` and `add x29, sp, #K` the frame is allocated but x29 is still
    the caller's: a stack local is an sp slot (`+4(%sp)`), and the guest records it so."""
    end = prologue_end(session)
    for offset in range(8, end, 4):
        out = session.gdb_cmd(f"kp-locals inet_accept+{offset:#x}")
        if re.search(r"^kprobe_events: .*\(%sp\)", out, re.M):
            break
    else:
        pytest.skip(f"{session.lab.kernel_name}: inet_accept keeps no local on the stack")
    assert re.search(r"frame pointer no: CFA = %sp\+0x[1-9a-f]", out), out
    check_place(session, f"inet_accept+{offset:#x}")


def seeded_places(session, count: int = 3) -> list[str]:
    """Instruction boundaries of inet_accept past its prologue and before its first call,
    picked with qemu/oracle.py's seed from the vmlinux: code every accept runs."""
    functions = oracle.SymbolMap.read(session.lab.files.system_map).text_functions()
    start = {name: addr for name, addr, _ in functions}["inet_accept"]
    listing = session.gdb_cmd(f"x/40i {start:#x}")
    first_call = min(int(m, 16) - start for m in
                     re.findall(r"(0x[0-9a-f]+) <inet_accept\+\d+>:\s+blr?\s", listing))
    taken = probed_offsets(session, "inet_accept")
    candidates = [offset for offset in range(prologue_end(session), first_call + 4, 4)
                  if offset not in taken]
    rng = random.Random(oracle.SEED)
    return [f"inet_accept+{offset:#x}" for offset in
            sorted(rng.sample(candidates, min(count, len(candidates))))]


def test_kp_locals_on_seeded_places(session):
    for place in seeded_places(session):
        check_place(session, place)


def test_kp_sim_matches_the_modules_pre_handler(session):
    session.stop()
    session.gdb.child.sendline("kp-sim inet_csk_accept")
    session.gdb.child.expect_exact("waiting for a hit")
    intro = session.gdb.child.before.replace("\r\n", "\n")
    token = session.lab.guest.send(TRAFFIC)
    out = intro + session.gdb.wait_prompt(timeout=180)
    session.resume()
    session.lab.guest.wait(token)
    assert "Traceback" not in out and "internal error" not in out, out
    assert re.search(r"live code here is `brk\s+#0x4`", out) and "a real kprobe's brk" in out, out
    regs = {m.group(1): (int(m.group(2), 16), int(m.group(3), 16)) for m in
            re.finditer(r"^  (\w+)\s+0x([0-9a-f]{16})\s+0x([0-9a-f]{16})", out, re.M)}
    dmesg = session.guest("dmesg")
    pre = re.findall(r"I am Handler Pre: <inet_csk_accept\+0x0> p->addr=0x(\w+) pc=0x(\w+) "
                     r"x0=0x(\w+) x1=0x(\w+) x2=0x(\w+) x3=0x(\w+) sp=0x(\w+) pstate=0x(\w+)",
                     dmesg)
    assert pre, (out, dmesg[-2000:])
    pre = pre[-1]
    module = dict(zip(("addr", "pc", "x0", "x1", "x2", "x3", "sp", "pstate"),
                      (int(v, 16) for v in pre)))
    for name in ("x0", "x1", "x2", "x3", "sp"):
        assert regs[name][0] == module[name], (name, regs[name], module[name])
    assert regs["pc"][0] == module["pc"] == module["addr"], \
        "kp-sim's pre pc is what the module's pre_handler printed: the brk's own address"
    assert "post pc" in out and "is the next instruction" in out, out
    assert session.gdb_cmd("maint info breakpoints").strip().startswith(NO_BREAKPOINTS)
    assert session.guest("echo still-here").strip() == "still-here"


def test_kp_sim_steps_a_plain_instruction(session):
    """Where no probe is armed the live code is the vmlinux's: kp-sim steps it (stepi)."""
    place = place_after_prologue(session)
    session.stop()
    session.gdb.child.sendline(f"kp-sim {place} --regs x0,x1,sp")
    session.gdb.child.expect_exact("waiting for a hit")
    token = session.lab.guest.send(TRAFFIC)
    out = session.gdb.wait_prompt(timeout=180)
    session.resume()
    session.lab.guest.wait(token)
    assert "(stepi)" in out and "is the next instruction" in out, out
    assert session.gdb_cmd("maint info breakpoints").strip().startswith(NO_BREAKPOINTS)


def test_generated_module_prints_gdbs_values(session, tmp_path):
    """kp-locals --module on arm64: regs->regs[N] and regs->regs[29] - K, cross-built, loaded;
    what its pre_handler prints equals gdb's values at a breakpoint on the same call."""
    place = place_after_prologue(session)
    directory = tmp_path / session.lab.kernel_name
    out = session.gdb_cmd(f"kp-locals {place} --module {directory}")
    assert out.startswith("wrote "), out
    source = next(directory.glob("*.c")).read_text()
    assert "regs->regs[" in source and "regs->bp" not in source, source
    ko, log = probe_module.build(session.lab.files, directory)
    assert "warning:" not in log, log
    name = ko.stem
    probe_module.load(session.guest, probe_module.push(session.guest, ko))
    try:
        session.stop()
        session.gdb.child.sendline(f"kp-locals {place} --break")
        token = session.lab.guest.send(TRAFFIC)
        stopped = session.gdb.wait_prompt(timeout=180)
        session.running = False
        assert "values: frame #0" in stopped, stopped
        ours = {name: value[2].split()[-1] for name, value in rows(stopped).items()}
        session.resume()
        session.lab.guest.wait(token)
        lines = probe_module.printed(session.guest, name)
        assert lines, f"{name} printed nothing"
        theirs = probe_module.parse_line(lines[-1])
        assert theirs, lines
        for label, value in theirs.items():
            mine = {"false": "0", "true": "1"}.get(ours[label], ours[label])
            hexadecimal = re.search(rf"\b{label}=%px", source)
            assert int(value, 16 if hexadecimal else 10) == int(mine, 0), (label, value, mine)
    finally:
        probe_module.unload(session.guest, name)


def test_kp_sim_ret_matches_the_kretprobe(session):
    """--ret on arm64: the return address is x30 at the entry's brk, the caller gets its own
    sp back; the return value equals what the lab's kretprobe printed for the call."""
    session.stop()
    session.gdb.child.sendline("kp-sim --ret inet_csk_accept")
    session.gdb.child.expect_exact("waiting for a hit")
    token = session.lab.guest.send(TRAFFIC)
    out = session.gdb.wait_prompt(timeout=180)
    session.resume()
    session.lab.guest.wait(token)
    assert "Traceback" not in out and "internal error" not in out, out
    ours = int(re.search(r"returned (0x[0-9a-f]+)", out).group(1), 16)
    module = re.findall(r"kp_lab_kretprobe: inet_csk_accept returned 0x(\w+) and took (\d+) ns",
                        session.guest("dmesg"))
    assert module, out
    assert ours == int(module[-1][0], 16), (out, module[-1])
    assert re.search(r"at entry: sp=0x[0-9a-f]+ x0=0x[0-9a-f]+ x1=", out), out
    returned_to = int(re.search(r" to (0x[0-9a-f]+),", out).group(1), 16)
    assert "do_accept" in session.gdb_cmd(f"info symbol {returned_to:#x}") or \
        "inet_accept" in session.gdb_cmd(f"info symbol {returned_to:#x}"), out
    assert session.gdb_cmd("maint info breakpoints").strip().startswith(NO_BREAKPOINTS)


def test_kp_sim_refuses_a_probed_branch(session):
    """A kprobe on a `bl` is simulated (simulate_b_bl): the kernel resumes at the call's
    target, not the next instruction, so kp-sim says it has no post view there."""
    start = {name: addr for name, addr, _ in
             oracle.SymbolMap.read(session.lab.files.system_map).text_functions()}["inet_accept"]
    listing = session.gdb_cmd(f"x/48i {start:#x}")
    offset = min(int(m, 16) - start for m in
                 re.findall(r"(0x[0-9a-f]+) <inet_accept\+\d+>:\s+bl\s", listing))
    session.guest(f"echo 'p:kprobes/kp_bl inet_accept+{offset}' >> {TRACING}/kprobe_events")
    session.guest(f"echo 1 > {TRACING}/events/kprobes/kp_bl/enable")
    try:
        out = session.gdb_cmd(f"kp-sim inet_accept+{offset:#x}").strip()
        assert len(out.splitlines()) == 1 and "simulate_b_bl" in out, out
        assert out.startswith(f"kp-sim has no post view at inet_accept+{offset:#x}"), out
    finally:
        session.guest(f"echo 0 > {TRACING}/events/kprobes/kp_bl/enable; "
                      f"echo '-:kprobes/kp_bl' >> {TRACING}/kprobe_events", check=False)
    assert session.gdb_cmd("maint info breakpoints").strip().startswith(NO_BREAKPOINTS)
