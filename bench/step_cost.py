"""`make bench-step`: what the plugin costs on every stop, next to plain gdb (issue #19).

One boot per kernel, a guest loop running (`cat /proc/version`, so the stepped code is
real and the stop place is reached again and again), and gdbs taking turns on QEMU's one
gdbstub: plain gdb, gdb with the plugin (the working tree, or --rev), and with --baseline
REV the plugin at REV, in that order, round after round, so that the host's load weighs
on every side alike. One turn: attach, then per command a few samples, then detach.

The stop place is `version_proc_show`, the seq_file show function of /proc/version
(reached only by the loop, never blocks, called through a function pointer so never
inlined): `tbreak` there and `continue`, then
  * stepi: `stepi` again and again from the function's entry;
  * next:  `next` again and again from there (into seq_read_iter as it returns);
  * bt:    after each untimed `stepi`, a `bt` (every bt at a fresh stop);
  * finish: a fresh `tbreak` + `continue` per sample, then `finish` (back to seq_read_iter).
Each sample is timed inside gdb until its next prompt (bench/gdb_timer.py `bench-prompt`:
stop events and prompt hooks included, pexpect's round trip not). Medians per side and
the ratios plugin / plain are printed and written to bench/results/<date>-step-<kernel>.md
and .json, with the load average around each round.

    .venv/bin/python -m bench.step_cost [--kernels 6.1,6.12] [--samples 200] [--rev HEAD]
                                        [--baseline REV] [--profile]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import pexpect

from bench.common import BENCH, RESULTS, BenchError
from bench.provenance import machine_info, pin_revision, snapshot_plugin, source_state
from qemu import kernels
from qemu.lab import GDBINIT, Gdb, Lab

PLACE = "version_proc_show"
LOOP = ("(sh -c 'while :; do cat /proc/version; done' </dev/null >/dev/null 2>&1 &)")
COMMANDS = ("stepi", "next", "bt", "finish")
TARGETS = {"stepi": 1.1, "next": 1.1, "bt": 1.3}       # plugin / plain, at most
PER_TURN = 10               # samples of one command in one turn
SAMPLE_TIMEOUT = 20         # a `next`/`finish` whose task moved CPU never returns in plain gdb


class Side:
    """One gdb (plain, or with a plugin) that attaches for its turns."""

    def __init__(self, lab: Lab, name: str, gdb_binary: str, gdbinit: pathlib.Path | None,
                 workdir: pathlib.Path) -> None:
        self.lab = lab
        self.name = name
        self.workdir = workdir
        args = lab.gdb_args(attach=False, plugin=False)
        if gdbinit is not None:
            args += ["-ex", f"source {gdbinit}"]
        args += ["-ex", f"source {BENCH / 'gdb_timer.py'}"]
        self.gdb = Gdb(["-ex", "set style enabled off", *args], gdb_binary=gdb_binary)
        self.lost = 0

    def attach(self) -> None:
        out = self.gdb.execute(f"target remote 127.0.0.1:{self.lab.gdb_port}")
        if "Remote debugging using" not in out:
            raise BenchError(f"{self.name}: gdb could not attach: {out.strip()}")

    def detach(self) -> None:
        self.gdb.execute("delete")
        self.gdb.execute("detach")

    def to_place(self) -> None:
        """A fresh stop at the entry of PLACE (the guest loop gets there within ms)."""
        self.gdb.execute(f"tbreak {PLACE}")
        self.gdb.child.sendline("continue")
        self.gdb.child.expect_exact(Gdb.PROMPT, timeout=60)

    def timed(self, command: str) -> float | None:
        """Seconds until the prompt, or None when the command did not come back (then
        the target is interrupted, and the sample is counted as lost)."""
        try:
            out = self.gdb.execute(f"bench-prompt {command}", timeout=SAMPLE_TIMEOUT)
        except pexpect.TIMEOUT:
            self.gdb.interrupt()
            self.lost += 1
            return None
        match = re.search(r"BENCH-TIME ([0-9.]+) (.*)", out)
        if match is None or match.group(2).strip() != "ok":
            raise BenchError(f"{self.name}: {command}: {out.strip()!r}")
        return float(match.group(1))

    def run(self, command: str, untimed: str | None = None) -> str:
        return self.gdb.execute(command if untimed is None else untimed)

    def profile(self, commands: list[str], path: pathlib.Path) -> str:
        """cProfile of `commands` in turn inside gdb (the plugin's Python only: gdb's own C
        work shows as the time of gdb.execute), top functions by cumulative time."""
        script = self.workdir / f"profile-{self.name}.py"
        script.write_text(
            "import cProfile, io, pstats\nimport gdb\n_profile = cProfile.Profile()\n"
            f"for _command in {commands!r}:\n"
            "    _profile.runcall(gdb.execute, _command, to_string=True)\n"
            "_text = io.StringIO()\n"
            "pstats.Stats(_profile, stream=_text).sort_stats('cumulative').print_stats(30)\n"
            f"open({str(path)!r}, 'w').write(_text.getvalue())\n")
        self.gdb.execute(f"source {script}", timeout=300)
        return path.read_text(encoding="utf-8")

    def close(self) -> None:
        self.gdb.close()


def one_turn(side: Side, samples: dict[str, list[float]], per_turn: int = PER_TURN) -> None:
    side.attach()
    try:
        side.to_place()
        for _ in range(per_turn):
            append(samples["stepi"], side.timed("stepi"))
        side.to_place()
        for _ in range(per_turn):
            append(samples["next"], side.timed("next"))
        side.to_place()
        for _ in range(per_turn):
            side.run("stepi")
            append(samples["bt"], side.timed("bt"))
        for _ in range(per_turn):
            side.to_place()
            append(samples["finish"], side.timed("finish"))
    finally:
        side.detach()


def append(into: list[float], value: float | None) -> None:
    if value is not None:
        into.append(value)


def bench_kernel(kernel: str, options: argparse.Namespace, plugins: dict[str, pathlib.Path | None],
                 workdir: pathlib.Path) -> dict[str, Any]:
    rounds = -(-options.samples // options.per_turn)
    lab = Lab(kernel)
    lab.start()
    sides: dict[str, Side] = {}
    try:
        lab.guest.run(LOOP)
        for name, gdbinit in plugins.items():
            sides[name] = Side(lab, name, options.gdb, gdbinit, workdir)
        samples = {name: {command: [] for command in COMMANDS} for name in sides}
        # one untimed turn each: the plugin reads the vmlinux's ELF symbols once per gdb,
        # gdb loads the DWARF of the functions stepped through
        for side in sides.values():
            one_turn(side, {command: [] for command in COMMANDS})
        loads = []
        started = time.monotonic()
        for number in range(rounds):
            loads.append([round(x, 2) for x in os.getloadavg()])
            names = list(sides)            # each side first in turn: no side always last
            for name in names[number % len(names):] + names[:number % len(names)]:
                one_turn(sides[name], samples[name], options.per_turn)
            print(f"bench-step: {kernel}: round {number + 1}/{rounds} "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        loads.append([round(x, 2) for x in os.getloadavg()])
        profiles = {}
        if options.profile:
            for name, side in sides.items():
                if plugins[name] is None:
                    continue
                side.attach()
                side.to_place()
                profiles[name] = side.profile(["stepi", "bt"] * 25, workdir / f"{name}.prof")
                side.detach()
        lost = {name: side.lost for name, side in sides.items()}
    finally:
        for side in sides.values():
            side.close()
        lab.stop()
    return {"kernel": kernel, "release": kernels.fetch(kernel).release, "place": PLACE,
            "per_turn": options.per_turn, "rounds": rounds, "loadavg": loads, "lost": lost,
            "samples": samples, "profiles": profiles}


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per command: median ms of each side, and each plugin's ratio to plain gdb."""
    rows = []
    samples = result["samples"]
    for command in COMMANDS:
        row: dict[str, Any] = {"command": command, "n": {}, "median_ms": {}, "ratio": {}}
        for name, per_command in samples.items():
            values = per_command[command]
            row["n"][name] = len(values)
            row["median_ms"][name] = round(statistics.median(values) * 1000, 3) if values else None
            row.setdefault("p25_ms", {})[name] = (
                round(statistics.quantiles(values, n=4)[0] * 1000, 3) if len(values) > 1 else None)
        plain = row["median_ms"].get("plain")
        for name, median in row["median_ms"].items():
            if name != "plain" and plain and median:
                row["ratio"][name] = round(median / plain, 2)
        rows.append(row)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    result = payload["result"]
    names = list(result["samples"])
    plugins = [n for n in names if n != "plain"]
    lines = [f"# Per-stop cost, {result['kernel']} ({result['release']})", "",
             f"{payload['date']}; {payload['machine']['nproc']} × {payload['machine']['cpu']}; "
             f"{payload['machine']['gdb']}; {payload['machine']['qemu']}.",
             "Sides: " + ", ".join(f"{n} ({payload['sides'][n]})" for n in names) + ", taking turns "
             f"on one gdbstub (each side first in turn), {result['rounds']} rounds of {result['per_turn']} samples per "
             f"command and side. Stop place: `{result['place']}` with a guest loop of "
             "`cat /proc/version`. Time inside gdb until its next prompt; medians in ms.",
             f"Load average (1, 5, 15 min) at the start of each round: first "
             f"{result['loadavg'][0]}, last {result['loadavg'][-1]}, highest 1-min "
             f"{max(l[0] for l in result['loadavg'])}.",
             f"Samples lost (a `next`/`finish` that did not come back in {SAMPLE_TIMEOUT} s): "
             f"{result['lost']}.", "",
             "| command | " + " | ".join(names) + " | " +
             " | ".join(f"{n} / plain" for n in plugins) + " | target |",
             "| --- " * (2 + len(names) + len(plugins)) + "|"]
    for row in payload["summary"]:
        target = TARGETS.get(row["command"])
        cells = [f"{row['median_ms'][n]:.2f}" if row["median_ms"][n] is not None else "–"
                 for n in names]
        ratios = [f"{row['ratio'][n]:.2f}×" if n in row["ratio"] else "–" for n in plugins]
        lines.append(f"| `{row['command']}` | " + " | ".join(cells) + " | " +
                     " | ".join(ratios) + f" | {f'≤ {target}×' if target else ''} |")
    lines += ["", "Lower quartiles (ms; the host's load stretches the upper half of each side's "
              "samples):", "", "| command | " + " | ".join(names) + " | " +
              " | ".join(f"{n} / plain" for n in plugins) + " |",
              "| --- " * (1 + len(names) + len(plugins)) + "|"]
    for row in payload["summary"]:
        quartiles = row.get("p25_ms", {})
        plain = quartiles.get("plain")
        lines.append(f"| `{row['command']}` | " + " | ".join(
            f"{quartiles[n]:.2f}" if quartiles.get(n) else "–" for n in names) + " | " +
            " | ".join(f"{quartiles[n] / plain:.2f}×" if plain and quartiles.get(n) else "–"
                       for n in plugins) + " |")
    for name, text in result.get("profiles", {}).items():
        lines += ["", f"## cProfile of 25 × (`stepi`, `bt`), {name}", "", "```",
                  text.strip(), "```"]
    return "\n".join(lines) + "\n"


def results_stem(kernel: str) -> pathlib.Path:
    today = datetime.date.today().isoformat()
    stem = RESULTS / f"{today}-step-{kernel}"
    run = 2
    while pathlib.Path(f"{stem}.json").exists():
        stem = RESULTS / f"{today}-r{run}-step-{kernel}"
        run += 1
    return stem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", default=os.environ.get("KERNELS") or "6.1,6.12")
    parser.add_argument("--gdb", default=os.environ.get("GDB") or "gdb")
    parser.add_argument("--samples", type=int, default=200, help="per command and side")
    parser.add_argument("--per-turn", type=int, default=PER_TURN,
                        help="samples of each command per turn (fewer: the sides alternate "
                             "more often, at the cost of more attaches)")
    parser.add_argument("--rev", help="the plugin as committed in REV instead of the working tree")
    parser.add_argument("--baseline", metavar="REV", help="also the plugin at REV, a third side")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile 25 × (stepi, bt) in each plugin's gdb after the rounds")
    parser.add_argument("--render", nargs="+", metavar="JSON",
                        help="only rewrite the .md of these results .json files")
    options = parser.parse_args(argv)
    if options.render:
        for name in options.render:
            payload = json.loads(pathlib.Path(name).read_text())
            payload["summary"] = summary(payload["result"])
            pathlib.Path(name.removesuffix(".json") + ".md").write_text(markdown(payload))
        return 0
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="kp-bench-step-"))
    machine = machine_info(options.gdb)
    status = 0
    try:
        rev = pin_revision(options.rev) if options.rev else None
        plugins: dict[str, pathlib.Path | None] = {"plain": None}
        sides = {"plain": "gdb without the plugin"}
        if options.baseline:
            baseline = pin_revision(options.baseline)
            plugins["baseline"] = snapshot_plugin(baseline, workdir / "baseline")
            sides["baseline"] = f"gdb_kprobe at {source_state(baseline)['commit']}"
        plugins["plugin"] = snapshot_plugin(rev, workdir / "plugin") if rev else GDBINIT
        state = source_state(rev)
        sides["plugin"] = (f"gdb_kprobe at {state['commit']}" +
                           (" + working tree" if state["uncommitted"] else ""))
        RESULTS.mkdir(parents=True, exist_ok=True)
        for kernel in [k for k in options.kernels.split(",") if k]:
            result = bench_kernel(kernel, options, plugins, workdir)
            payload = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "machine": machine, "sides": sides, "source": state,
                       "targets": TARGETS, "result": result, "summary": summary(result)}
            stem = results_stem(kernel)
            pathlib.Path(f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
            text = markdown(payload)
            pathlib.Path(f"{stem}.md").write_text(text)
            print(text.split("\n## ")[0])
            print(f"bench-step: wrote {stem}.md and .json", file=sys.stderr)
            for row in payload["summary"]:
                target = TARGETS.get(row["command"])
                ratio = row["ratio"].get("plugin")
                if target and ratio is not None:
                    met = ratio <= target
                    status |= 0 if met else 1
                    print(f"{'met   ' if met else 'MISSED'}  {kernel} {row['command']}: "
                          f"{ratio:.2f}× plain gdb (target ≤ {target}×)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
