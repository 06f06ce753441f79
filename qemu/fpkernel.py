"""Lab kernels built from Debian's linux-source package: 6.1-fp, with frame pointers.

Debian's kernels unwind with ORC. 6.1-fp is the same 6.1 source built as `make tinyconfig`
plus qemu/configs/lab-fp.config (kprobes, ftrace, DWARF 5, frame pointers, IBT like the
lecture's kernel, no KASLR) with gcc-12. Its cache folder is named after a digest of the fragment's settings and the source
package version, so building the same inputs again does nothing and a changed fragment builds
afresh. The source tree, built in place, is also the kbuild tree the lab modules are built
against.

qemu/kernels.py registers these kernels, downloads the source package and calls build().
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from typing import IO

CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"
COMPILER = "gcc-12"
# x86_64, not the default x86: with ARCH=x86 tinyconfig would turn 64BIT off.
ARCH = "x86_64"
# bzImage depends on vmlinux; `modules` (there are none in-tree) writes Module.symvers,
# without which modpost cannot resolve the lab modules' calls into the kernel; scripts_gdb
# puts vmlinux-gdb.py (the lx-* commands) next to the tree's vmlinux, as `make all` would.
TARGETS = ["bzImage", "vmlinux", "modules_prepare", "modules", "scripts_gdb"]
LOG_TAIL_LINES = 60


class BuildError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class BuiltKernel:
    """A kernel the lab compiles from a Debian linux-source package."""

    name: str                 # the lab's short name: make lab KERNEL=<name>
    version: str              # version of the source package (resolved by qemu/kernels.py)
    source_pkg: str           # linux-source-<series>
    fragment: pathlib.Path    # Kconfig fragment merged over tinyconfig

    @property
    def packages(self) -> list[str]:
        """What kernels.fetch() downloads for it, as for a Debian kernel."""
        return [self.source_pkg]

    @property
    def release(self) -> str:
        """`uname -r`: upstream version (6.1.192-2 -> 6.1.192) and the fragment's LOCALVERSION."""
        local = read_config(self.fragment).get("CONFIG_LOCALVERSION") or '""'
        return self.version.split("-")[0] + local.strip('"')

    def digest(self) -> str:
        """What the build depends on; names its cache folder. The fragment's settings, not
        its text: editing a comment does not cost a rebuild."""
        settings = json.dumps(list(read_config(self.fragment).items()))
        return hashlib.sha256(f"{self.version}\0{settings}".encode()).hexdigest()[:16]


def read_config(path: pathlib.Path) -> dict[str, str | None]:
    """CONFIG_X=value lines, and None for `# CONFIG_X is not set` (a .config or a fragment)."""
    values: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"(CONFIG_\w+)=(.*)", line.strip()):
            values[match[1]] = match[2]
        elif match := re.fullmatch(r"# (CONFIG_\w+) is not set", line.strip()):
            values[match[1]] = None
    return values


def tree(root: pathlib.Path) -> pathlib.Path:
    """The source and build tree in a built kernel's cache folder (`make -C <this> M=...`)."""
    return root / "linux"


def _log_tail(log: pathlib.Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])


def _run(command: list[str], cwd: pathlib.Path, log: pathlib.Path, out: IO[str]) -> None:
    """Run one build step with its output in the log; on failure show the log's tail."""
    out.write(f"\n$ {' '.join(command)}\n")
    out.flush()
    if subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
        out.flush()
        raise BuildError(f"{' '.join(command)} failed in {cwd}; the end of {log}:\n"
                         f"{_log_tail(log)}")


def _make(root: pathlib.Path, log: pathlib.Path, out: IO[str], *targets: str) -> None:
    _run(["make", f"-j{os.cpu_count() or 2}", f"ARCH={ARCH}", *targets], tree(root), log, out)


# kbuild's quiet lines for the objects it compiles ("  CC      init/main.o", "  AS [M] x.o");
# in a dry run (`make -n`) the same lines stand in echo commands
_OBJECT = re.compile(r"^  (?:CC|AS)(?: \[M\])?\s+\S+\.o$")
_OBJECT_DRY = re.compile(r"echo '  (?:CC|AS)(?: \[M\])?\s+\S+\.o'")
PROGRESS_EVERY = 15.0         # seconds between progress lines when stderr is not a terminal


def _count_objects(root: pathlib.Path, *targets: str) -> int:
    """How many objects the build will compile: kbuild's dry run (`make -n`, ~10 s)."""
    dry = subprocess.run(["make", "-n", f"ARCH={ARCH}", *targets], cwd=tree(root),
                         capture_output=True, text=True)
    return sum(len(_OBJECT_DRY.findall(line)) for line in dry.stdout.splitlines())


def _make_with_progress(root: pathlib.Path, log: pathlib.Path, out: IO[str], *targets: str) -> None:
    """The long build: its output goes to the log, and stderr shows objects done out of
    total with the time elapsed (on one line in a terminal, every 15 s elsewhere)."""
    total = _count_objects(root, *targets)
    command = ["make", f"-j{os.cpu_count() or 2}", f"ARCH={ARCH}", *targets]
    out.write(f"\n$ {' '.join(command)}\n")
    out.flush()
    started = last = time.monotonic()
    done = 0
    terminal = sys.stderr.isatty()
    process = subprocess.Popen(command, cwd=tree(root), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace")
    assert process.stdout
    for line in process.stdout:
        out.write(line)
        if _OBJECT.match(line.rstrip("\n")):
            done += 1
            now = time.monotonic()
            if terminal or now - last >= PROGRESS_EVERY:
                last = now
                elapsed = int(now - started)
                shown = f"lab: building: {done}/{max(total, done)} objects, {elapsed // 60}:{elapsed % 60:02d}"
                sys.stderr.write(f"\r{shown}\033[K" if terminal else shown + "\n")
                sys.stderr.flush()
    if terminal:
        sys.stderr.write("\n")
    out.flush()
    if process.wait() != 0:
        raise BuildError(f"{' '.join(command)} failed in {tree(root)}; the end of {log}:\n"
                         f"{_log_tail(log)}")


def _unpack(source_deb: pathlib.Path, source_pkg: str, dest: pathlib.Path) -> None:
    """linux-source-X.deb holds /usr/src/linux-source-X.tar.xz: stream it out, untar it."""
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(source_deb)], stdout=subprocess.PIPE)
    inner = subprocess.Popen(["tar", "-xO", f"./usr/src/{source_pkg}.tar.xz"],
                             stdin=dpkg.stdout, stdout=subprocess.PIPE)
    assert dpkg.stdout and inner.stdout
    dpkg.stdout.close()
    untar = subprocess.run(["tar", "-xJ", "-C", str(partial), "--strip-components=1"],
                           stdin=inner.stdout)
    inner.stdout.close()
    if (dpkg.wait(), inner.wait(), untar.returncode) != (0, 0, 0):
        raise BuildError(f"unpacking {source_deb} failed")
    # Renamed only when complete: an interrupted unpack starts over, a finished one is kept.
    os.replace(partial, dest)


def _check_config(config: pathlib.Path, fragment: pathlib.Path) -> None:
    """Kconfig drops options whose dependencies are off without a word: say which."""
    got = read_config(config)
    wrong = [f"  {name}: wanted {want or 'not set'}, got {got.get(name) or 'not set'}"
             for name, want in read_config(fragment).items() if got.get(name) != want]
    if wrong:
        raise BuildError(f"the kernel config does not have what {fragment} asks for "
                         "(a dependency missing from the fragment?):\n" + "\n".join(wrong))


def _build_locked(kernel: BuiltKernel, source_deb: pathlib.Path, root: pathlib.Path,
                  log: pathlib.Path) -> None:
    src = tree(root)
    if not src.exists():
        _unpack(source_deb, kernel.source_pkg, src)
    # Debian's Makefile includes .kernelvariables (its headers packages set the compiler
    # there): later `make -C <tree> M=...` builds of the lab modules then use gcc-12 too.
    (src / ".kernelvariables").write_text(
        f"# Written by gdb-kprobe's qemu/fpkernel.py\nCC = {COMPILER}\nHOSTCC = {COMPILER}\n")
    with open(log, "a", encoding="utf-8") as out:
        _make(root, log, out, "tinyconfig")
        _run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(kernel.fragment)],
             src, log, out)
        _make(root, log, out, "olddefconfig")
        _check_config(src / ".config", kernel.fragment)
        # The tree may hold a half build from an interrupted run: make carries on from it.
        _make_with_progress(root, log, out, *TARGETS)
    release = subprocess.run(["make", "-s", f"ARCH={ARCH}", "kernelrelease"], cwd=src,
                             capture_output=True, text=True, check=True).stdout.strip()
    if release != kernel.release:
        raise BuildError(f"built kernel release {release!r}, expected {kernel.release!r}")
    shutil.copyfile(src / "arch" / "x86" / "boot" / "bzImage", root / "vmlinuz")
    shutil.copyfile(src / "System.map", root / "System.map")
    shutil.copyfile(src / ".config", root / "config")
    # A hard link, not a copy (it is big) nor a symlink: through a symlink gdb would find the
    # tree's vmlinux-gdb.py and print that auto-loading it was declined.
    (root / "vmlinux").unlink(missing_ok=True)
    os.link(src / "vmlinux", root / "vmlinux")


def build(kernel: BuiltKernel, source_deb: pathlib.Path, root: pathlib.Path) -> None:
    """Build the kernel into root (vmlinuz, vmlinux, System.map, config, tree); once."""
    stamp = root / ".complete"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        # Two labs starting at once (make lab and make test) must not build one tree twice.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return
        log = root / "build.log"
        print(f"lab: building {kernel.name} ({kernel.release}) from {source_deb.name} with "
              f"{os.cpu_count() or 2} cores (about 5 min on 2); log in {log}", file=sys.stderr)
        started = time.monotonic()
        _build_locked(kernel, source_deb, root, log)
        seconds = time.monotonic() - started
        print(f"lab: built {kernel.name} in {seconds / 60:.1f} min", file=sys.stderr)
        stamp.write_text(f"{kernel.version}\nbuilt in {seconds:.0f} s\n")
