"""The lab's kernels: a series and a flavour, resolved in Debian's archive at fetch time.

A lab kernel is "6.1 cloud-amd64", never a package version: Debian's archive moves (qemu/
debarchive.py says how, and picks the newest complete kernel). What a fetch resolved is
recorded in the cache (``kernels/resolved.json``), and a cache that holds a complete kernel
is used without asking the archive, so the lab works offline. `make kernels-update` moves
the cache to the newest kernels; ``GDB_KPROBE_PIN=6.1=6.1.0-56`` (an ABI or a package
version, per lab kernel, comma-separated) pins one exactly, to reproduce a report.

Everything is fetched with `apt-get download` and unpacked with `dpkg-deb` into the cache
(``$GDB_KPROBE_CACHE``, default ``~/.cache/gdb-kprobe``); nothing is installed or committed.

Kernel names: the lab's (`6.1`, `6.12`, `6.1-fp`, and on arm64 `6.1-arm64`, `6.12-arm64`),
any Debian series/flavour (`6.1/rt-amd64`, `6.1/cloud-arm64`), or a kernel of your own given
by path (`lab.py --kernel PATH --vmlinux PATH`, see `own_kernel`). The flavour names the
architecture (`arch_of`), and with it QEMU, the gdb and the compiler (qemu/lab.py, build.py).
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

from qemu import debarchive, fpkernel


@dataclasses.dataclass(frozen=True)
class DebianSeries:
    """A Debian kernel series and flavour: what a lab kernel name stands for."""

    name: str                 # make lab KERNEL=<name>
    series: str               # "6.1"
    flavour: str              # "cloud-amd64"

    @property
    def arch(self) -> str:
        """The Debian architecture the flavour is built for: its last word names it
        (cloud-amd64, rt-arm64, arm64-16k are amd64, arm64, arm64)."""
        return arch_of_flavour(self.flavour)

    def resolve(self, archive: debarchive.Archive, pin: str | None) -> debarchive.Resolved:
        return debarchive.resolve_kernel(archive, self.series, self.flavour, pin)


@dataclasses.dataclass(frozen=True)
class BuiltSeries:
    """A kernel the lab compiles from the newest Debian linux-source of a series."""

    name: str
    like: str                 # the Debian lab kernel whose upstream version to build
    fragment: pathlib.Path

    @property
    def source_pkg(self) -> str:
        return f"linux-source-{LAB_KERNELS[self.like].series}"


LAB_KERNELS: dict[str, DebianSeries] = {
    "6.1": DebianSeries("6.1", "6.1", "cloud-amd64"),
    "6.12": DebianSeries("6.12", "6.12", "cloud-amd64"),
    # booted under qemu-system-aarch64 (TCG); their packages are arm64 ones (dpkg
    # --add-architecture arm64, done by qemu/setup-arm64.sh), the kbuild tools the host's
    "6.1-arm64": DebianSeries("6.1-arm64", "6.1", "cloud-arm64"),
    "6.12-arm64": DebianSeries("6.12-arm64", "6.12", "cloud-arm64"),
}
ARCHES = ("amd64", "arm64")               # Debian's names; what the lab can boot


def arch_of_flavour(flavour: str) -> str:
    """amd64 or arm64: the Debian architecture named in a kernel flavour."""
    for word in flavour.split("-"):
        if word in ARCHES:
            return word
    return "amd64"


def arch_of(name: str) -> str:
    """The architecture of a lab kernel name or SERIES/FLAVOUR (amd64 for anything else:
    a kernel given by path says its own, see own_kernel)."""
    if name in LAB_KERNELS:
        return LAB_KERNELS[name].arch
    return arch_of_flavour(name.partition("/")[2]) if "/" in name else "amd64"


DEFAULT_KERNEL = "6.1"
# Kernels the lab compiles itself (qemu/fpkernel.py): the same source as Debian's 6.1.
BUILT_KERNELS: dict[str, BuiltSeries] = {
    "6.1-fp": BuiltSeries("6.1-fp", like="6.1", fragment=fpkernel.CONFIGS / "lab-fp.config"),
}
# Host packages the lab needs (installed by `qemu/setup.sh` when missing).
HOST_PACKAGES = ["qemu-system-x86", "busybox-static", "cpio", "gdb", "gcc-12", "make", "xz-utils"]
PIN_VARIABLE = "GDB_KPROBE_PIN"


def names() -> list[str]:
    """Every kernel the lab knows by name: Debian's, then the ones it builds."""
    return [*LAB_KERNELS, *BUILT_KERNELS]


def cache_dir() -> pathlib.Path:
    root = os.environ.get("GDB_KPROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gdb-kprobe")
    return pathlib.Path(root)


@dataclasses.dataclass(frozen=True)
class KernelFiles:
    """One bootable kernel's files: the image, its DWARF vmlinux and, when there is one, the
    kbuild tree the lab modules are built against."""

    name: str                          # what the lab was asked for
    release: str                       # uname -r
    description: str                   # one line: where it came from
    vmlinuz: pathlib.Path
    vmlinux: pathlib.Path
    root: pathlib.Path | None = None   # the cache folder (None for a kernel of your own)
    headers: pathlib.Path | None = None
    system_map: pathlib.Path | None = None
    config: pathlib.Path | None = None
    arch: str = "amd64"                # Debian's name: amd64 or arm64

    @property
    def modules_dir(self) -> pathlib.Path:
        if self.root is not None:
            return self.root / "modules"
        return cache_dir() / "own-kernels" / re.sub(r"\W", "_", str(self.vmlinux)) / "modules"


def _debian_files(name: str, resolved: debarchive.Resolved) -> KernelFiles:
    root = cache_dir() / "kernels" / resolved.release
    return KernelFiles(
        name=name, release=resolved.release, root=root,
        description=f"Debian {resolved.series} {resolved.flavour}: {resolved.image} {resolved.version}",
        vmlinuz=root / "vmlinuz", vmlinux=root / "vmlinux", system_map=root / "System.map",
        config=root / "config", arch=arch_of_flavour(resolved.flavour),
        headers=root / "headers" / "usr" / "src" / f"linux-headers-{resolved.release}")


def _built_files(kernel: fpkernel.BuiltKernel) -> KernelFiles:
    # Named after what the build depends on: a changed config fragment builds afresh.
    root = cache_dir() / "kernels" / f"{kernel.release}-{kernel.digest()}"
    return KernelFiles(
        name=kernel.name, release=kernel.release, root=root,
        description=f"{kernel.name}: built from {kernel.source_pkg} {kernel.version} "
                    f"with {kernel.fragment.name}",
        vmlinuz=root / "vmlinuz", vmlinux=root / "vmlinux", system_map=root / "System.map",
        config=root / "config", headers=fpkernel.tree(root))


def own_kernel(vmlinuz: str, vmlinux: str, headers: str | None = None) -> KernelFiles:
    """A kernel of your own, by path: any x86-64 bzImage or arm64 Image and its DWARF vmlinux
    (and, to build the lab modules, its kbuild tree). Nothing lab-specific is needed."""
    image, debug = pathlib.Path(vmlinuz).resolve(), pathlib.Path(vmlinux).resolve()
    for path, what in ((image, "kernel image"), (debug, "DWARF vmlinux")):
        if not path.is_file():
            raise SystemExit(f"lab: no {what} at {path}")
    release = _release_of(image) or image.name
    tree = pathlib.Path(headers).resolve() if headers else None
    arch = "arm64" if _is_arm64_image(image) else "amd64"
    return KernelFiles(name=str(image), release=release, description=f"your kernel {image}",
                       arch=arch, vmlinuz=image, vmlinux=debug, headers=tree,
                       system_map=_beside(debug, "System.map"), config=_beside(debug, ".config"))


def _release_of(image: pathlib.Path) -> str | None:
    """uname -r from a bzImage's header (the kernel_version string the setup header points
    at; see Documentation/arch/x86/boot.rst)."""
    data = image.read_bytes()[:0x10000]
    if data[0x202:0x206] != b"HdrS":
        return None
    offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    version = data[offset:offset + 256].split(b"\0")[0].decode(errors="replace")
    return version.split(" ")[0] or None


def _is_arm64_image(image: pathlib.Path) -> bool:
    """An arm64 kernel Image carries the magic "ARM\\x64" at offset 0x38
    (Documentation/arch/arm64/booting.rst)."""
    with open(image, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open     # an Image.gz boots too
    with opener(image, "rb") as f:
        return f.read(0x40)[0x38:0x3C] == b"ARM\x64"


def _beside(vmlinux: pathlib.Path, name: str) -> pathlib.Path | None:
    path = vmlinux.parent / name
    return path if path.is_file() else None


# -- what was resolved, kept beside the cache -------------------------------------------------

def _record_path() -> pathlib.Path:
    return cache_dir() / "kernels" / "resolved.json"


def _load_record() -> dict:
    try:
        return json.loads(_record_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_record(name: str, entry: dict) -> None:
    record = _load_record()
    record[name] = {**entry, "resolved_on": time.strftime("%Y-%m-%d")}
    _record_path().parent.mkdir(parents=True, exist_ok=True)
    tmp = _record_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, _record_path())


def pins() -> dict[str, str]:
    """GDB_KPROBE_PIN=6.1=6.1.0-56,6.12=6.12.117+deb12 -> {"6.1": "6.1.0-56", ...}."""
    found = {}
    for item in filter(None, (os.environ.get(PIN_VARIABLE) or "").split(",")):
        name, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise SystemExit(f"lab: {PIN_VARIABLE} takes NAME=ABI or NAME=VERSION items, "
                             f"comma-separated (e.g. 6.1=6.1.0-56), not {item!r}")
        found[name] = value
    return found


def _debian_series(name: str) -> DebianSeries:
    if name in LAB_KERNELS:
        return LAB_KERNELS[name]
    series, sep, flavour = name.partition("/")
    if sep and re.fullmatch(r"\d+\.\d+", series) and re.fullmatch(r"[a-z0-9-]+", flavour):
        return DebianSeries(name, series, flavour)
    raise SystemExit(f"lab: unknown kernel {name!r}; known: {', '.join(names())}, any Debian "
                     "SERIES/FLAVOUR such as 6.1/rt-amd64, or a path to a kernel image")


# -- the archive --------------------------------------------------------------------------------

_lists_refreshed = False


def refresh_package_lists() -> None:
    """`apt-get update`, once per run, when we may (root, or sudo without a password)."""
    global _lists_refreshed
    if _lists_refreshed:
        return
    _lists_refreshed = True
    command = ["apt-get", "update", "-qq"]
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    print("lab: refreshing the package lists (apt-get update)", file=sys.stderr)
    if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
        print("lab: apt-get update failed; resolving from the lists there are", file=sys.stderr)


def _resolve(series: DebianSeries, fresh: bool) -> debarchive.Resolved:
    """Resolve from the package lists, refreshing them when asked or when they fail us."""
    if fresh:
        refresh_package_lists()
    pin = pins().get(series.name)
    try:
        return series.resolve(debarchive.Archive(), pin)
    except debarchive.ResolveError:
        if _lists_refreshed:
            raise
        refresh_package_lists()          # a fresh machine may have no or old lists
        return series.resolve(debarchive.Archive(), pin)


def _deb_path(debs: pathlib.Path, package: str, version: str) -> pathlib.Path:
    # apt-get download names files <package>_<version with : as %3a>_<arch>.deb
    found = sorted(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
    return found[0] if found else debs / f"{package}_{version}_missing.deb"


class DownloadError(RuntimeError):
    """apt-get download failed (old package lists name files the archive dropped)."""


def _download(packages: dict[str, str], debs: pathlib.Path) -> None:
    missing = {p: v for p, v in packages.items() if not _deb_path(debs, p, v).exists()}
    if not missing:
        return
    debs.mkdir(parents=True, exist_ok=True)
    archive = debarchive.Archive()
    sizes = {p: int(archive.fields(p, v).get("Size") or 0) for p, v in missing.items()}
    print(f"lab: downloading {len(missing)} package(s), {sum(sizes.values()) / 1e6:.0f} MB:",
          file=sys.stderr)
    for package, version in missing.items():
        print(f"lab:   {package} {version} ({sizes[package] / 1e6:.1f} MB)", file=sys.stderr)
    started = time.monotonic()
    command = ["apt-get", "download", "-q", *(f"{p}={v}" for p, v in missing.items())]
    # apt's download sandbox user cannot write into a cache under /root: say nothing of it
    result = subprocess.run(command, cwd=debs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("W: Download is performed unsandboxed")]
    if result.returncode != 0:
        raise DownloadError("apt-get download failed: " + " ".join(errors)[-600:])
    print(f"lab: downloaded in {time.monotonic() - started:.0f} s", file=sys.stderr)


def _extract_members(deb: pathlib.Path, dest: pathlib.Path, members: list[str]) -> None:
    """Unpack only some members of a .deb (the -dbg package is 1.8 GB unpacked)."""
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest), *members], stdin=dpkg.stdout, check=True)
    dpkg.stdout.close()
    if dpkg.wait() != 0:
        raise RuntimeError(f"dpkg-deb failed on {deb}")


def _unpack(resolved: debarchive.Resolved, files: KernelFiles, debs: pathlib.Path) -> None:
    assert files.root and files.headers
    files.root.mkdir(parents=True, exist_ok=True)
    rel = resolved.release
    print(f"lab: unpacking {rel} (the DWARF vmlinux is about 600 MB)", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=files.root) as tmp:
        tmpdir = pathlib.Path(tmp)
        _extract_members(_deb_path(debs, resolved.image, resolved.version), tmpdir,
                         [f"./boot/vmlinuz-{rel}", f"./boot/config-{rel}"])
        # The image package's System.map is a stub; the real one is in -dbg.
        _extract_members(_deb_path(debs, resolved.dbg, resolved.version), tmpdir,
                         [f"./usr/lib/debug/boot/vmlinux-{rel}",
                          f"./usr/lib/debug/boot/System.map-{rel}"])
        debug = tmpdir / "usr" / "lib" / "debug" / "boot"
        os.replace(tmpdir / "boot" / f"vmlinuz-{rel}", files.vmlinuz)
        os.replace(tmpdir / "boot" / f"config-{rel}", files.config)
        os.replace(debug / f"System.map-{rel}", files.system_map)
        os.replace(debug / f"vmlinux-{rel}", files.vmlinux)
    headers_root = files.root / "headers"
    if headers_root.exists():
        shutil.rmtree(headers_root)
    headers_root.mkdir()
    for package, version in resolved.packages.items():
        if package.startswith(("linux-headers-", "linux-kbuild-")):
            subprocess.run(["dpkg-deb", "-x", str(_deb_path(debs, package, version)),
                            str(headers_root)], check=True)
    # The flavour Makefile includes the common tree by its installed path; point it
    # at the unpacked copy so nothing has to be installed.
    makefile = files.headers / "Makefile"
    text = makefile.read_text()
    makefile.write_text(text.replace("include /usr/src/", f"include {headers_root}/usr/src/"))


def _complete(files: KernelFiles) -> bool:
    return files.root is not None and (files.root / ".complete").exists()


def _fetch_debian(series: DebianSeries, update: bool) -> KernelFiles:
    recorded = _load_record().get(series.name)
    pin = pins().get(series.name)
    if recorded and not update:
        resolved = debarchive.Resolved.from_json(recorded["resolved"])
        files = _debian_files(series.name, resolved)
        if _complete(files) and (pin is None or pin in (resolved.abi, resolved.version)):
            return files                      # no archive needed: works offline
    resolved = _resolve(series, fresh=update)
    files = _debian_files(series.name, resolved)
    if not _complete(files):
        debs = cache_dir() / "debs"
        try:
            _download(resolved.packages, debs)
        except DownloadError as exc:
            if _lists_refreshed:
                raise debarchive.ResolveError(str(exc)) from None
            print(f"lab: {exc}; resolving again from fresh package lists", file=sys.stderr)
            resolved = _resolve(series, fresh=True)
            files = _debian_files(series.name, resolved)
            _download(resolved.packages, debs)
        _unpack(resolved, files, debs)
        (files.root / ".complete").write_text(resolved.version + "\n")
    for note in resolved.notes:
        print(f"lab: {series.name}: accepted {note}", file=sys.stderr)
    _save_record(series.name, {"resolved": resolved.to_json()})
    return files


def _fetch_built(built: BuiltSeries, update: bool) -> KernelFiles:
    recorded = _load_record().get(built.name)
    if recorded and not update:
        kernel = fpkernel.BuiltKernel(built.name, recorded["version"], built.source_pkg,
                                      built.fragment)
        files = _built_files(kernel)
        if _complete(files):
            return files
    # the same upstream version as the Debian kernel it is like (a newer revision will do)
    like = _load_record().get(built.like)
    if like and not update:
        like_version = like["resolved"]["version"]
    else:
        like_version = _resolve(LAB_KERNELS[built.like], fresh=update).version
    version, note = debarchive.resolve_source(debarchive.Archive(), built.source_pkg, like_version)
    if note:
        print(f"lab: {built.name}: {note}", file=sys.stderr)
    kernel = fpkernel.BuiltKernel(built.name, version, built.source_pkg, built.fragment)
    files = _built_files(kernel)
    if not _complete(files):
        debs = cache_dir() / "debs"
        try:
            _download({built.source_pkg: version}, debs)
        except DownloadError as exc:
            raise debarchive.ResolveError(f"{exc}; `make kernels-update` resolves afresh") from None
        fpkernel.build(kernel, _deb_path(debs, built.source_pkg, version), files.root)
    _save_record(built.name, {"version": version})
    return files


def fetch(name: str, update: bool = False) -> KernelFiles:
    """The kernel's files in the cache: from the cache when complete, else resolved in the
    archive, downloaded and unpacked (or built). `update` resolves afresh."""
    if name in BUILT_KERNELS:
        return _fetch_built(BUILT_KERNELS[name], update)
    return _fetch_debian(_debian_series(name), update)


def check(names_to_check: list[str]) -> list[str]:
    """Does every kernel still resolve in the archive? Metadata only, no download. Returns
    one line per kernel; raises ResolveError naming what vanished."""
    refresh_package_lists()
    archive = debarchive.Archive()
    record = _load_record()
    lines = []
    for name in names_to_check:
        series = LAB_KERNELS[BUILT_KERNELS[name].like] if name in BUILT_KERNELS else _debian_series(name)
        resolved = series.resolve(archive, pins().get(series.name))
        if name in BUILT_KERNELS:
            source = BUILT_KERNELS[name].source_pkg
            version, note = debarchive.resolve_source(archive, source, resolved.version)
            line = f"{name}: {source} {version}" + (f" ({note})" if note else "")
            cached = record.get(name, {}).get("version")
            newest = version
        else:
            line = f"{name}: {resolved.release} {resolved.version}"
            line += "".join(f"; {note}" for note in resolved.notes)
            cached = record.get(name, {}).get("resolved", {}).get("version")
            newest = resolved.version
        if cached and cached != newest:
            line += f" (the cache has {cached}: `make kernels-update` moves it)"
        lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    """`python3 -m qemu.kernels [--update|--check] [--headers] [NAME ...]`: fetch each kernel
    and print its cache folder (with --headers its kbuild tree, `make -C <it> M=...`);
    --update resolves afresh; --check only asks the archive whether each still resolves."""
    flags = {a for a in argv if a.startswith("--")}
    wanted = [a for a in argv if not a.startswith("--")] or [DEFAULT_KERNEL]
    if "--check" in flags:
        try:
            for line in check(wanted):
                print(f"archive: {line}")
        except debarchive.ResolveError as exc:
            print(f"archive: {exc}", file=sys.stderr)
            return 1
        return 0
    for name in wanted:
        try:
            files = fetch(name, update="--update" in flags)
        except debarchive.ResolveError as exc:
            print(f"lab: {name}: {exc}", file=sys.stderr)
            return 1
        print(files.headers if "--headers" in flags else files.root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
