"""What was measured, on what: the machine, and which gdb_kprobe (a commit, or the
working tree and its uncommitted changes)."""
from __future__ import annotations

import os
import pathlib
import platform
import subprocess
from typing import Any

from qemu.lab import REPO


def machine_info(gdb_binary: str) -> dict[str, Any]:
    cpu = platform.processor()
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def first_line(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        except OSError as exc:
            return f"unavailable: {exc}"
        return out.splitlines()[0] if out else "?"

    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu,
            "gdb": first_line([gdb_binary, "--version"]),
            "qemu": first_line(["qemu-system-x86_64", "--version"]),
            "host_kernel": platform.release(), "python": platform.python_version(),
            "accel": "tcg (2 vCPUs, 512 MB)"}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, timeout=30).stdout.rstrip("\n")
    except OSError:
        return ""


def source_state(rev: str | None) -> dict[str, Any]:
    """Which gdb_kprobe was measured: the commit, and files changed on top of it
    (none when a committed revision was snapshotted with --rev)."""
    if rev is not None:
        return {"commit": _git("rev-parse", "--short", rev), "rev": rev, "uncommitted": []}
    changed = _git("status", "--porcelain", "--", "gdb_kprobe", "gdbinit.py")
    return {"commit": _git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line[3:] for line in changed.splitlines()]}


def pin_revision(rev: str) -> str:
    """The commit id of REV now: HEAD may move while the run goes on."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def snapshot_plugin(rev: str, dest: pathlib.Path) -> pathlib.Path:
    """gdbinit.py and gdb_kprobe/ of a commit, unpacked from git (read-only on the repo):
    the measurement then holds still while others edit the working tree. Returns the
    snapshot's gdbinit.py, the plugin's only entry point (`source` it in gdb)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "gdbinit.py", "gdb_kprobe"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "gdbinit.py"
