"""A kernel of your own, given by path (`make lab KERNEL=<bzImage> VMLINUX=<vmlinux>`): the
lab boots it with the generic default scenario and the plugin needs nothing lab-specific.
Shown with the 6.1-fp build, passed by the paths of its files as any other kernel would be."""
from __future__ import annotations

import pytest

from qemu import kernels
from qemu.lab import Attached, Lab

LIST = "/sys/kernel/debug/kprobes/list"


@pytest.fixture(scope="module")
def own(request, gdb_binary):
    if "6.1-fp" not in request.config.getoption("--kernels").split(","):
        pytest.skip("shown with the 6.1-fp build (not among --kernels)")
    built = kernels.fetch("6.1-fp")
    lab = Lab(str(built.vmlinuz), vmlinux=str(built.vmlinux))
    lab.start()
    yield Attached(lab, lab.gdb(gdb_binary=gdb_binary))
    lab.stop()


def test_kp_list_equals_debugfs_on_a_kernel_given_by_path(own):
    assert own.lab.files.root is None and own.lab.modules_dir is None
    assert own.lab.files.release == own.guest("uname -r").strip()
    debugfs = own.lab.guest.settled(f"cat {LIST}")
    assert "ksys_write+0x0" in debugfs and "[DISABLED]" in debugfs
    assert own.gdb_cmd("kp-list") == debugfs
    assert own.gdb_cmd("kp-list -v vfs_statx").count("owner: trace event kprobes/kp_aggr_") == 2
