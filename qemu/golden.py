"""Golden outputs of the plugin's commands on the lab kernels, to check a refactoring against.

    .venv/bin/python -m qemu.golden --kernels 6.1,6.12,6.1-fp --record tests/golden
    .venv/bin/python -m qemu.golden --kernels 6.1,6.12,6.1-fp --compare tests/golden

Per kernel: boot the default scenario, attach gdb, let the guest settle (the optimizer works
asynchronously), make one TCP connection (inet_accept / inet_csk_accept run, so the lab's
probes and kretprobe instances have been used once), stop the guest, select CPU 0 (thread 1:
which vCPU reports the stop is chance) and run a fixed list of commands. Each output goes to
DIR/<kernel>/<name>.txt, first line the command as typed at the lab's prompt.

What is masked, and why (found by recording each kernel twice unmasked, --unmasked, and
diffing: these were the only differences):
- direct-map (heap) pointers, 0xff11... (5-level paging: 6.1, 6.12) or 0xffff888... (4-level:
  6.1-fp): kmalloc'ed objects such as struct trace_kprobe and its struct kprobe, aggregate and
  optimized kprobes, symbol_name strings, rethooks. Which slab objects the boot hands out
  (SLUB freelist randomization, the order tasks allocate in) moves them between boots even
  under nokaslr. Each distinct pointer becomes <heap-N>, N counted from 1 in order of first
  appearance in the file, so a pointer seen twice (a list_head pointing at itself, a struct
  kprobe inside its trace_kprobe) still reads as the same value.
- the same pointers inside code bytes: the optprobe detour buffer loads its optimized_kprobe
  with `movabs $<pointer>,%rdi`, so its bytes hold the pointer little-endian.
Also replaced, though it does not differ between boots: the lab's cache directory (module
paths in kp-modules) becomes <cache>, so the files compare under another GDB_KPROBE_CACHE, and
the digest naming the lab modules' build (modules/<digest>/) becomes <sources>.
Everything else is kept: kernel text, module, ftrace trampoline, optprobe detour and
single-step slot addresses, flags, handlers, code bytes, nmissed, kretprobe instance counts
and the trace events' hit counts were the same on every boot under nokaslr (the hit counts
follow the commands the console shell runs; a boot whose debugfs list takes a third read
to settle would count one more, and the diff then shows only `hits N`).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import pathlib
import re
import shutil
import sys
import tempfile

from qemu import build, kernels
from qemu.lab import ACCEPT_TRAFFIC, REPO, Attached, Gdb, Lab

GOLDEN = REPO / "tests" / "golden"
PROMPT = Gdb.PROMPT
LIST = "/sys/kernel/debug/kprobes/list"
BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
# the lecture's place: an instruction boundary on Debian 6.1 only (elsewhere a one-line error,
# which is an output like any other)
LECTURE_LOCALS_PLACE = "inet_accept+20"


@dataclasses.dataclass(frozen=True)
class Step:
    name: str                      # file name without .txt
    command: str                   # the gdb command


@dataclasses.dataclass(frozen=True)
class ScenarioPlaces:
    inner: str                     # the optimized probe, e.g. inet_accept+0x14
    module_int3: str               # the lab module's int3 probe, e.g. inet_csk_accept+7


def scenario_places(kernel: str) -> ScenarioPlaces:
    """The per-kernel probe places of the default scenario, read from its file."""
    text = build.scenario_path("default", kernel).read_text()
    inner = re.search(r"^event p:kprobes/kp_inner (\S+)", text, re.M)
    int3 = re.search(r"^insmod kp_lab_kprobe .*\bint3_symbol=(\w+) .*\bint3_offset=(\d+)",
                     text, re.M)
    if not inner or not int3:
        raise SystemExit(f"golden: the default scenario of {kernel} has no kp_inner event or "
                         "no kp_lab_kprobe int3 probe")
    return ScenarioPlaces(inner.group(1), f"{int3.group(1)}+{int3.group(2)}")


def check_places(places: ScenarioPlaces, blacklisted: list[str]) -> list[str]:
    """kp-check's places: accepted ones, mid-instruction ones, and each kind of refusal."""
    return ["vfs_read", "vfs_read+1", "vfs_write+5", "do_sys_openat2", "do_sys_openat2+3",
            "filp_close", "inet_accept", "inet_accept+0x10", places.inner,
            "no_such_function_kp", "jiffies", "init_task", "inet_accept+9999",
            "kp_lab_kprobe:kp_lab_target", "kp_lab_kprobe:kp_lab_target+1", *blacklisted]


def steps(places: ScenarioPlaces, blacklisted: list[str]) -> list[Step]:
    """The fixed list of commands, in the order they run, all at one stop of the guest."""
    shown = [("ftrace-entry", "do_sys_openat2"), ("return", "ksys_write"),
             ("optimized", places.inner), ("disabled", "vfs_fsync"),
             ("aggregate", "vfs_statx"), ("module-int3", places.module_int3),
             ("module-entry", "inet_csk_accept")]
    found = [Step("kp-list", "kp-list"), Step("kp-list-v", "kp-list -v"),
             Step("kp-list-json", "kp-list --json")]
    for role, place in shown:
        found += [Step(f"kp-show-{role}", f"kp-show {place}"),
                  Step(f"kp-show-{role}-json", f"kp-show --json {place}")]
    found += [Step("kp-locals", f"kp-locals {LECTURE_LOCALS_PLACE}"),
              Step("kp-locals-json", f"kp-locals --json {LECTURE_LOCALS_PLACE}")]
    if _offset(places.inner) != _offset(LECTURE_LOCALS_PLACE):
        # where the lecture's place is mid-instruction, also the kernel's own inner place
        found += [Step("kp-locals-inner", f"kp-locals {places.inner}"),
                  Step("kp-locals-inner-json", f"kp-locals --json {places.inner}")]
    found += [Step("kp-check", "kp-check " + " ".join(check_places(places, blacklisted))),
              Step("kp-blacklist", "kp-blacklist"), Step("kp-modules", "kp-modules"),
              Step("kp-where", "kp-where")]
    return found


def _offset(place: str) -> int:
    return int(place.partition("+")[2] or "0", 0)


def first_blacklisted(blacklist: str, count: int = 3) -> list[str]:
    """The first `count` distinct symbol names of debugfs's kprobes/blacklist (not kp-blacklist's:
    the places must not depend on the code under test)."""
    names: list[str] = []
    for line in blacklist.splitlines():
        name = line.split("\t")[1] if "\t" in line else ""
        if name and " " not in name and name not in names:
            names.append(name)
    return names[:count]


# -- masking -----------------------------------------------------------------------------
HEAP_POINTER = re.compile(r"0x(?:ff11[0-9a-f]{12}|ffff888[0-9a-f]{9})\b")


def mask(text: str) -> str:
    """The output with what differs between boots replaced (see the module docstring)."""
    numbers: dict[str, int] = {}

    def heap(match: re.Match) -> str:
        return f"<heap-{numbers.setdefault(match.group(0), len(numbers) + 1)}>"

    text = HEAP_POINTER.sub(heap, text)
    # the same pointers inside code bytes (the optprobe detour's movabs $op,%rdi), little-endian,
    # as text shows them ("c0 33 .. 11 ff") and as JSON does ("c033..11ff")
    for pointer, number in numbers.items():
        encoded = int(pointer, 16).to_bytes(8, "little").hex()
        for form in (" ".join(encoded[i:i + 2] for i in range(0, 16, 2)), encoded):
            text = text.replace(form, f"<heap-{number}>")
    # not a boot difference but a machine's: where the lab's cache is (GDB_KPROBE_CACHE), and
    # the build of the lab's modules, named by a digest of qemu/modules/ (a new module there
    # changes it, not what the commands say)
    text = text.replace(str(kernels.cache_dir()), "<cache>")
    return re.sub(r"(/modules/)[0-9a-f]{16}(?=/)", r"\1<sources>", text)


# -- recording ---------------------------------------------------------------------------
def record_kernel(kernel: str, directory: pathlib.Path, gdb_binary: str = "gdb",
                  masked: bool = True) -> list[pathlib.Path]:
    """Boot `kernel`, run the steps at one stop, write DIR/<kernel>/<name>.txt; the paths."""
    places = scenario_places(kernel)
    target = directory / kernel
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    written = []
    with Lab(kernel) as lab:
        attached = Attached(lab, lab.gdb(gdb_binary=gdb_binary))
        attached.resume()
        lab.guest.settled(f"cat {LIST}")
        attached.guest(ACCEPT_TRAFFIC)
        blacklisted = first_blacklisted(attached.guest(f"cat {BLACKLIST}"))
        lab.guest.settled(f"cat {LIST}")
        attached.stop()
        attached.gdb_cmd("thread 1")   # CPU 0: which vCPU reports the stop is chance
        for step in steps(places, blacklisted):
            output = attached.gdb_cmd(step.command)
            text = f"{PROMPT}{step.command}\n{output}"
            path = target / f"{step.name}.txt"
            path.write_text(mask(text) if masked else text)
            written.append(path)
    return written


def record(kernel_names: list[str], directory: pathlib.Path, gdb_binary: str = "gdb",
           masked: bool = True) -> None:
    for kernel in kernel_names:
        print(f"golden: recording {kernel} into {directory / kernel} ...", file=sys.stderr)
        written = record_kernel(kernel, directory, gdb_binary, masked)
        print(f"golden: {kernel}: {len(written)} files", file=sys.stderr)


def differences(expected: pathlib.Path, actual: pathlib.Path) -> list[str]:
    """Unified diffs, one per file that differs (or exists on one side only)."""
    names = sorted({p.relative_to(expected) for p in expected.rglob("*.txt")} |
                   {p.relative_to(actual) for p in actual.rglob("*.txt")})
    found = []
    for name in names:
        old, new = expected / name, actual / name
        old_lines = old.read_text().splitlines(keepends=True) if old.exists() else []
        new_lines = new.read_text().splitlines(keepends=True) if new.exists() else []
        if old_lines != new_lines or old.exists() != new.exists():
            found.append("".join(difflib.unified_diff(
                old_lines, new_lines, f"{old}" if old.exists() else "/dev/null",
                f"{new}" if new.exists() else "/dev/null")))
    return found


def compare(kernel_names: list[str], golden: pathlib.Path, gdb_binary: str = "gdb") -> int:
    """Record again into a temporary directory; print a diff per differing file. 0 if equal."""
    with tempfile.TemporaryDirectory(prefix="kp-golden-") as fresh:
        fresh_dir = pathlib.Path(fresh)
        record(kernel_names, fresh_dir, gdb_binary)
        diffs = [d for kernel in kernel_names
                 for d in differences(golden / kernel, fresh_dir / kernel)]
        files = sum(1 for kernel in kernel_names for _ in (golden / kernel).glob("*.txt"))
    for diff in diffs:
        sys.stdout.write(diff if diff.endswith("\n") else diff + "\n")
    if diffs:
        print(f"golden: {len(diffs)} file(s) differ from {golden} "
              f"({', '.join(kernel_names)})")
        return 1
    print(f"golden: all {files} files equal to {golden} ({', '.join(kernel_names)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qemu.golden", description=(
        "Record the plugin's outputs on the lab kernels (golden files), or compare the "
        "current code's outputs with recorded ones."))
    parser.add_argument("--kernels", default="6.1,6.12,6.1-fp",
                        help="comma-separated lab kernels (default: %(default)s)")
    parser.add_argument("--gdb", default="gdb", help="gdb binary (default: %(default)s)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--record", metavar="DIR", type=pathlib.Path,
                        help=f"write DIR/<kernel>/<name>.txt (the committed ones: {GOLDEN})")
    action.add_argument("--compare", metavar="DIR", type=pathlib.Path,
                        help="record again and print a unified diff per file that differs; "
                             "exit 1 if any")
    parser.add_argument("--unmasked", action="store_true",
                        help="with --record: write the outputs as they are (to find what "
                             "differs between boots)")
    options = parser.parse_args(argv)
    kernel_names = [k for k in options.kernels.split(",") if k]
    if options.record:
        record(kernel_names, options.record, options.gdb, masked=not options.unmasked)
        return 0
    if options.unmasked:
        parser.error("--unmasked goes with --record only")
    missing = [k for k in kernel_names if not (options.compare / k).is_dir()]
    if missing:
        parser.error(f"no recording of {', '.join(missing)} in {options.compare}")
    return compare(kernel_names, options.compare, options.gdb)


if __name__ == "__main__":
    sys.exit(main())
