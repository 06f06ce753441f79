"""kp-sim against the lab module's own handlers, on the same calls."""
from __future__ import annotations

import re
import time

from qemu.lab import ACCEPT_TRAFFIC as TRAFFIC

NO_BREAKPOINTS = "No breakpoints"          # gdb 18 goes on: ", watchpoints, tracepoints, ..."


def sim_with_traffic(session, command: str) -> str:
    """Start a kp-sim run, make the guest accept a connection, return kp-sim's output."""
    session.stop()
    session.gdb.child.sendline(command)
    session.gdb.child.expect_exact("waiting for a hit")
    intro = session.gdb.child.before.replace("\r\n", "\n")
    token = session.lab.guest.send(TRAFFIC)
    out = intro + session.gdb.wait_prompt(timeout=120)
    session.resume()
    session.lab.guest.wait(token)
    assert "Traceback" not in out and "internal error" not in out, out
    return out


def regs_of(out: str) -> dict[str, tuple[int, int]]:
    return {m.group(1): (int(m.group(2), 16), int(m.group(3), 16)) for m in
            re.finditer(r"^  (\w+)\s+0x([0-9a-f]{16})\s+0x([0-9a-f]{16})", out, re.M)}


def assert_clean(session) -> None:
    assert session.gdb_cmd("maint info breakpoints").strip().startswith(NO_BREAKPOINTS)
    assert session.guest("echo still-here").strip() == "still-here"


def test_pre_and_post_match_the_module(session):
    out = sim_with_traffic(session, "kp-sim inet_csk_accept")
    regs = regs_of(out)
    pre = re.findall(r"I am Handler Pre: <inet_csk_accept\+0x0> p->addr=0x(\w+) ip=0x(\w+) "
                     r"ax=0x(\w+) di=0x(\w+) si=0x(\w+) dx=0x(\w+) cx=0x(\w+) sp=0x(\w+) "
                     r"flags=0x(\w+)", session.guest("dmesg"))[-1]
    module = dict(zip(("addr", "ip", "ax", "di", "si", "dx", "cx", "sp", "flags"),
                      (int(v, 16) for v in pre)))
    for name in ("di", "si", "dx", "cx", "sp", "ax"):
        assert regs[name][0] == module[name], name
    assert regs["ip"][0] == module["ip"] == module["addr"] + 1, \
        "kp-sim's pre ip is what the module's pre_handler printed: past the int3"
    assert "post ip" in out and "is the next instruction" in out
    assert_clean(session)


def test_inside_a_function(session):
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    inner = re.search(r"  k  inet_accept\+(0x[0-9a-f]+)    \[OPTIMIZED\]", listing).group(1)
    out = sim_with_traffic(session, f"kp-sim inet_accept+{inner}")
    assert "an optimized kprobe (jmp to its detour buffer" in out
    copied = int(re.search(r"runs the (\d+) original bytes", out).group(1))
    # right behind the optimized region the code is the original: a plain stepi
    after = int(inner, 16) + copied
    out = sim_with_traffic(session, f"kp-sim inet_accept+{after}")
    assert "(stepi)" in out and "is the next instruction" in out, out
    assert_clean(session)


def test_not_an_instruction_boundary(session):
    middle = session.mid_instruction("inet_accept")
    out = session.gdb_cmd(f"kp-sim inet_accept+{middle}").strip()
    assert re.fullmatch(rf"inet_accept\+{middle:#x} is not an instruction boundary: it falls "
                        r"inside `.*` at inet_accept\+0x[0-9a-f]+ \(\d+ bytes\); "
                        r"register_kprobe\(\) refuses it with -EILSEQ", out), out
    # the kernel agrees
    write = session.guest(f"echo 'p:kprobes/kp_mid inet_accept+{middle}' >> "
                          "/sys/kernel/tracing/kprobe_events", check=False)
    assert "Invalid or incomplete multibyte or wide character" in write, write
    assert_clean(session)


def test_return_value_matches_the_kretprobe(session):
    out = sim_with_traffic(session, "kp-sim --ret inet_csk_accept")
    ours = int(re.search(r"returned (0x[0-9a-f]+)", out).group(1), 16)
    elapsed = int(re.search(r"took about (\d+) ns \(estimate: guest rq->clock\)", out).group(1))
    module = re.findall(r"kp_lab_kretprobe: inet_csk_accept returned 0x(\w+) and took (\d+) ns",
                        session.guest("dmesg"))[-1]
    assert ours == int(module[0], 16)
    assert elapsed > 0
    assert_clean(session)


def test_ctrl_c_leaves_nothing_behind(session):
    session.stop()
    session.gdb.child.sendline("kp-sim vfs_fsync")          # a disabled probe: never called
    session.gdb.child.expect_exact("waiting for a hit")
    time.sleep(1)                                           # let gdb resume the target
    out = session.gdb.interrupt()
    assert "breakpoints removed" in out and "Traceback" not in out, out
    assert_clean(session)


def test_bad_input(session):
    for command, expected in [
        ("kp-sim", "kp-sim: the following arguments are required: place; see `help kp-sim`"),
        ("kp-sim inet_accept --count 0", "kp-sim: argument -c/--count: must be between 1 and "
                                         "100000, not 0; see `help kp-sim`"),
        ("kp-sim inet_accept --regs ip,xyz", "unknown register `xyz`; use pt_regs names: ip, ax, "
                                             "bx, cx, dx, si, di, bp, sp, r8, r9, r10, r11, r12, "
                                             "r13, r14, r15, flags"),
        ("kp-sim --ret inet_accept+0x14", "kp-sim --ret takes a function (a return probe is "
                                          "always at the function's entry)"),
    ]:
        assert session.gdb_cmd(command).strip() == expected
    assert_clean(session)
