"""Backtraces through the kprobe machinery: int3, optprobe, ftrace, and rethook returns."""
from __future__ import annotations

import re

from qemu.lab import ACCEPT_TRAFFIC as TRAFFIC

SYSCALL = "do_syscall_64"


def int3_offset(session) -> int:
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    return int(re.search(r"  k  inet_csk_accept\+(0x[0-9a-f]+)    \n", listing).group(1), 16)


def handler_bp(session, place: str, handler: str = "handler_pre") -> str:
    """`break HANDLER if $rdi == PROBE`: a pre-handler of the probe at `place` by name, the
    lab module's handler_pre (its DWARF placed by kp-modules) or kprobe_dispatcher (the
    trace event's)."""
    out = session.gdb_cmd(f"kp-show {place}")
    for block in out.split("\nprobe ")[1:]:
        if re.search(rf"pre_handler\s+0x[0-9a-f]+\s+<{handler}[ >]", block):
            probe = re.search(r"struct kprobe @ (0x[0-9a-f]+)", block).group(1)
            return f"{handler} if $rdi == {probe}"
    raise AssertionError(f"no {handler} probe at {place}:\n{out}")


def inner_place(session) -> str:
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    return re.search(r"  k  (inet_accept\+0x[0-9a-f]+)    \[OPTIMIZED\]", listing).group(1)


def args_of(session) -> dict[str, str]:
    return dict(line.split(" = ", 1) for line in
                session.gdb.execute("info args").strip().splitlines())


def without_kp_unwind(session, command: str) -> str:
    """`command`'s output from gdb alone: with `set kp-unwind off`, back on afterwards."""
    session.gdb.execute("set kp-unwind off")
    try:
        return session.gdb.execute(command)
    finally:
        session.gdb.execute("set kp-unwind on")


def run(session, breakpoints: list[str], on_stop, max_stops: int | None = None) -> None:
    """Set breakpoints, make the guest accept a connection, call on_stop(n) per stop until
    it returns True (or, without max_stops, once per breakpoint)."""
    session.stop()
    for spec in breakpoints:
        assert "Breakpoint" in session.gdb.execute(f"break {spec}")
    session.resume()
    token = session.lab.guest.send(TRAFFIC)
    stops = max_stops or len(breakpoints)
    try:
        for number in range(stops):
            session.gdb.wait_prompt(timeout=120)
            session.running = False
            done = on_stop(number)
            if done or (max_stops is None and number == stops - 1):
                break
            assert number < stops - 1, f"not done after {stops} stops"
            session.resume()
    finally:
        session.stop()
        session.gdb.execute("delete")
        session.resume()
        session.lab.guest.wait(token)


def probed_frame(bt: str, function: str) -> int:
    match = re.search(rf"^#(\d+)\s+0x[0-9a-f]+ in {function} \[probed at ", bt, re.M)
    assert match, bt
    return int(match.group(1))


def check_path(session, handler_bp: str, entry_kind: str, probed: str, probed_function: str):
    """Stops on the probed function (plain) and in the handler come in either order (the
    ftrace entry runs before a breakpoint past the fentry call, after one on it), and a
    second call may stop too: the unwound frame must equal one of the plain stops."""
    handler = handler_bp.split()[0].lstrip("*")
    plain: list[dict[str, str]] = []
    seen = {}

    def on_stop(_number):
        frame = session.gdb.execute("frame 0")
        if not re.search(rf"\b{re.escape(handler)} \(", frame):
            plain.append(args_of(session))       # a plain breakpoint on the probed function
            return "unwound" in seen and seen["unwound"] in plain
        bt = session.gdb.execute("bt 40")
        entry = re.search(rf"^#\d+\s+(0x[0-9a-f]+) in (\S+) <kprobe: {entry_kind} on "
                          rf"{re.escape(probed)}", bt, re.M)
        assert entry, bt
        seen["entry"] = (int(entry.group(1), 16), entry.group(2))
        level = probed_frame(bt, probed_function)
        after = bt.split(f"#{level} ", 1)[1]
        assert "inet_accept" in after and SYSCALL in after, bt
        session.gdb.execute(f"frame {level}")
        seen["unwound"] = args_of(session)
        broken = without_kp_unwind(session, "bt 40")
        # gdb alone does not know the trampoline: it stops there, or (when %rbp happens
        # to hold a frame pointer of some caller, seen on 6.12 under load) wanders on
        # from an unnamed `?? ()` frame; either way no label and no probed frame
        before_syscall = broken.split(SYSCALL, 1)[0]
        assert "[probed" not in broken and "<kprobe" not in broken and (
            SYSCALL not in broken or " in ?? ()" in before_syscall), \
            f"without the unwinders gdb cannot get past the trampoline:\n{broken}"
        return seen["unwound"] in plain

    run(session, [probed_function, handler_bp], on_stop, max_stops=4)
    assert seen["unwound"] in plain, (seen, plain)
    return seen["entry"]


def kallsyms_name(session, pc: int) -> str:
    """What the guest's /proc/kallsyms calls the code at pc (%pS's rule: the nearest entry
    at or below it), from its entries in pc's 64 KiB, else its 1 MiB (few lines either)."""
    for shift in (16, 20):
        prefix = f"{pc >> shift:0{(64 - shift) // 4}x}"
        rows = session.guest(f"grep '^{prefix}' /proc/kallsyms || true").splitlines()
        below = [(int(row.split()[0], 16), row.split()[2]) for row in rows
                 if len(row.split()) >= 3 and int(row.split()[0], 16) <= pc]
        if below:
            return max(below)[1]
    raise AssertionError(f"no /proc/kallsyms entry in the MiB below {pc:#x}")


def test_int3_path(session):
    offset = int3_offset(session)
    check_path(session, handler_bp(session, f"inet_csk_accept+{offset}"), "int3",
               f"inet_csk_accept+{offset:#x}", "inet_csk_accept")


def test_optprobe_path(session):
    """The detour buffer's frame is named as /proc/kallsyms names its page."""
    place = inner_place(session)
    pc, name = check_path(session, handler_bp(session, place, "kprobe_dispatcher"), "optprobe",
                          place, "inet_accept")
    assert name == kallsyms_name(session, pc) == "kprobe_optinsn_page", (hex(pc), name)


def test_ftrace_path(session):
    """The trampoline frame is named as /proc/kallsyms names its code: a dynamic ftrace
    trampoline (kprobes' ftrace_ops alone on the site) is `ftrace_trampoline`, not `??`."""
    pc, name = check_path(session, handler_bp(session, "inet_csk_accept"), "ftrace",
                          "inet_csk_accept+0x", "inet_csk_accept")
    assert name != "??"
    assert name == kallsyms_name(session, pc), (hex(pc), name)


def test_kretprobe_caller_and_finish(session):
    # the instruction after the module's int3 probe: the kretprobe's entry has run, and
    # no gdb breakpoint sits on a live int3 (gdb would step over it as permanent)
    probe = int3_offset(session)
    shown = session.gdb_cmd(f"kp-show inet_csk_accept+{probe}")
    original = re.search(r"vmlinux file:\n\s+[0-9a-f]+:  ((?:[0-9a-f]{2} )+)", shown).group(1)
    offset = probe + len(original.split())

    def on_stop(_number):
        bt = session.gdb.execute("bt 20")
        assert re.search(r"^#1\s+0x[0-9a-f]+ in inet_accept <kretprobe: return address restored",
                         bt, re.M), bt
        assert SYSCALL in bt
        broken = without_kp_unwind(session, "bt 3")
        assert "arch_rethook_trampoline" in broken.splitlines()[1], broken
        # gdb's finish stops at the restored return address, on whichever CPU the task
        # returns (gdb-kprobe's hook-finish follows it when the scheduler moved it); another
        # task running into the breakpoint meanwhile ended the finish early once (6.1, as
        # test_finish_from_the_probed_frame saw on 6.1-fp): only finish's own count here
        session.gdb.execute("disable")
        out = session.gdb.execute("finish", timeout=60)
        assert "Run till exit" in out and re.search(r"^(0x[0-9a-f]+ in )?inet_accept \(", out,
                                                    re.M), out
        assert re.search(r"^Value returned is \$\d+ = \(struct sock \*\) 0x[0-9a-f]+$", out,
                         re.M), out
        assert "arch_rethook_trampoline" not in session.gdb.execute("bt 1")

    run(session, [f"*inet_csk_accept+{offset}"], on_stop)


def test_kp_where(session):
    offset = int3_offset(session)

    def on_stop(_number):
        out = session.gdb.execute("kp-where")
        assert re.search(rf"cpu\d+ is handling a kprobe: inet_csk_accept\+{offset:#x} ", out), out
        assert "stage: pre-handler" in out
        assert re.search(r"frame #\d+: inet_csk_accept \[probed at", out), out
        assert "??" not in out, out           # asm entry frames are named from ELF symbols

    run(session, [handler_bp(session, f"inet_csk_accept+{offset}")], on_stop)


def test_kp_where_outside_kprobe_handling(session):
    """At a plain breakpoint (inet_accept's entry has no probe) this CPU handles none. (A
    random Ctrl-C is no test: the console's own writes run the scenario's ksys_write
    kretprobe, which kp-where then rightly reports.)"""

    def on_stop(_number):
        out = session.gdb.execute("kp-where")
        assert re.search(r"^cpu\d+ is not handling a kprobe", out, re.M), out

    run(session, ["inet_accept"], on_stop)


def test_finish_from_the_probed_frame(session):
    """In the module's pre-handler: select the probed function's frame (it stays selected
    while the unwinders rebuild frames) and `finish` it: through the int3 return, the
    kretprobe's trampoline, and on whichever CPU the task returns, into inet_accept."""
    offset = int3_offset(session)

    def on_stop(_number):
        level = probed_frame(session.gdb.execute("bt 20"), "inet_csk_accept")
        session.gdb.execute(f"frame {level}")
        assert session.gdb.execute("frame").startswith(f"#{level} "), "selection kept"
        # another task may run into the handler breakpoint meanwhile (seen once on 6.1-fp):
        # that stop would end the `finish` early; only finish's own breakpoints count here
        session.gdb.execute("disable")
        out = session.gdb.execute("finish", timeout=60)
        assert re.search(rf"^Run till exit from #{level} .* in inet_csk_accept ", out, re.M), out
        assert re.search(r"^(0x[0-9a-f]+ in )?inet_accept \(", out, re.M), out
        assert re.search(r"^Value returned is \$\d+ = \(struct sock \*\) 0x[0-9a-f]+$", out,
                         re.M), out
        return True

    run(session, [handler_bp(session, f"inet_csk_accept+{offset}")], on_stop)
