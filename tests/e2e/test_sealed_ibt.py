"""Sealed IBT entries (6.12, 6.1-fp): the kernel overwrites an unused endbr64 with a 4-byte nop and
still puts entry probes at +4. kp-check, kp-show, kp-sim and kp-locals must all find the
probe the guest registered there; kp-sim's pre ip must equal what a module's pre_handler
sees."""
from __future__ import annotations

import re

import pytest
from test_kp_sim import assert_clean, regs_of, sim_with_traffic

EVENTS = "/sys/kernel/tracing/kprobe_events"
LIST = "/sys/kernel/debug/kprobes/list"
CANDIDATES = ("vfs_read", "ksys_read", "kernel_clone", "do_exit", "vfs_write")


def sealed_function(session) -> str:
    """A function whose vmlinux bytes start with endbr64 and whose live bytes are the nop
    that seals it (found, not assumed: which endbrs are sealed depends on the build)."""
    for name in CANDIDATES:
        live = session.gdb_cmd(f"x/4xb {name}")
        session.gdb_cmd("set trust-readonly-sections on")
        try:
            original = session.gdb_cmd(f"x/4xb {name}")
        finally:
            session.gdb_cmd("set trust-readonly-sections off")
        if "0xf3\t0x0f\t0x1e\t0xfa" in original and "0x66\t0x0f\t0x1f\t0x00" in live:
            return name
    pytest.skip("no sealed endbr64 among the candidates (a kernel without IBT)")


def test_sealed_entry_is_found_everywhere(session):
    name = sealed_function(session)
    session.guest(f"echo 'p:kprobes/kp_sealed {name}' >> {EVENTS}")
    session.guest("echo 1 > /sys/kernel/tracing/events/kprobes/kp_sealed/enable")
    try:
        listed = re.search(rf"^([0-9a-f]+)  k  {name}\+0x4 ", session.stable_list(), re.M)
        assert listed, "the guest registered the entry probe at +4"
        address = int(listed.group(1), 16)
        check = session.gdb_cmd(f"kp-check {name}")
        assert check.startswith(f"{name} -> {name}+0x4 ({address:#x})"), check
        show = session.gdb_cmd(f"kp-show {name}")
        assert show.startswith(f"{name}: 1 probe in the function, at +0x4 (kprobe)\n\n"
                               f"{name}+0x4 ({address:#x}): 1 probe"), show
        locals_out = session.gdb_cmd(f"kp-locals {name}")
        assert locals_out.startswith(f"{name}+0x4 ({address:#x})"), locals_out
        out = sim_with_traffic(session, f"kp-sim {name}")
        assert f"breakpoint at {name}+0x4 ({address:#x})" in out, out
        assert regs_of(out)["ip"][0] == address + 1, out
        # nothing of gdb's own stop reports leaks between the intro and the first hit
        assert re.search(r"\(Ctrl-C stops and removes the breakpoints\) \.\.\.\n+hit 1 on cpu",
                         out), out
        assert_clean(session)
    finally:
        session.guest(f"echo 0 > /sys/kernel/tracing/events/kprobes/kp_sealed/enable; "
                      f"echo '-:kprobes/kp_sealed' >> {EVENTS}", check=False)
