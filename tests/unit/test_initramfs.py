"""The initramfs writer produces a newc archive the host's cpio can list."""
from __future__ import annotations

import gzip
import subprocess

from qemu import build


def test_initramfs_lists_with_cpio(tmp_path):
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "kp_lab_kprobe.ko").write_bytes(b"\x7fELF fake")
    scenario = tmp_path / "scenario"
    scenario.write_text("event p:kprobes/x vfs_read\n")
    archive = build.build_initramfs(tmp_path / "initramfs.gz", modules, scenario)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(archive.read_bytes()),
                             capture_output=True, check=True).stdout.decode().split()
    for path in ("init", "bin/busybox", "bin/sh", "bin/kp-scenario", "dev/console",
                 "etc/kp-lab/scenario", "lib/modules/kp-lab/kp_lab_kprobe.ko"):
        assert path in listing


def test_scenario_per_kernel_falls_back_to_plain_name():
    assert build.scenario_path("default", "6.1").name == "default-6.1"
    assert build.scenario_path("default", "6.12").name == "default-6.12"


def test_guest_programs_are_static_and_go_to_bin(tmp_path, monkeypatch):
    """qemu/guest/*.c (kp_hookload) build with gcc -static (the initramfs has no libc) and
    land in the guest's /bin."""
    monkeypatch.setenv("GDB_KPROBE_CACHE", str(tmp_path / "cache"))
    programs = build.build_guest_programs()
    assert [p.name for p in programs] == ["kp_hookload"]
    assert b"kp_hookload: ready pid=" in programs[0].read_bytes()
    assert b"/lib64/ld-linux" not in programs[0].read_bytes()     # no PT_INTERP: static
    scenario = tmp_path / "scenario"
    scenario.write_text("spawn kp_hookload perf:vfs_read\n")
    archive = build.build_initramfs(tmp_path / "initramfs.gz", None, scenario, programs)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(archive.read_bytes()),
                             capture_output=True, check=True).stdout.decode().split()
    assert "bin/kp_hookload" in listing
