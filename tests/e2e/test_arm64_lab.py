"""The lab on arm64 (`--kernels 6.1-arm64,6.12-arm64`): Debian's cloud-arm64 kernel under
qemu-system-aarch64 (TCG, pointer authentication on), gdb-multiarch attached.

kp-list against the guest's own /sys/kernel/debug/kprobes/list, and the one-line refusal of
the commands whose arch seam (gdb_kprobe/arch/) is not written for aarch64 yet. The x86
files (test_kp_list.py ...) ask for x86 shapes ([FTRACE], [OPTIMIZED], int3): `make test`
runs this file alone on ARM64_KERNELS.
"""
from __future__ import annotations

import re
import time

import pytest

from qemu import kernels
from qemu.lab import ACCEPT_TRAFFIC

EVENTS = "/sys/kernel/tracing/kprobe_events"
# every command whose answer rests on instruction decoders, the memory map or the unwinder
SEAM_COMMANDS = ["kp-list -v", "kp-show inet_accept", "kp-check inet_accept", "kp-locals inet_accept",
                 "kp-sim inet_accept", "kp-where", "kp-kaslr"]


@pytest.fixture(autouse=True)
def _arm64_only(kernel):
    if kernels.arch_of(kernel) != "arm64":
        pytest.skip(f"{kernel} is not an arm64 kernel (this file runs on 6.1-arm64, 6.12-arm64)")


def assert_same(session) -> str:
    debugfs, ours = session.list_pair()
    assert ours == debugfs, f"kp-list differs from debugfs:\n--- debugfs\n{debugfs}--- kp-list\n{ours}"
    return debugfs


def test_guest_is_arm64_with_pointer_authentication(session):
    assert session.guest("uname -m").strip() == "aarch64"
    # -cpu max,pauth-impdef=on: the kernel signs its return addresses (ARM64_PTR_AUTH_KERNEL)
    features = session.guest("grep -m1 Features /proc/cpuinfo").split()
    assert "paca" in features and "pacg" in features, features


def test_default_scenario_matches_debugfs(session):
    lines = assert_same(session).splitlines()
    assert any("  r  " in line for line in lines), "a return probe"
    assert any("[DISABLED]" in line for line in lines), "a disabled probe"
    addresses = [line.split()[0] for line in lines]
    assert any(addresses.count(a) >= 2 for a in addresses), "an aggregate"
    assert sum("inet_csk_accept+0x" in line for line in lines) == 3, "the lab modules' probes"
    # no ftrace-based or optimized kprobes on arm64: every armed one is a BRK
    assert not any(flag in line for line in lines for flag in ("[FTRACE]", "[OPTIMIZED]"))


def test_module_filter(session):
    out = session.gdb_cmd("kp-list -m kp_lab_kprobe")
    assert len(out.splitlines()) == 2, out


@pytest.mark.parametrize("command", SEAM_COMMANDS)
def test_unwritten_seam_refuses_in_one_line(session, command):
    out = session.gdb_cmd(command).strip()
    name = command.split()[0]
    assert out.startswith(f"{name}: not available on aarch64 yet: ") and "\n" not in out, out


def test_bt_in_a_module_pre_handler_is_gdbs(session):
    """The unwinder and the frame filter stand aside on aarch64: bt is gdb's own, with no
    Python error (frame_labels once read %rsp there)."""
    session.stop()
    assert "Breakpoint" in session.gdb.execute("break handler_pre")
    session.resume()
    token = session.lab.guest.send(ACCEPT_TRAFFIC)
    try:
        session.gdb.wait_prompt(timeout=120)
        session.running = False
        bt = session.gdb.execute("bt 4")
        assert "Python Exception" not in bt and "Traceback" not in bt, bt
        assert re.search(r"^#0\s+(0x[0-9a-f]+ in )?handler_pre ", bt, re.M), bt
    finally:
        session.stop()
        session.gdb.execute("delete")
        session.resume()
        session.lab.guest.wait(token)


def _thread_at_el0(session) -> int | None:
    """A gdb thread (CPU) stopped at EL0 (PSTATE.M[3:2] = 0), or None."""
    for number in range(1, session.lab.cpus + 1):
        session.gdb.execute(f"thread {number}")
        if int(session.gdb.execute("p ($cpsr >> 2) & 3").split()[-1]) == 0:
            return number
    return None


def test_a_cpu_stopped_in_user_mode_does_not_hide_the_kernel(session, gdb_binary, request):
    """QEMU 7.2's gdbstub reads with the selected CPU's EL0 permissions: kp-list reads
    through a CPU in the kernel instead (guards.kernel_view), and gives the selection back."""
    if "gdb18" in gdb_binary:
        # seen failing in 3 of 5 runs with gdb 18.1 (kp-list still read through the EL0
        # CPU), never with gdb-multiarch 13.1; by hand gdb 18 reads through the other CPU.
        # Not understood yet: it runs, XPASS or XFAIL, not strict.
        request.node.add_marker(pytest.mark.xfail(
            reason="gdb 18.1: kernel_view's thread switch does not always take (open)"))
    debugfs = session.stable_list()
    session.guest("(while :; do :; done & echo $! > /tmp/spin)")     # one CPU spins at EL0
    try:
        tested = 0
        for _ in range(20):
            session.resume()
            time.sleep(0.2)
            session.stop()
            number = _thread_at_el0(session)
            if number is None:
                continue
            session.gdb.execute(f"thread {number}")
            assert session.gdb.execute("kp-list") == debugfs
            assert f"Current thread is {number} " in session.gdb.execute("thread"), \
                "the selection is given back"
            tested += 1
            if tested == 3:
                break
        assert tested, "no stop found a CPU at EL0: nothing was tested"
    finally:
        session.guest("kill $(cat /tmp/spin)")


def test_runtime_changes_and_module_text(session):
    session.guest(f"echo 'p:kprobes/kp_new vfs_readlink' >> {EVENTS}")
    session.guest("echo 1 > /sys/kernel/tracing/events/kprobes/kp_new/enable")
    assert "vfs_readlink+0x" in assert_same(session)
    # a probe in module text: listed with the module's name, then [GONE] when it goes
    session.guest(f"echo 'p:kprobes/kp_modfunc kp_lab_kprobe:kp_lab_target' >> {EVENTS}")
    assert re.search(r"kp_lab_target\+0x[0-9a-f]+  kp_lab_kprobe ", assert_same(session))
    session.guest("rmmod kp_lab_kprobe")
    listing = assert_same(session)
    assert "[GONE]" in listing
    assert sum("inet_csk_accept+0x" in line for line in listing.splitlines()) == 1
