"""`make bench`: kp-list over a slow gdbstub link, against a naive gdb.Value walker.

For each lab kernel and N in 10, 100, 1000 kprobe events this boots a lab whose
scenario registers them, attaches gdb through bench/relay.py (which delays every
gdb → stub packet and counts packets), and measures side by side, at 0 ms and 1 ms
per round trip:

  * `kp-list` and `kp-list -v`: wall time inside gdb and memory-read packets;
  * `naive-kp-list` (bench/naive_walker.py), the scripts/gdb/linux-style yardstick;
  * `kp-hooks` (every hooked function), held to ≤ 2× kp-list in reads and time;
  * the guest's own `cat /sys/kernel/debug/kprobes/list` (the floor);
  * the cold start `gdb vmlinux` → `source gdbinit.py` → attach → first kp-list,
    with gdb's index cache warm and with an empty one.

With `--baseline REV`, the same boot also runs kp-list and kp-list -v of gdb_kprobe
at REV and of the candidate (the working tree, or --rev) in turns, and compares them.

Every output is checked against the guest's debugfs list: a benchmark of a wrong
answer is worthless. Results go to bench/results/<date>-<kernel>.md and .json
(<date>-r2-<kernel> for a second run on the same day, and so on).

    .venv/bin/python -m bench.run [--kernels 6.1,6.12] [--counts 10,100,1000] [--rev HEAD]
                                  [--baseline REV]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any

from bench.checks import Check, target_checks
from bench.measure import measure
from bench.plan import discover_functions, plan_events
from bench.relay import LINKS, Link, parse_link
from bench.provenance import machine_info, pin_revision, snapshot_plugin, source_state
from bench.report import (COMPARISON_HEADER, HOOKS_HEADER, LINKS_HEADER, comparison_rows,
                          hooks_rows, link_checks, links_rows,
                          markdown_table, rerender, table_rows, write_results)
from bench.session import Tools
from qemu import kernels
from qemu.lab import GDBINIT


# the naive walker reads ~6 small values per probe: 0.35 s per 100 probes at 1 ms, ~3 s per
# 100 at 115200 baud
DEFAULT_LINK_MAX_N = "serial115200=100,serial921600=1000,tcp1ms=1000"


def links_for(options: argparse.Namespace, n: int) -> list[Link]:
    """The links measured at this N: --links (or --delays), less those capped below N."""
    names = options.links.split(",") if options.links else \
        [f"{float(d):g}" for d in options.delays.split(",") if d]
    caps = dict(item.split("=") for item in options.link_max_n.split(",") if item)
    links = [parse_link(name) for name in names if name]
    return [link for link in links if n <= int(caps.get(link.name, n))]


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", default=os.environ.get("KERNELS") or "6.1,6.12",
                        help="comma-separated lab kernels (default: 6.1,6.12)")
    parser.add_argument("--counts", default="10,100,1000", help="numbers of kprobe events")
    parser.add_argument("--delays", default="0,1", help="relay delays, ms per round trip")
    parser.add_argument("--links", help="links to imitate, replacing --delays: "
                        f"{', '.join(LINKS)} or a delay in ms (e.g. serial115200,tcp0,tcp1ms)")
    parser.add_argument("--link-max-n", default=DEFAULT_LINK_MAX_N, metavar="LINK=N,...",
                        help="the largest N measured on a slow link (the naive walker would "
                             f"take minutes); default {DEFAULT_LINK_MAX_N}")
    # the host's 2 cores are shared with TCG: a median of 5 rides out most load spikes
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement")
    parser.add_argument("--read-log", action="store_true",
                        help="keep each command's raw per-read log in the results JSON "
                             "(\"ms address length\" per read: MBs at N=10,000; the "
                             "report uses only the summaries)")
    parser.add_argument("--gdb", default=os.environ.get("GDB") or "gdb", help="gdb binary")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the cProfile of kp-list at the largest N")
    parser.add_argument("--rev", default=os.environ.get("BENCH_REV") or None,
                        help="measure gdb_kprobe as committed in REV (e.g. HEAD) instead of "
                             "the working tree")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run kp-list and kp-list -v of gdb_kprobe at REV side by side "
                             "with the candidate (the working tree, or --rev) in each boot")
    parser.add_argument("--render", nargs="+", metavar="JSON",
                        help="only rewrite the .md of these results .json files")
    options = parser.parse_args(argv)
    if not options.render:
        unknown = [k for k in options.kernels.split(",") if k and k not in kernels.LAB_KERNELS]
        if unknown:
            parser.error(f"unknown kernel(s) {', '.join(unknown)}; "
                         f"known: {', '.join(kernels.LAB_KERNELS)}")
    return options


@dataclasses.dataclass
class Plugins:
    """The gdb_kprobe under test (candidate) and, with --baseline, the one it is held to."""

    candidate: Tools
    candidate_rev: str | None
    baseline: Tools | None = None
    baseline_source: dict[str, Any] | None = None


def prepare_plugins(options: argparse.Namespace, workdir: pathlib.Path) -> Plugins:
    """Snapshots of the revisions asked for, pinned to commit ids now."""
    rev = pin_revision(options.rev) if options.rev else None
    gdbinit = snapshot_plugin(rev, workdir / "plugin") if rev else GDBINIT
    plugins = Plugins(Tools(options.gdb, gdbinit, workdir, options.repeat, options.read_log), rev)
    if options.baseline:
        baseline_rev = pin_revision(options.baseline)
        plugins.baseline = dataclasses.replace(
            plugins.candidate, gdbinit=snapshot_plugin(baseline_rev, workdir / "baseline"))
        plugins.baseline_source = {"rev": options.baseline,
                                   "commit": source_state(baseline_rev)["commit"]}
    return plugins


def bench_kernel(kernel: str, options: argparse.Namespace, plugins: Plugins,
                 machine: dict[str, Any]) -> list[dict[str, Any]]:
    """Every N on one kernel; writes its results and returns its runs."""
    counts = sorted(int(c) for c in options.counts.split(",") if c)
    source = source_state(plugins.candidate_rev)
    workdir = plugins.candidate.workdir
    print(f"bench: {kernel}: finding {max(counts)} probe-able functions ...",
          file=sys.stderr, flush=True)
    functions = discover_functions(kernel, max(counts), workdir)
    runs = []
    for n in counts:
        print(f"bench: {kernel}: N={n} ...", file=sys.stderr, flush=True)
        runs.append(measure(kernel, plan_events(functions, n), links_for(options, n),
                            plugins.candidate,
                            options.profile and n == max(counts), plugins.baseline))
    stem = write_results(kernel, machine, runs, options.repeat, source, plugins.baseline_source)
    print(f"bench: {kernel}: wrote {stem}.md and .json", file=sys.stderr, flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    if options.render:
        return rerender(options.render)
    machine = machine_info(options.gdb)
    all_rows: list[list[str]] = []
    link_rows: list[list[str]] = []
    comparison: list[list[str]] = []
    hooks: list[list[str]] = []
    all_checks: list[Check] = []
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="kp-bench-"))
    try:
        plugins = prepare_plugins(options, workdir)
        for kernel in [k for k in options.kernels.split(",") if k]:
            runs = bench_kernel(kernel, options, plugins, machine)
            all_rows += table_rows(kernel, runs)
            link_rows += links_rows(kernel, runs)
            comparison += comparison_rows(kernel, runs)
            hooks += hooks_rows(kernel, runs)
            all_checks += target_checks(kernel, runs) + link_checks(kernel, runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{machine['nproc']} × {machine['cpu']}; {machine['gdb']}\n")
    print(markdown_table(all_rows))
    print("Per link (bytes are what the `m` reads asked for):\n")
    print(markdown_table(link_rows, LINKS_HEADER))
    if hooks:
        print("kp-hooks (every hooked function) beside kp-list, same boot:\n")
        print(markdown_table(hooks, HOOKS_HEADER))
    if comparison:
        candidate = f"--rev {options.rev}" if options.rev else "the working tree"
        print(f"Side by side, baseline {options.baseline} vs candidate ({candidate}; ratios "
              "baseline/candidate: above 1 the candidate is faster or reads less):\n")
        print(markdown_table(comparison, COMPARISON_HEADER))
    for target, ok, measured in all_checks:
        print(f"{'met   ' if ok else 'MISSED'}  {target}: {measured}")
    correct = all(ok for target, ok, _ in all_checks if "outputs equal" in target)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
