"""The lab-built kernels (6.1-fp): built as configured, frame pointers, probes where planned.

Skipped on Debian's kernels; run with `--kernels 6.1-fp`.
"""
from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

from qemu import build, fpkernel, kernels
from qemu.lab import Lab

LIST = "/sys/kernel/debug/kprobes/list"


@pytest.fixture(autouse=True)
def built_kernels_only(kernel):
    # autouse fixtures come first: a Debian kernel is skipped before `session` boots it
    if kernel not in kernels.BUILT_KERNELS:
        pytest.skip(f"{kernel} is a Debian kernel; these checks are for the kernels the lab builds")


def symbol_address(system_map: pathlib.Path, name: str) -> int:
    for line in system_map.read_text().splitlines():
        address, _kind, symbol = line.split()[:3]
        if symbol == name:
            return int(address, 16)
    raise AssertionError(f"{name} not in {system_map}")


def disassemble(files: kernels.KernelFiles, function: str, length: int = 0x40) -> dict[int, str]:
    """offset -> instruction (objdump's AT&T text, spaces squeezed) from the vmlinux file."""
    start = symbol_address(files.system_map, function)
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
                          f"--stop-address={start + length:#x}", str(files.vmlinux)],
                         capture_output=True, text=True, check=True).stdout
    return {int(m[1], 16) - start: " ".join(m[2].split())
            for m in re.finditer(r"^\s*([0-9a-f]+):\s+(\S.*)$", out, re.M)}


def test_built_as_configured(session):
    files = session.lab.files
    wanted = fpkernel.read_config(kernels.BUILT_KERNELS[session.lab.kernel_name].fragment)
    got = fpkernel.read_config(files.config)
    assert {name: got.get(name) for name in wanted} == wanted
    assert session.guest("uname -r").strip() == session.lab.files.release
    # the lab boots with -smp 2
    assert session.guest("grep -c ^processor /proc/cpuinfo").strip() == "2"


def test_inet_accept_has_the_lectures_entry_sequence(session):
    # built with IBT like the lecture's kernel: endbr64, the __fentry__ call at +4, push %rbp at +9
    code = list(disassemble(session.lab.files, "inet_accept").items())
    assert code[0] == (0, "endbr64"), code[:4]
    assert code[1][0] == 4 and code[1][1].startswith("call") and "<__fentry__>" in code[1][1]
    assert code[2] == (9, "push %rbp"), code[:4]
    # gcc may schedule an instruction that leaves the stack alone in between
    # (movzbl %cl,%ecx on 6.1-fp), but %rbp is set before anything else is pushed
    prologue = [insn for _, insn in code[3:6]]
    assert "mov %rsp,%rbp" in prologue, code[:7]
    before = prologue[:prologue.index("mov %rsp,%rbp")]
    assert not any(insn.startswith(("push", "sub", "call")) for insn in before), code[:7]
    # and the running kernel has the same bytes there as the vmlinux file (inet_accept is
    # called indirectly, so its endbr64 is not sealed)
    live = session.gdb_cmd("x/3i inet_accept").splitlines()
    assert "endbr64" in live[0] and "push   %rbp" in live[2], live


def test_no_kaslr_even_when_asked_for(kernel):
    # built without RANDOMIZE_BASE: booted without `nokaslr`, it still runs at the link
    # addresses, so the vmlinux's symbols are the live ones
    lab = Lab(kernel, kaslr=True)
    lab.start()
    try:
        assert "nokaslr" not in lab.guest.run("cat /proc/cmdline")
        kallsyms = lab.guest.run("grep ' inet_accept$' /proc/kallsyms").split()
        assert lab.files is not None
        assert int(kallsyms[0], 16) == symbol_address(lab.files.system_map, "inet_accept")
    finally:
        lab.stop()


def test_scenario_probe_is_on_a_boundary_and_optimized(session):
    scenario = build.scenario_path("default", session.lab.kernel_name).read_text()
    offset = int(re.search(r"^event p:kprobes/kp_inner inet_accept\+(0x[0-9a-f]+|\d+) ",
                           scenario, re.M).group(1), 0)
    assert offset in disassemble(session.lab.files, "inet_accept"), \
        f"inet_accept+{offset:#x} is not an instruction boundary in this build"
    lines = [line for line in session.guest(f"cat {LIST}").splitlines()
             if f"inet_accept+{offset:#x} " in line]
    assert len(lines) == 1 and lines[0].endswith("[OPTIMIZED]"), lines


def test_kp_list_matches_debugfs_and_has_every_shape(session):
    debugfs, ours = session.list_pair()
    assert ours == debugfs
    lines = debugfs.splitlines()
    assert any("  r  " in line for line in lines)
    assert any(line.endswith("[OPTIMIZED]") for line in lines)
    assert any(line.endswith("[FTRACE]") for line in lines)
    assert any("[DISABLED]" in line for line in lines)
    addresses = [line.split()[0] for line in lines]
    assert any(addresses.count(a) >= 2 for a in addresses)
