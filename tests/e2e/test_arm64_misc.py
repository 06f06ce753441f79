"""arm64 (`--kernels 6.1-arm64,6.12-arm64`): kp-kaslr and the current task.

kp-kaslr against the guest's own /proc/kallsyms, on the lab's nokaslr boot and on a boot with
KASLR (arm64's slide is up to 2**47: found from VBAR_EL1 and the pc, not by trying each),
where every other command refuses in one line until `kp-kaslr --relocate`. The current task
(kernel/sched.py: SP_EL0 in the kernel, the per-CPU __entry_task at EL0) against the pid the
guest's own `cat /proc/self/stat` and `$!` report.
"""
from __future__ import annotations

import json
import time

import pytest

from qemu import kernels
from test_arm64_lab import _thread_at_el0
from test_kaslr import _address, kaslr_sessions

LIST = "/sys/kernel/debug/kprobes/list"
CURRENT = ("python from gdb_kprobe.kernel import sched; from gdb_kprobe.target import context; "
           "cpu = context.current_cpu(); print(sched.current_task_name(), "
           "hex(sched.current_task(cpu)))")


@pytest.fixture(autouse=True)
def _arm64_only(kernel):
    if kernels.arch_of(kernel) != "arm64":
        pytest.skip(f"{kernel} is not an arm64 kernel (this file runs on 6.1-arm64, 6.12-arm64)")


def _stext(symbols: str) -> int:
    """_stext in /proc/kallsyms or System.map text (arm64's /proc/kallsyms has no _text)."""
    return _address("_stext", symbols)


# -- kp-kaslr -----------------------------------------------------------------------------
def test_kp_kaslr_without_kaslr(session):
    assert "nokaslr" in session.guest("cat /proc/cmdline")
    out = session.gdb_cmd("kp-kaslr").strip()
    banner = session.guest("cat /proc/version").strip()
    assert out == f"kp-kaslr: the symbol file matches the running kernel (no KASLR slide): {banner}"
    found = json.loads(session.gdb_cmd("kp-kaslr --json"))
    assert (found["state"], found["slide"], found["symbols_offset"]) == ("matches", 0, 0), found


@pytest.fixture(scope="module")
def kaslr_session(kernel, gdb_binary):
    yield from kaslr_sessions(kernel, gdb_binary, "_stext")


def test_kaslr_is_refused_in_one_line_then_relocated(kaslr_session):
    session = kaslr_session
    assert "nokaslr" not in session.guest("cat /proc/cmdline")
    slide = _stext(session.guest("grep ' _stext$' /proc/kallsyms")) - \
        _stext(session.lab.files.system_map.read_text())
    assert slide > 1 << 32, f"{slide:#x}: arm64's slide is far beyond x86's 1 GiB"
    refusal = (f"the kernel runs with KASLR: it is loaded {slide:#x} bytes away from the "
               "vmlinux's addresses; relocate the symbols with `kp-kaslr --relocate` (or boot "
               "with nokaslr)")
    for command in ("kp-list", "kp-list -v", "kp-show inet_accept", "kp-check vfs_read",
                    "kp-blacklist", "kp-modules"):
        assert session.gdb_cmd(command).strip() == refusal, command
    assert session.gdb_cmd("kp-kaslr").strip() == (
        f"kp-kaslr: KASLR moved the kernel by {slide:#x} from the vmlinux's addresses; "
        "`kp-kaslr --relocate` shifts the symbols")
    moved = json.loads(session.gdb_cmd("kp-kaslr --json"))
    assert (moved["state"], moved["slide"], moved["symbols_offset"]) == ("moved", slide, 0)
    assert session.gdb_cmd("kp-kaslr --relocate").strip() == \
        f"kp-kaslr: symbols relocated by {slide:#x}"
    debugfs, ours = session.list_pair()
    assert ours == debugfs
    assert f"kp-kaslr: the symbol file matches the running kernel (relocated by {slide:#x})" in \
        session.gdb_cmd("kp-kaslr")
    # the kernel's own record of its slide (arch_crash_save_vmcoreinfo(): KERNELOFFSET=%lx,
    # kaslr_offset()), readable now that the symbols point into the moved image
    out = session.gdb_cmd(
        "python from gdb_kprobe.kernel import owners; from gdb_kprobe.target import guards; "
        "exec('with guards.kernel_view():\\n print(owners._vmcoreinfo().get(\"KERNELOFFSET\"))')")
    assert int(out.strip(), 16) == slide, out
    # gdb's own symbols moved too: the guest's vfs_read is where gdb says
    live = int(session.guest("grep ' vfs_read$' /proc/kallsyms").split()[0], 16)
    assert session.gdb_cmd(f"info symbol {live:#x}").startswith("vfs_read in section .text")


def test_kaslr_is_found_from_the_anchor_register_alone(kaslr_session):
    """VBAR_EL1 (gdb's $VBAR) holds `vectors`: the slide it gives is the guest's, whichever
    code the stop's pc is in."""
    session = kaslr_session
    vectors = [int(line.split()[0], 16) for line in
               session.guest("grep ' vectors$' /proc/kallsyms").splitlines()]
    session.stop()
    for number in range(1, session.lab.cpus + 1):
        session.gdb.execute(f"thread {number}")
        assert int(session.gdb.execute("p/x $VBAR").split()[-1], 16) == vectors[0]


# -- the current task ---------------------------------------------------------------------
def _current(session) -> tuple[str, int]:
    out = session.gdb.execute(CURRENT).strip()
    name, task = out.rsplit(" ", 1)
    return name, int(task, 16)


def test_current_task_in_the_kernel_is_sp_el0(session):
    """At a breakpoint in do_task_stat, hit by the guest's `cat /proc/self/stat`: the current
    task is that cat, as its own first two fields say; SP_EL0 and __entry_task agree."""
    session.stop()
    assert "Breakpoint" in session.gdb.execute("break do_task_stat")
    session.resume()
    token = session.lab.guest.send("cat /proc/self/stat")
    try:
        session.gdb.wait_prompt(timeout=120)
        session.running = False
        name, task = _current(session)
        sp_el0 = int(session.gdb.execute("p/x $SP_EL0").split()[-1], 16)
        cpu = int(session.gdb.execute("python from gdb_kprobe.target import context; "
                                      "print(context.current_cpu())").strip())
        entry_task = int(session.gdb.execute(
            "python from gdb_kprobe.kernel import percpu; "
            f"print(percpu.addresses('__entry_task')[{cpu}])").strip())
        per_cpu = int(session.gdb.execute(f"p/x *(unsigned long *){entry_task:#x}").split()[-1], 16)
    finally:
        session.gdb.execute("delete")
        session.resume()
    stat = session.lab.guest.wait(token).split()
    assert name == f"cat[{stat[0]}]" and stat[1] == "(cat)", (name, stat[:2])
    assert task == sp_el0 == per_cpu, (hex(task), hex(sp_el0), hex(per_cpu))


def test_current_task_at_el0_is_the_per_cpu_entry_task(session, gdb_binary, request):
    """A CPU stopped in user mode has the user stack pointer in SP_EL0: the task comes from
    __entry_task, and is the guest's spinning shell ($!)."""
    if "gdb18" in gdb_binary:
        # kernel_view's thread switch does not always take with gdb 18.1: the same open
        # issue as test_arm64_lab.py's test_a_cpu_stopped_in_user_mode_does_not_hide_the_kernel
        request.node.add_marker(pytest.mark.xfail(
            reason="gdb 18.1: kernel_view's thread switch does not always take (open)"))
    spin = session.guest("(while :; do :; done & echo $! > /tmp/spin); cat /tmp/spin").strip()
    try:
        for _ in range(30):
            session.resume()
            time.sleep(0.2)
            session.stop()
            if _thread_at_el0(session) is not None:
                break
        else:
            pytest.fail("no stop found a CPU at EL0")
        number = _thread_at_el0(session)
        session.gdb.execute(f"thread {number}")
        sp_el0 = int(session.gdb.execute("p/x $SP_EL0").split()[-1], 16)
        assert sp_el0 >> 63 == 0, f"{sp_el0:#x}: SP_EL0 at EL0 is a user address"
        # QEMU reads no kernel memory through a CPU at EL0: read through another one, as
        # every command does (guards.kernel_view), asking for this CPU's task
        out = session.gdb.execute(
            "python from gdb_kprobe.kernel import sched; from gdb_kprobe.target import guards; "
            f"exec('with guards.kernel_view():\\n task = sched.current_task({number - 1})"
            "\\n print(sched.task_name(task), hex(task))')").strip()
        name, task = out.rsplit(" ", 1)
        assert name == f"sh[{spin}]", out
        assert int(task, 16) >> 63 == 1, out
    finally:
        session.guest("kill $(cat /tmp/spin)")


# -- the tutorial's arm64 appendix --------------------------------------------------------
def test_the_tutorial_appendix_replays(kernel, gdb_binary):
    """docs/tutorial.md's arm64 appendix (its blocks name their kernels; the lecture's
    untagged x86 steps do not run here), as `make tutorial-check KERNELS=6.1-arm64` does."""
    from qemu import tutorial
    blocks = tutorial.parse(tutorial.DOC.read_text())
    if not any(b.where != "excerpt" and b.applies(kernel) for b in blocks):
        pytest.skip(f"no tutorial step is written for {kernel}")
    outcome = tutorial.replay(kernel, gdb_binary)
    assert not outcome.failures, "\n\n".join(outcome.failures)
    assert outcome.steps >= 8
