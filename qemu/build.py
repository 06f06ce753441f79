"""Build what the guest runs: the lab's kernel modules and the busybox initramfs."""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

from qemu import kernels
from qemu.kernels import KernelFiles

HERE = pathlib.Path(__file__).resolve().parent
MODULE_SOURCES = HERE / "modules"
GUEST_FILES = HERE / "guest"
SCENARIOS = HERE / "scenarios"
BUSYBOX = pathlib.Path("/bin/busybox")
# arm64 modules are cross-built against Debian's arm64 headers (and their arch-all common
# tree) with the *host's* linux-kbuild package: the arm64 headers package holds no binaries,
# only a `scripts` link into linux-kbuild-*, and the arm64 linux-kbuild's fixdep/modpost are
# arm64 programs that would need qemu-user to run here. The resolver takes linux-kbuild-* in
# the native architecture (qemu/debarchive.py asks apt-cache without an :arch), and amd64's
# modpost reads arm64 modules (both 64-bit little-endian ELF; its arch tables are generic).
# The headers' .kernelvariables set ARCH=arm64 and CC=$(CROSS_COMPILE)gcc-12, so
# CROSS_COMPILE is all make needs (from gcc-aarch64-linux-gnu).
CROSS_COMPILE = {"amd64": None, "arm64": "aarch64-linux-gnu-"}


def _sources_digest(folder: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_modules(files: KernelFiles) -> pathlib.Path | None:
    """Build qemu/modules/*.c against the kernel's headers; cached by source hash.

    Returns the folder holding the .ko files (kept: gdb loads their symbols), or None for a
    kernel without a kbuild tree (a kernel of your own given without one).
    """
    if files.headers is None:
        return None
    out = files.modules_dir / _sources_digest(MODULE_SOURCES)
    if (out / ".complete").exists():
        return out
    with _build_lock(files.modules_dir):    # labs starting at once (test workers) build once
        if (out / ".complete").exists():
            return out
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(MODULE_SOURCES, out)
        cross = CROSS_COMPILE[files.arch]
        result = subprocess.run(
            # No BTF for our modules: it would need pahole and the lab does not use it.
            ["make", "-C", str(files.headers), f"M={out}", "CONFIG_DEBUG_INFO_BTF_MODULES=",
             *([f"CROSS_COMPILE={cross}"] if cross else []), "modules"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building the lab modules failed:\n{result.stdout[-3000:]}")
        (out / ".complete").write_text("")
    return out


@contextlib.contextmanager
def _build_lock(folder: pathlib.Path):
    """An exclusive lock on `folder` for one build into it (fcntl: released if we die)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_guest_programs() -> list[pathlib.Path]:
    """Build the lab's own guest programs (qemu/guest/*.c: kp_hookload, which puts BPF and
    perf hooks for the hooks scenario) with `gcc -static`; cached by source hash under
    `<cache>/guest-bin/`. They go into the initramfs's /bin."""
    sources = sorted(GUEST_FILES.glob("*.c"))
    digest = hashlib.sha256(b"".join(p.name.encode() + b"\0" + p.read_bytes()
                                     for p in sources)).hexdigest()[:16]
    out = kernels.cache_dir() / "guest-bin" / digest
    programs = [out / source.stem for source in sources]
    if all(program.exists() for program in programs):
        return programs
    compiler = shutil.which("gcc-12") or "gcc"
    with _build_lock(out):
        for source, program in zip(sources, programs):
            if program.exists():
                continue
            tmp = program.with_suffix(".tmp")
            result = subprocess.run([compiler, "-static", "-O2", "-Wall", "-o", str(tmp), str(source)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"building {source.name} failed (needs libc6-dev's libc.a):\n"
                                   f"{result.stdout[-3000:]}")
            os.replace(tmp, program)
    return programs


def scenario_path(name: str, kernel_name: str) -> pathlib.Path:
    """`<name>-<kernel>` when the scenario differs per kernel, else `<name>`; or a path."""
    candidate = pathlib.Path(name)
    if candidate.is_file():
        return candidate
    for path in (SCENARIOS / f"{name}-{kernel_name}", SCENARIOS / name):
        if path.is_file():
            return path
    known = sorted({p.name.split("-")[0] for p in SCENARIOS.iterdir() if p.suffix != ".md"})
    raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(known)}")


def module_folder(ko_name: str) -> str:
    """The guest folder (under /lib/modules) of a lab module: `kp-lab` for the lab's modules
    (kp_lab_*, what the tutorial lists and scenarios load), `kp-test` for the tests' helpers
    (kp_oracle: tests/e2e/test_oracle.py loads it; kp_hidden: tests/e2e/test_hidden_module.py)."""
    return "kp-lab" if ko_name.startswith("kp_lab_") else "kp-test"


def _newc_entry(name: str, mode: int, data: bytes = b"", ino: int = 0,
                rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One entry of a cpio 'newc' archive (what the kernel unpacks as initramfs)."""
    encoded = name.encode() + b"\0"
    header = "070701" + "".join(f"{v:08x}" for v in (
        ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0))
    blob = header.encode() + encoded
    blob += b"\0" * (-len(blob) % 4)
    blob += data + b"\0" * (-len(data) % 4)
    return blob


def busybox(arch: str) -> pathlib.Path:
    """A static busybox for the guest: the host's for amd64; for arm64 Debian's
    busybox-static:arm64, downloaded (`apt-get download`) and unpacked into the cache, never
    installed (the newest the package lists offer, kept until the cache is cleared)."""
    if arch == "amd64":
        return BUSYBOX
    folder = kernels.cache_dir() / "busybox" / arch
    binary = folder / "bin" / "busybox"
    if (folder / ".complete").exists():
        return binary
    with _build_lock(folder.parent):       # labs starting at once fetch it once
        if (folder / ".complete").exists():
            return binary
        with tempfile.TemporaryDirectory() as tmp:
            command = ["apt-get", "download", "-q", f"busybox-static:{arch}"]
            result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
            if result.returncode != 0:              # a fresh machine: no or old package lists
                kernels.refresh_package_lists()
                result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
            debs = sorted(pathlib.Path(tmp).glob("busybox-static_*.deb"))
            if result.returncode != 0 or not debs:
                raise RuntimeError(f"apt-get download busybox-static:{arch} failed (`make "
                                   f"setup-arm64` adds the architecture): "
                                   f"{result.stderr.strip()[-400:]}")
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(folder)], check=True)
        if not binary.exists():
            raise RuntimeError(f"busybox-static:{arch} holds no bin/busybox")
        (folder / ".complete").write_text("")
    return binary


def build_initramfs(dest: pathlib.Path, modules: pathlib.Path | None,
                    scenario: pathlib.Path, programs: list[pathlib.Path] = (),
                    arch: str = "amd64") -> pathlib.Path:
    """Write a gzipped newc initramfs: busybox (the guest architecture's), /init, the lab
    modules, the scenario, and the lab's guest programs (build_guest_programs()) in /bin."""
    entries: list[tuple[str, int, bytes]] = []
    # /dev/console must exist before devtmpfs is mounted: the kernel opens it for /init.
    for folder in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "etc/kp-lab",
                   "lib", "lib/modules", "lib/modules/kp-lab", "lib/modules/kp-test", "root"):
        entries.append((folder, 0o040755, b""))
    entries.append(("dev/console", 0o020600, b""))
    entries.append(("bin/busybox", 0o100755, busybox(arch).read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))   # /init's interpreter
    entries.append(("init", 0o100755, (GUEST_FILES / "init").read_bytes()))
    entries.append(("bin/kp-scenario", 0o100755, (GUEST_FILES / "kp-scenario").read_bytes()))
    entries.append(("etc/kp-lab/scenario", 0o100644, scenario.read_bytes()))
    for program in programs:
        entries.append((f"bin/{program.name}", 0o100755, program.read_bytes()))
    for ko in sorted(modules.glob("*.ko")) if modules else ():
        entries.append((f"lib/modules/{module_folder(ko.name)}/{ko.name}", 0o100644,
                        ko.read_bytes()))
    archive = bytearray()
    for ino, (name, mode, data) in enumerate(entries, start=1):
        rdev = (5, 1) if name == "dev/console" else (0, 0)
        archive += _newc_entry(name, mode, data, ino, rdev)
    archive += _newc_entry("TRAILER!!!", 0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        tmp.write(gzip.compress(bytes(archive), compresslevel=1))
    os.replace(tmp.name, dest)
    return dest
