"""A kernel of your own, given by path (`make lab KERNEL=<bzImage> VMLINUX=<vmlinux>`): the
lab boots it with the generic default scenario and the plugin needs nothing lab-specific.

Shown with the 6.1-fp build passed by the paths of its files (no kbuild tree: no lab
modules), and, with `--flavours 6.1/rt-amd64`, with other Debian flavours resolved like the
lab's kernels and passed by path with their kbuild tree (the lab modules are built)."""
from __future__ import annotations

import re

import pytest

from qemu import kernels
from qemu.lab import Attached, Lab

LIST = "/sys/kernel/debug/kprobes/list"


def pytest_generate_tests(metafunc):
    if "own_kernel" in metafunc.fixturenames:
        flavours = [f for f in metafunc.config.getoption("--flavours").split(",") if f]
        metafunc.parametrize("own_kernel", ["6.1-fp", *flavours], scope="module")


@pytest.fixture(scope="module")
def own(request, own_kernel, gdb_binary):
    if own_kernel == "6.1-fp" and own_kernel not in request.config.getoption("--kernels").split(","):
        pytest.skip("shown with the 6.1-fp build (not among --kernels)")
    files = kernels.fetch(own_kernel)
    headers = None if own_kernel == "6.1-fp" else str(files.headers)
    lab = Lab(str(files.vmlinuz), vmlinux=str(files.vmlinux), headers=headers)
    lab.start()
    try:
        yield Attached(lab, lab.gdb(gdb_binary=gdb_binary))
    finally:                       # also when attaching gdb failed
        lab.stop()


def test_kp_list_equals_debugfs_on_a_kernel_given_by_path(own):
    assert own.lab.files.root is None
    assert own.lab.files.release == own.guest("uname -r").strip()
    debugfs = own.lab.guest.settled(f"cat {LIST}")
    # an entry probe is at +0x4 on an IBT kernel (after endbr64), at +0x0 otherwise
    assert re.search(r"ksys_write\+0x[04] ", debugfs) and "[DISABLED]" in debugfs
    assert own.gdb_cmd("kp-list") == debugfs
    assert own.gdb_cmd("kp-list -v vfs_statx").count("owner: trace event kprobes/kp_aggr_") == 2
    if own.lab.modules_dir:
        assert "owner: module kp_lab_kprobe" in own.gdb_cmd("kp-list -v inet_csk_accept")
