"""The results: Markdown tables and text from a run's payload, and the .md/.json files."""
from __future__ import annotations

import datetime
import json
import pathlib
import statistics
from typing import Any

from bench.checks import median_of, target_checks, target_reads
from bench.common import FLOOR_LOOPS, LISTINGS, LIST, RESULTS
from bench.provenance import source_state
from bench.side_by_side import COMPARED, SIDES
from qemu import kernels

HEADER = ["kernel", "N", "link", "kp-list s", "kp-list reads", "reads / 1.2(1+N)",
          "kp-list -v s", "-v reads", "naive s", "naive reads", "naive/kp time",
          "naive/kp reads", "guest cat ms (empty cat)", "cold warm s", "cold empty-index s",
          "outputs equal"]

COMPARISON_HEADER = ["kernel", "N", "link", "command", "baseline s", "candidate s",
                     "time baseline/candidate", "baseline reads", "candidate reads",
                     "reads baseline/candidate", "baseline bytes", "candidate bytes",
                     "outputs equal (baseline, candidate)"]


def table_rows(kernel: str, runs: list[dict[str, Any]]) -> list[list[str]]:
    """Per N: a row with gdb straight on the stub, then one per relay delay."""
    rows = []
    for run in runs:
        n = run["n"]
        # read counts do not depend on the link: the direct row shows the relay's first
        counted = next(iter(run["delays"].values()))
        links = [("direct", run["direct"], counted)]
        links += [(f"relay {delay} ms", commands, commands)
                  for delay, commands in run["delays"].items()]
        for index, (link, timed, counts) in enumerate(links):
            kp, kpv, naive = (timed[c]["median_s"] for c in LISTINGS)
            kp_reads, kpv_reads, naive_reads = (statistics.median(counts[c]["memory_reads"])
                                                for c in LISTINGS)
            first = index == 0       # per-boot columns only once
            cold = run["cold_start"]
            rows.append([
                kernel, str(n), link,
                f"{kp:.3f}", f"{kp_reads:g}", f"{kp_reads / target_reads(n):.2f}",
                f"{kpv:.3f}", f"{kpv_reads:g}",
                f"{naive:.3f}", f"{naive_reads:g}",
                f"{naive / kp:.1f}×", f"{naive_reads / kp_reads:.1f}×",
                f"{run['floor']['mean_of_loop_s'] * 1000:.1f} "
                f"({run['floor']['empty_cat_s'] * 1000:.1f})" if first else "",
                f"{median_of(cold['warm_index']):.2f}" if first else "",
                f"{median_of(cold['empty_index']):.2f}" if first else "",
                "yes" if run["correct"] else "**NO**"])
    return rows


HOOKS_HEADER = ["kernel", "N", "link", "kp-list s", "kp-hooks s", "time kp-hooks/kp-list",
                "kp-list reads", "kp-hooks reads", "reads kp-hooks/kp-list",
                "kp-list -v reads", "reads kp-hooks/kp-list -v"]


def hooks_rows(kernel: str, runs: list[dict[str, Any]]) -> list[list[str]]:
    """kp-hooks (every hooked function) beside kp-list, measured in the same boot and turns."""
    rows = []
    for run in runs:
        if "kp-hooks" not in run["direct"]:
            continue
        counted = next(iter(run["delays"].values()))
        links = [("direct", run["direct"], counted)]
        links += [(f"relay {delay} ms", commands, commands)
                  for delay, commands in run["delays"].items()]
        for link, timed, counts in links:
            kp, hooks = timed["kp-list"]["median_s"], timed["kp-hooks"]["median_s"]
            kp_reads, hooks_reads, verbose_reads = (
                statistics.median(counts[c]["memory_reads"])
                for c in ("kp-list", "kp-hooks", "kp-list -v"))
            rows.append([kernel, str(run["n"]), link, f"{kp:.3f}", f"{hooks:.3f}",
                         f"{hooks / kp:.2f}×", f"{kp_reads:g}", f"{hooks_reads:g}",
                         f"{hooks_reads / kp_reads:.2f}×", f"{verbose_reads:g}",
                         f"{hooks_reads / verbose_reads:.2f}×"])
    return rows


LINKS_HEADER = ["kernel", "N", "link", "kp-list s", "kp-list reads", "kp-list bytes",
                "bytes / lower bound", "naive s", "naive reads", "naive bytes", "naive/kp time",
                "kp-list -v s", "-v bytes", "kp-read-block auto chose"]


def _link_entries(run: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    entries = [(f"relay {delay} ms", commands) for delay, commands in run["delays"].items()]
    entries += [(commands["link"], commands) for commands in run.get("serial", {}).values()]
    return entries


def _chosen(policy: str) -> str:
    """The tail of `show kp-read-block`: "link: ...; now exact reads"."""
    text = policy.rstrip(".)").split("(", 1)[-1]
    return text.replace("|", "/")


def links_rows(kernel: str, runs: list[dict[str, Any]]) -> list[list[str]]:
    """Per N and link: kp-list and the naive walker, with the bytes read against the
    bytes kp-list must read at all (run["lower_bound"])."""
    rows = []
    for run in runs:
        bound = run.get("lower_bound", {}).get("bytes")
        for link, commands in _link_entries(run):
            kp, kpv, naive = (commands[c] for c in ("kp-list", "kp-list -v", "naive-kp-list"))
            kp_bytes = kp["memory_read_bytes"]
            rows.append([
                kernel, str(run["n"]), link, f"{kp['median_s']:.3f}",
                f"{statistics.median(kp['memory_reads']):g}", str(kp_bytes),
                f"{kp_bytes / bound:.2f}" if bound else "",
                f"{naive['median_s']:.3f}", f"{statistics.median(naive['memory_reads']):g}",
                str(naive["memory_read_bytes"]), f"{naive['median_s'] / kp['median_s']:.1f}×",
                f"{kpv['median_s']:.3f}", str(kpv["memory_read_bytes"]),
                _chosen(commands.get("read_policy", ""))])
    return rows


# issue #19 (links and scale)
LIMIT_BYTES_RATIO = 1.5
SCALE_N, SCALE_TIME_S, SCALE_SPEEDUP = 10000, 0.5, 10.0


def link_checks(kernel: str, runs: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """At 115200 baud kp-list no slower than the naive walker and within 1.5× of the bytes
    it must read; at N=10,000 on loopback at most 0.5 s and 10× faster than naive."""
    checks = []
    for run in runs:
        n, bound = run["n"], run.get("lower_bound", {}).get("bytes")
        serial = run.get("serial", {}).get("serial115200")
        if serial is not None:
            kp, naive = serial["kp-list"]["median_s"], serial["naive-kp-list"]["median_s"]
            checks.append((f"{kernel} N={n} kp-list no slower than naive at 115200 baud",
                           kp <= naive, f"{kp:.3f} s vs {naive:.3f} s ({naive / kp:.2f}×)"))
            if bound:
                got = serial["kp-list"]["memory_read_bytes"]
                checks.append((f"{kernel} N={n} kp-list bytes ≤ {LIMIT_BYTES_RATIO:g}× lower "
                               "bound at 115200 baud", got <= LIMIT_BYTES_RATIO * bound,
                               f"{got} B / {bound} B = {got / bound:.2f}×"))
        if n >= SCALE_N:
            direct = run["direct"]
            kp, naive = direct["kp-list"]["median_s"], direct["naive-kp-list"]["median_s"]
            checks.append((f"{kernel} N={n} kp-list ≤ {SCALE_TIME_S:g} s on loopback",
                           kp <= SCALE_TIME_S, f"{kp:.3f} s straight on the stub"))
            checks.append((f"{kernel} N={n} kp-list ≥ {SCALE_SPEEDUP:g}× faster than naive on "
                           "loopback", naive >= SCALE_SPEEDUP * kp,
                           f"{naive / kp:.1f}× ({naive:.3f} s vs {kp:.3f} s)"))
    return checks


def markdown_table(rows: list[list[str]], header: list[str] = HEADER) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def comparison_rows(kernel: str, runs: list[dict[str, Any]]) -> list[list[str]]:
    """Per N, link and command: the baseline's and the candidate's medians and ratios
    (above 1: the candidate is faster, or reads less). Reads only through the relay."""
    rows = []
    for run in runs:
        compared = run.get("side_by_side")
        if compared is None:
            continue
        links = [("direct", compared["direct"])]
        links += [(f"relay {key} ms" if key[0].isdigit() else key, commands)
                  for key, commands in compared["delays"].items()]
        for link, commands in links:
            for command in COMPARED:
                base, cand = (commands[command][side] for side in SIDES)
                row = [kernel, str(run["n"]), link, command, f"{base['median_s']:.3f}",
                       f"{cand['median_s']:.3f}", f"{base['median_s'] / cand['median_s']:.2f}×"]
                if "memory_reads" in base:
                    reads = [statistics.median(p["memory_reads"]) for p in (base, cand)]
                    size = [statistics.median(p["memory_read_bytes"]) for p in (base, cand)]
                    row += [f"{reads[0]:g}", f"{reads[1]:g}", f"{reads[0] / reads[1]:.2f}×",
                            f"{size[0]:g}", f"{size[1]:g}"]
                else:
                    row += [""] * 5
                row.append(", ".join("yes" if p["correct"] else "**NO**" for p in (base, cand)))
                rows.append(row)
    return rows


def comparison_section(payload: dict[str, Any]) -> str:
    """--baseline: the side-by-side table, with what was compared and how."""
    baseline, source = payload["baseline"], payload["source"]
    candidate = source["commit"] + (" + uncommitted changes" if source["uncommitted"] else "")
    return "\n".join([
        f"## Side by side: baseline {baseline['commit']} vs candidate {candidate}", "",
        f"Both plugins in the same boot per N, each in its own gdb (`source <snapshot>/"
        f"gdbinit.py`: a `git archive` of {baseline['rev']} for the baseline). Turns "
        f"alternate {payload['runs'][0]['side_by_side']['order']}; median of "
        f"{payload['repeat']} per plugin. Ratios are baseline / candidate: above 1 the "
        "candidate is faster or reads less. Reads and bytes are `m` packets and the bytes "
        "they ask for at the relay; \"direct\" rows are times only.", "",
        markdown_table(comparison_rows(payload["kernel"], payload["runs"]), COMPARISON_HEADER)])


def where_reads_go(runs: list[dict[str, Any]]) -> str:
    """The largest N: which reads and which local costs make up kp-list's time."""
    largest = max(runs, key=lambda run: run["n"])
    out = [f"## Where kp-list's time goes (N={largest['n']})", ""]
    delays = list(largest["delays"])
    for command in ("kp-list", "kp-list -v"):
        base = largest["delays"][delays[0]][command]
        reads = base["reads"]
        out.append(f"`{command}`: {statistics.median(base['memory_reads']):g} memory reads, "
                   f"{base['memory_read_bytes']} bytes; packets by type {base['by_type']}. "
                   f"Reads repeating an earlier one: {reads['repeated_reads']}; reads inside "
                   f"bytes already read: {reads['inside_earlier_reads']}; distinct 2 KiB blocks "
                   f"touched: {reads['blocks_2k']} (4 KiB pages: {reads['pages_4k']}).")
        out.append("")
        direct = largest["direct"][command]["median_s"]
        count = statistics.median(base["memory_reads"])
        out.append(f"- direct (gdb straight on the stub): {direct:.3f} s = {count:g} reads × "
                   f"{direct / count * 1000:.3f} ms")
        for delay in delays:
            entry = largest["delays"][delay][command]
            count = statistics.median(entry["memory_reads"])
            line = (f"- at {delay} ms: {entry['median_s']:.3f} s = {count:g} reads × "
                    f"{entry['median_s'] / count * 1000:.3f} ms; median gap between reads "
                    f"{entry['reads']['median_gap_ms']} ms")
            if entry.get("mean_hold_ms"):
                line += (f"; the relay held each packet {entry['mean_hold_ms']} ms on average, "
                         f"on an exact {delay} ms link: {entry['exact_link_s']:.3f} s")
            out.append(line)
        out += ["", "| reads | of which inside bytes already read | length | what |",
                "|---|---|---|---|"]
        out += [f"| {row['reads']} | {row['inside_earlier']} | {row['length']} | {row['what']} |"
                for row in reads["by_length"][:8]]
        out.append("")
    for command, text in largest["direct"].get("profile", {}).items():
        out += [f"cProfile of `{command}`, gdb straight on the stub (cumulative):", "", "```"]
        lines = [line for line in text.splitlines() if line.strip()]
        out += lines[:32]
        out += ["```", ""]
    return "\n".join(out)


def cold_start_phases(runs: list[dict[str, Any]]) -> str:
    """Median cold-start phases: which step of `gdb vmlinux` → first kp-list costs what."""
    order = ["start", "file", "source", "attach", "kp-list"]
    out = ["## Cold start phases (median seconds)", "",
           "| N | index cache | gdb start | file vmlinux | source gdbinit.py | target remote "
           "| first kp-list | total | memory reads (attach + kp-list) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for kind, samples in run["cold_start"].items():
            phases = [statistics.median(s["phases_s"][p] for s in samples) for p in order]
            out.append(f"| {run['n']} | {kind.replace('_index', '')} | "
                       + " | ".join(f"{p:.3f}" for p in phases)
                       + f" | {median_of(samples):.2f} | {samples[0]['memory_reads']} |")
    return "\n".join(out) + "\n"


def source_line(source: dict[str, Any]) -> str:
    return (f"gdb_kprobe at commit {source['commit']}"
            + (" (a `git archive` snapshot: --rev)" if source.get("rev") else "")
            + (f", with uncommitted changes in {', '.join(source['uncommitted'])}"
               if source["uncommitted"] else "")
            + ("; **the working tree changed during the run**"
               if source.get("changed_during_run") else "") + ".")


def render_markdown(payload: dict[str, Any]) -> str:
    """The .md of one kernel's results, from the same payload as the .json."""
    kernel, machine, runs = payload["kernel"], payload["machine"], payload["runs"]
    load = "; ".join(f"N={run['n']}: {run['loadavg_before'][0]} → {run['loadavg_after'][0]}"
                     for run in runs)
    lines = [f"# kp-list over a slow wire: {kernel} ({payload['release']})", "",
             f"{payload['date']}; {machine['nproc']} × {machine['cpu']}; {machine['gdb']}; "
             f"{machine['qemu']}; guest {machine['accel']}; host {machine['host_kernel']}.", "",
             f"Median of {payload['repeat']} runs, each the first command at a fresh stop. "
             "Times are wall time inside gdb (around gdb.execute); reads are `m` packets at the "
             "relay between the start and end of the command. The delay is added to every "
             "gdb → stub packet (one per round trip). Guest cat: mean of a loop of "
             f"{FLOOR_LOOPS} `cat {LIST}` timed with busybox `time` (in parentheses the same "
             "loop over /dev/null: fork+exec of cat in TCG). Cold start: spawn of "
             "`gdb -batch` to the end of its first kp-list (vmlinux in the page cache), gdb "
             "index cache warm or a fresh empty directory. Link \"direct\": gdb straight on "
             "QEMU's gdbstub (times only; its read counts are the relay's), to show the true "
             "0 ms times free of the relay's own cost.", "",
             f"Host 1-minute load average before → after each boot: {load}.", "",
             source_line(payload["source"]), "",
             markdown_table(table_rows(kernel, runs))]
    hooks = hooks_rows(kernel, runs)
    if hooks:
        lines += ["## kp-hooks beside kp-list", "",
                  "`kp-hooks` (every hooked function: each probe's owner, the ftrace_ops on "
                  "each fentry site) and `kp-list` in the same boot, each at a fresh stop, "
                  "same medians as above. Naming each probe's trace event reads what "
                  "`kp-list -v` reads (its struct trace_probe_event), so `kp-list -v` is "
                  "shown too.", "", markdown_table(hooks, HOOKS_HEADER)]
    if any(run.get("serial") or run.get("lower_bound") for run in runs):
        lines += ["## Per link", "",
                  "Serial links are the relay as a serial line in both directions (10 bits a "
                  "byte, plus a hold per gdb → stub packet); TCP links as above. Bytes are "
                  "what the `m` reads asked for (the wire carries twice that in hex); the lower "
                  "bound is what kp-list must read at all: "
                  f"{runs[-1].get('lower_bound', {}).get('formula', '')}, with sizes from "
                  "DWARF. `kp-read-block auto chose`: `show kp-read-block` after the last run "
                  "on that link. Events registered after boot (N > 2000): "
                  + "; ".join(f"N={run['n']}: {run['register_late_s']} s" for run in runs
                              if run.get("register_late_s")) + ".", "",
                  markdown_table(links_rows(kernel, runs), LINKS_HEADER)]
    if payload.get("baseline"):
        lines.append(comparison_section(payload))
    lines += ["## Targets", ""]
    lines += [f"- {'met' if t['met'] else '**MISSED**'}: {t['target']} — {t['measured']}"
              for t in payload["targets"]]
    lines += ["", cold_start_phases(runs), where_reads_go(runs)]
    return "\n".join(lines) + "\n"


def results_stem(kernel: str) -> pathlib.Path:
    """bench/results/<date>-<kernel>; an earlier run of the day stays: the second is
    <date>-r2-<kernel>, and so on."""
    today = datetime.date.today().isoformat()
    stem = RESULTS / f"{today}-{kernel}"
    run = 1
    while stem.with_name(stem.name + ".json").exists():
        run += 1
        stem = RESULTS / f"{today}-r{run}-{kernel}"
    return stem


def write_results(kernel: str, machine: dict[str, Any], runs: list[dict[str, Any]],
                  repeat: int, source: dict[str, Any],
                  baseline: dict[str, Any] | None = None) -> pathlib.Path:
    """The .json (everything) and the .md rendered from it; returns their common stem."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = results_stem(kernel)
    checks = target_checks(kernel, runs) + link_checks(kernel, runs)
    if source != source_state(source.get("rev")):
        # others edited gdb_kprobe/ while this kernel was measured (use --rev HEAD)
        source = dict(source, changed_during_run=True)
    payload = {"kernel": kernel, "release": kernels.fetch(kernel).release,
               "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine, "source": source, "repeat": repeat,
               "targets": [{"target": t, "met": ok, "measured": m} for t, ok, m in checks],
               "runs": runs}
    if baseline is not None:
        payload["baseline"] = baseline
    pathlib.Path(f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    pathlib.Path(f"{stem}.md").write_text(render_markdown(payload))
    return stem


def rerender(paths: list[str]) -> int:
    """--render: rewrite the .md next to each results .json (after a report change), the
    targets judged again from the runs (after a change of bench/checks.py)."""
    for name in paths:
        path = pathlib.Path(name)
        payload = json.loads(path.read_text())
        checks = target_checks(payload["kernel"], payload["runs"]) + \
            link_checks(payload["kernel"], payload["runs"])
        payload["targets"] = [{"target": t, "met": ok, "measured": m} for t, ok, m in checks]
        path.write_text(json.dumps(payload, indent=1) + "\n")
        path.with_name(path.name.removesuffix(".json") + ".md").write_text(
            render_markdown(payload))
    return 0
