"""The lab side of `kp-locals PLACE --module DIR`: build the generated module against the lab
kernel's headers, carry it into the running guest, load it, and read its printk lines.

A module built after boot cannot come through the initramfs (qemu/build.py): it goes over the
serial console instead, its debug info stripped (gdb reads the unstripped .ko on the host),
base64-encoded in lines that fit a canonical tty line, decoded by the guest's busybox.
"""
from __future__ import annotations

import base64
import pathlib
import re
import subprocess
import tempfile
from typing import Callable

from qemu import kernels, oracle

__all__ = ["build", "push", "load", "unload", "printed", "parse_line"]

Run = Callable[..., str]


def build(files: kernels.KernelFiles, directory: pathlib.Path) -> tuple[pathlib.Path, str]:
    """make -C <headers> M=DIR, as the generated file says; returns (the .ko, the build log)."""
    if files.headers is None:
        raise RuntimeError(f"no kbuild tree for {files.release}: cannot build a module")
    result = subprocess.run(
        # no BTF for the module: it would need pahole, and nothing here reads it
        ["make", "-C", str(files.headers), f"M={directory.resolve()}",
         "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building {directory} failed:\n{result.stdout[-3000:]}")
    built = sorted(directory.glob("*.ko"))
    if len(built) != 1:
        raise RuntimeError(f"expected one .ko in {directory}, found {built}")
    return built[0], result.stdout


def push(run: Run, ko: pathlib.Path, guest_dir: str = "/tmp") -> str:
    """Copy `ko` (debug info stripped) into the guest; returns its guest path."""
    with tempfile.TemporaryDirectory() as tmp:
        stripped = pathlib.Path(tmp) / ko.name
        subprocess.run(["objcopy", "--strip-debug", str(ko), str(stripped)], check=True)
        data = stripped.read_bytes()
    encoded = base64.b64encode(data).decode()
    lines = [encoded[at:at + 76] for at in range(0, len(encoded), 76)]
    target = f"{guest_dir}/{ko.name}"
    oracle.push_lines(run, f"{target}.b64", lines)
    run(f"base64 -d {target}.b64 > {target} && rm {target}.b64")
    size = run(f"wc -c < {target}").strip()
    if int(size) != len(data):
        raise RuntimeError(f"{target} arrived with {size} of {len(data)} bytes")
    return target


def load(run: Run, guest_path: str) -> None:
    """insmod, and the module's own line that it planted its probe."""
    name = pathlib.PurePath(guest_path).stem
    run("dmesg -c > /dev/null")
    run(f"insmod {guest_path}")
    planted = run(f"dmesg | grep '{name}: planted at' || true")
    if "planted at" not in planted:
        raise RuntimeError(f"{name} loaded without planting its probe: {run('dmesg')}")


def unload(run: Run, name: str) -> None:
    run(f"rmmod {name}", check=False)


def printed(run: Run, name: str) -> list[str]:
    """The module's value lines in the kernel log, oldest first."""
    out = run(f"dmesg | grep '{name} ' || true")
    return [line for line in out.splitlines() if f"{name} " in line and "=" in line]


def parse_line(line: str) -> dict[str, str]:
    """`name=value` pairs of one printed line (`&name` for an address)."""
    text = re.sub(r"^\[[\s\d.]+\] ", "", line).split(": ", 1)[1]
    return dict(re.findall(r"(&?\w+)=(\S+)", text))
