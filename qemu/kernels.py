"""The lab's kernels: which Debian packages they come from and where they are cached.

This file is the one place where package versions are pinned. Everything is
fetched with `apt-get download` and unpacked with `dpkg-deb` into a cache folder
outside git (``$GDB_KPROBE_CACHE``, default ``~/.cache/gdb-kprobe``); running a
fetch again when the files are there does nothing.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from qemu import fpkernel


@dataclasses.dataclass(frozen=True)
class DebianKernel:
    """A Debian cloud-amd64 kernel and the packages that make it debuggable."""

    name: str        # the lab's short name: make lab KERNEL=<name>
    release: str     # uname -r
    version: str     # Debian package version, the same for all its packages
    kbuild: str      # name of the linux-kbuild package
    common: str      # name of the linux-headers-*-common package

    @property
    def image_pkg(self) -> str:
        return f"linux-image-{self.release}-unsigned"

    @property
    def dbg_pkg(self) -> str:
        return f"linux-image-{self.release}-dbg"

    @property
    def headers_pkg(self) -> str:
        return f"linux-headers-{self.release}"

    @property
    def packages(self) -> list[str]:
        return [self.image_pkg, self.dbg_pkg, self.headers_pkg, self.common, self.kbuild]


KERNELS: dict[str, DebianKernel] = {
    "6.1": DebianKernel(
        name="6.1",
        release="6.1.0-56-cloud-amd64",
        version="6.1.192-2",
        kbuild="linux-kbuild-6.1",
        common="linux-headers-6.1.0-56-common",
    ),
    "6.12": DebianKernel(
        name="6.12",
        release="6.12.117+deb12-cloud-amd64",
        version="6.12.117-1~deb12u1",
        kbuild="linux-kbuild-6.12.117+deb12",
        common="linux-headers-6.12.117+deb12-common",
    ),
}
DEFAULT_KERNEL = "6.1"

# Kernels the lab compiles itself (qemu/fpkernel.py). Not in KERNELS: that is what the e2e
# tests run on by default, and a build takes minutes.
BUILT_KERNELS: dict[str, fpkernel.BuiltKernel] = {
    "6.1-fp": fpkernel.BuiltKernel(
        name="6.1-fp",
        version=KERNELS["6.1"].version,   # the same source as the Debian 6.1 kernel
        source_pkg="linux-source-6.1",
        fragment=fpkernel.CONFIGS / "lab-fp.config",
    ),
}

# Host packages the lab needs (installed by `qemu/setup.sh` when missing).
HOST_PACKAGES = ["qemu-system-x86", "busybox-static", "cpio", "gdb", "gcc-12", "make", "xz-utils"]


def names() -> list[str]:
    """Every kernel the lab can boot: Debian's, then the ones it builds."""
    return [*KERNELS, *BUILT_KERNELS]


def cache_dir() -> pathlib.Path:
    root = os.environ.get("GDB_KPROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gdb-kprobe")
    return pathlib.Path(root)


@dataclasses.dataclass(frozen=True)
class KernelFiles:
    """Where one kernel's unpacked files live in the cache."""

    kernel: DebianKernel | fpkernel.BuiltKernel
    root: pathlib.Path

    @property
    def vmlinuz(self) -> pathlib.Path:
        return self.root / "vmlinuz"

    @property
    def vmlinux(self) -> pathlib.Path:
        return self.root / "vmlinux"

    @property
    def system_map(self) -> pathlib.Path:
        return self.root / "System.map"

    @property
    def config(self) -> pathlib.Path:
        return self.root / "config"

    @property
    def headers(self) -> pathlib.Path:
        """The kbuild tree modules are built against (`make -C <this> M=...`)."""
        if isinstance(self.kernel, fpkernel.BuiltKernel):
            return fpkernel.tree(self.root)
        return self.root / "headers" / "usr" / "src" / f"linux-headers-{self.kernel.release}"

    @property
    def modules_dir(self) -> pathlib.Path:
        return self.root / "modules"


def files_for(name: str) -> KernelFiles:
    if name in BUILT_KERNELS:
        built = BUILT_KERNELS[name]
        # Named after what the build depends on: a changed config fragment builds afresh.
        return KernelFiles(built, cache_dir() / "kernels" / f"{built.release}-{built.digest()}")
    if name not in KERNELS:
        raise SystemExit(f"unknown kernel {name!r}; known: {', '.join(names())}")
    kernel = KERNELS[name]
    return KernelFiles(kernel, cache_dir() / "kernels" / kernel.release)


def _deb_path(debs: pathlib.Path, package: str) -> pathlib.Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[0] if found else None


def _download(kernel: DebianKernel | fpkernel.BuiltKernel, debs: pathlib.Path) -> None:
    missing = [p for p in kernel.packages if _deb_path(debs, p) is None]
    if not missing:
        return
    debs.mkdir(parents=True, exist_ok=True)
    args = [f"{p}={kernel.version}" for p in missing]
    print(f"lab: downloading {', '.join(missing)}", file=sys.stderr)
    cmd = ["apt-get", "download", *args]
    if subprocess.run(cmd, cwd=debs).returncode != 0:
        # A fresh machine may have no package lists yet.
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(cmd, cwd=debs, check=True)


def _extract_members(deb: pathlib.Path, dest: pathlib.Path, members: list[str]) -> None:
    """Unpack only some members of a .deb (the -dbg package is 1.8 GB unpacked)."""
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest), *members], stdin=dpkg.stdout, check=True)
    dpkg.stdout.close()
    if dpkg.wait() != 0:
        raise RuntimeError(f"dpkg-deb failed on {deb}")


def fetch(name: str) -> KernelFiles:
    """Download and unpack one kernel into the cache; a no-op when already there."""
    files = files_for(name)
    kernel = files.kernel
    stamp = files.root / ".complete"
    if stamp.exists():
        return files
    debs = cache_dir() / "debs"
    _download(kernel, debs)
    if isinstance(kernel, fpkernel.BuiltKernel):
        source = _deb_path(debs, kernel.source_pkg)
        assert source is not None   # _download() got it or raised
        fpkernel.build(kernel, source, files.root)
        return files
    files.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=files.root) as tmp:
        tmpdir = pathlib.Path(tmp)
        rel = kernel.release
        _extract_members(_deb_path(debs, kernel.image_pkg), tmpdir,
                         [f"./boot/vmlinuz-{rel}", f"./boot/config-{rel}"])
        print(f"lab: unpacking the DWARF vmlinux of {rel}", file=sys.stderr)
        # The image package's System.map is a stub; the real one is in -dbg.
        _extract_members(_deb_path(debs, kernel.dbg_pkg), tmpdir,
                         [f"./usr/lib/debug/boot/vmlinux-{rel}", f"./usr/lib/debug/boot/System.map-{rel}"])
        os.replace(tmpdir / "boot" / f"vmlinuz-{rel}", files.vmlinuz)
        os.replace(tmpdir / "boot" / f"config-{rel}", files.config)
        os.replace(tmpdir / "usr" / "lib" / "debug" / "boot" / f"System.map-{rel}", files.system_map)
        os.replace(tmpdir / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{rel}", files.vmlinux)
    headers_root = files.root / "headers"
    if headers_root.exists():
        shutil.rmtree(headers_root)
    headers_root.mkdir()
    for package in (kernel.headers_pkg, kernel.common, kernel.kbuild):
        subprocess.run(["dpkg-deb", "-x", str(_deb_path(debs, package)), str(headers_root)], check=True)
    # The flavour Makefile includes the common tree by its installed path; point it
    # at the unpacked copy so nothing has to be installed.
    makefile = files.headers / "Makefile"
    text = makefile.read_text()
    makefile.write_text(text.replace("include /usr/src/", f"include {headers_root}/usr/src/"))
    stamp.write_text(kernel.version + "\n")
    return files


def main(argv: list[str]) -> int:
    """`python3 -m qemu.kernels [--headers] [NAME ...|all]`: fetch, print each cache folder
    (with --headers: the kbuild tree to build modules against, `make -C <it> M=...`)."""
    headers = "--headers" in argv
    names = [a for a in argv if a != "--headers"] or [DEFAULT_KERNEL]
    if names == ["all"]:
        names = list(KERNELS)
    for name in names:
        files = fetch(name)
        print(files.headers if headers else files.root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
