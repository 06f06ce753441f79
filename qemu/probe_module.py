"""The lab side of `kp-locals PLACE --module DIR`: build the generated module against the lab
kernel's headers, carry it into the running guest, load it, and read its printk lines.

A module built after boot cannot come through the initramfs (qemu/build.py): it goes over the
serial console instead, its debug info stripped (gdb reads the unstripped .ko on the host),
base64-encoded in lines that fit a canonical tty line, decoded by the guest's busybox.

The same by hand, against the lab `make lab` runs (the tutorial's last chapter):

    .venv/bin/python -m qemu.probe_module load DIR     # DIR: built with make -C <headers> M=DIR

It takes the guest's console the way `make shell` does (leave `make shell` first, and let the
guest run: `continue` in gdb), carries DIR's .ko over, insmods it and prints the module's line.
"""
from __future__ import annotations

import argparse
import base64
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
from typing import Callable

import pexpect

from qemu import build as lab_build, kernels, oracle

__all__ = ["build", "push", "load", "unload", "printed", "parse_line", "main"]

Run = Callable[..., str]


def build(files: kernels.KernelFiles, directory: pathlib.Path) -> tuple[pathlib.Path, str]:
    """make -C <headers> M=DIR, as the generated file says; returns (the .ko, the build log)."""
    if files.headers is None:
        raise RuntimeError(f"no kbuild tree for {files.release}: cannot build a module")
    result = subprocess.run(
        # no BTF for the module: it would need pahole, and nothing here reads it
        ["make", "-C", str(files.headers), f"M={directory.resolve()}",
         "CONFIG_DEBUG_INFO_BTF_MODULES=",
         # cross-built for an arm64 guest, as the lab modules are (qemu/build.py)
         *([f"CROSS_COMPILE={lab_build.CROSS_COMPILE[files.arch]}"]
           if lab_build.CROSS_COMPILE.get(files.arch) else []), "modules"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building {directory} failed:\n{result.stdout[-3000:]}")
    built = built_module(directory)
    if built is None:
        raise RuntimeError(f"expected one .ko in {directory}, found "
                           f"{sorted(directory.glob('*.ko'))}")
    return built, result.stdout


def built_module(directory: pathlib.Path) -> pathlib.Path | None:
    """The .ko that DIR's Kbuild names (what kp-locals --module wrote last: a module written
    there before for another place may still lie next to it), or DIR's only .ko."""
    kbuild = directory / "Kbuild"
    names = re.findall(r"^obj-m\s*\+?=\s*(\S+)\.o\s*$",
                       kbuild.read_text() if kbuild.is_file() else "", re.M)
    if len(names) == 1 and (directory / f"{names[0]}.ko").is_file():
        return directory / f"{names[0]}.ko"
    built = sorted(directory.glob("*.ko"))
    return built[0] if len(built) == 1 else None


def _objcopy(ko: pathlib.Path) -> str:
    """The host's objcopy, or the cross one for an arm64 module (ELF e_machine EM_AARCH64):
    the host's binutils read x86-64 ELF only."""
    with open(ko, "rb") as handle:
        machine = int.from_bytes(handle.read(20)[18:20], "little")
    return f"{lab_build.CROSS_COMPILE['arm64']}objcopy" if machine == 183 else "objcopy"


def push(run: Run, ko: pathlib.Path, guest_dir: str = "/tmp") -> str:
    """Copy `ko` (debug info stripped) into the guest; returns its guest path."""
    with tempfile.TemporaryDirectory() as tmp:
        stripped = pathlib.Path(tmp) / ko.name
        subprocess.run([_objcopy(ko), "--strip-debug", str(ko), str(stripped)], check=True)
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


def load(run: Run, guest_path: str) -> str:
    """insmod; returns the module's own line that it planted its probe."""
    name = pathlib.PurePath(guest_path).stem
    run("dmesg -c > /dev/null")
    run(f"insmod {guest_path}")
    planted = run(f"dmesg | grep '{name}: planted at' || true")
    if "planted at" not in planted:
        raise RuntimeError(f"{name} loaded without planting its probe: {run('dmesg')}")
    return planted.strip()


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


# -- by hand: python -m qemu.probe_module load DIR ------------------------------------------
ANSWER_TIMEOUT = 15
# where the console is: the tutorial's replay names its own lab's; else the one `make lab` ran
CONSOLE_ENV = "KP_LAB_CONSOLE"


def _console() -> socket.socket:
    from qemu.lab import CONSOLE_POINTER
    path = os.environ.get(CONSOLE_ENV) or (
        CONSOLE_POINTER.read_text().strip() if CONSOLE_POINTER.exists() else "")
    if not path:
        raise SystemExit("probe_module: no lab is running (start one with `make lab`)")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError as exc:
        raise SystemExit(f"probe_module: the lab's console {path} does not answer "
                         f"({exc.strerror}); is `make lab` still running?") from None
    return conn


def load_by_hand(directory: pathlib.Path) -> str:
    """Carry DIR's .ko into the running lab's guest over its console and insmod it."""
    from qemu.lab import Guest
    built = built_module(directory)
    if built is None:
        raise SystemExit(f"probe_module: {len(list(directory.glob('*.ko')))} .ko files in "
                         f"{directory} and none named by its Kbuild, expected one "
                         f"(build it first: make -C <headers> M={directory})")
    guest = Guest(_console(), None)
    try:
        # the shell's tty settings as found (`make shell` echoes, the tutorial's replay not)
        found = guest.run("stty -g", timeout=ANSWER_TIMEOUT)
        saved = re.findall(r"^[0-9a-f]+(?::[0-9a-f]+)+$", found.replace("\r", ""), re.M)
        guest.run("stty -echo")
        try:
            target = push(guest.run, built)
            planted = load(guest.run, target)
        finally:
            if saved:
                guest.run(f"stty {saved[-1]}")
    except pexpect.TIMEOUT:
        raise SystemExit("probe_module: the guest's console does not answer: let the guest run "
                         "(`continue` in gdb) and leave `make shell` (Ctrl-]) first") from None
    finally:
        guest.close()
    return (f"{built.name}: carried over the guest's console to {target} (debug info "
            f"stripped; gdb reads it from {directory})\ninsmod {target}\n{planted}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qemu.probe_module", description=(
        "Carry a module built from kp-locals --module into the running lab's guest (over its "
        "console, as `make shell` reaches it) and load it."))
    sub = parser.add_subparsers(dest="action", required=True)
    load_ = sub.add_parser("load", help="copy DIR's .ko into the guest's /tmp and insmod it")
    load_.add_argument("directory", type=pathlib.Path)
    options = parser.parse_args(argv)
    print(load_by_hand(options.directory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
