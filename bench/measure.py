"""One boot per N: the guest's own list, gdb straight on the stub and through the relay
at each delay, the cold starts, and (with --baseline) both plugins side by side."""
from __future__ import annotations

import os
import re
import time
from typing import Any

from bench.checks import diff_summary, output_problems
from bench.cold_start import cold_starts
from bench.common import COMMANDS, FLOOR_LOOPS, LIST, BenchError
from bench.plan import Event, event_mix, register_late, write_scenario
from bench.relay import Link, Relay
from bench.samples import Sample, read_log, relay_record, times_record
from bench.session import Session, Tools, warm_up
from bench.side_by_side import side_by_side
from qemu.lab import Guest, Lab, LabError


def guest_floor(guest: Guest) -> dict[str, float]:
    """The guest reading its own list: busybox `time`, once and averaged over a loop."""
    def real(output: str) -> float:
        match = re.search(r"real\s+(\d+)m\s*([0-9.]+)s", output)
        if match is None:
            raise BenchError(f"no `time` report in {output!r}")
        return int(match.group(1)) * 60 + float(match.group(2))

    # braces: `time` is an applet, its report (stderr) must not follow cat into /dev/null
    def loop(path: str) -> float:
        return real(guest.run(
            f"{{ time sh -c 'i=0; while [ $i -lt {FLOOR_LOOPS} ]; do cat {path} > /dev/null; "
            f"i=$((i+1)); done'; }} 2>&1", timeout=300)) / FLOOR_LOOPS

    once = real(guest.run(f"{{ time cat {LIST} > /dev/null; }} 2>&1"))
    # cat of an empty file: what fork+exec of cat costs in TCG, to read the rest as the list's
    return {"time_cat_s": once, "mean_of_loop_s": loop(LIST), "empty_cat_s": loop("/dev/null"),
            "loop": FLOOR_LOOPS}


def run_commands(session: Session, repeat: int, expected: str, n: int, where: str,
                 checks: dict[str, list[str]]) -> dict[str, list[Sample]]:
    """Each command `repeat` times, each at a fresh stop; wrong outputs go to `checks`."""
    results: dict[str, list[Sample]] = {}
    for command in COMMANDS:
        samples = []
        for _ in range(repeat):
            session.fresh_stop()
            sample, output = session.timed(command)
            samples.append(sample)
            problems = output_problems(command, output, expected, n)
            if problems:
                checks.setdefault(f"{command} {where}", problems)
        results[command] = samples
    return results


def direct_times(lab: Lab, tools: Tools, expected: str, n: int,
                 checks: dict[str, list[str]], profile: bool) -> dict[str, Any]:
    """The commands with gdb straight on QEMU's gdbstub: the true 0 ms times, free of
    the relay's own cost (its Python threads add tens of µs per round trip). With
    `profile`, also a cProfile of kp-list, kp-list -v and kp-hooks (local costs, no relay)."""
    session = Session(lab, None, tools)
    profiles: dict[str, str] = {}
    try:
        warm_up(session)
        runs = run_commands(session, tools.repeat, expected, n, "without the relay", checks)
        for command in ("kp-list", "kp-list -v", "kp-hooks") if profile else ():
            session.fresh_stop()
            profiles[command] = session.profile(
                command, tools.workdir / f"profile-{n}-{command.replace(' ', '')}.txt")
    finally:
        session.close()
    result: dict[str, Any] = {command: times_record(samples) for command, samples in runs.items()}
    if profiles:
        result["profile"] = profiles
    return result


def relay_times(lab: Lab, relay: Relay, tools: Tools, expected: str, n: int,
                links: list[Link], checks: dict[str, list[str]], field_sizes: dict[str, int]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The commands through the relay on each link: times, packets, where reads go.
    TCP links by delay ("0", "1"), serial lines by name (a second dict)."""
    session = Session(lab, relay, tools)
    try:
        warm_up(session)
        labels = session.read_labels()
        tcp: dict[str, Any] = {}
        serial: dict[str, Any] = {}
        for index, link in enumerate(links):
            relay.set_link(link)
            # an untimed kp-list: `set kp-read-block auto` learns the link, as it does in a
            # user's first command after attaching
            session.fresh_stop()
            session.timed("kp-list")
            runs = run_commands(session, tools.repeat, expected, n, f"on {link.label}", checks)
            per_command = {command: relay_record(samples, link.delay_ms, labels)
                           for command, samples in runs.items()}
            for command, samples in runs.items() if tools.read_log else ():
                # reads differ per link with kp-read-block auto: a log per link
                per_command[command]["read_log"] = read_log(samples[-1].counters)
            per_command["read_policy"] = session.read_policy()
            if index == 0:
                field_sizes.update(session.field_bytes())
            if link.bytes_per_s:
                serial[link.name] = dict(per_command, link=link.label)
            else:
                tcp[f"{link.delay_ms:g}"] = per_command
        return tcp, serial
    finally:
        session.close()


def lower_bound(sizes: dict[str, int], events: list[Event], n: int) -> dict[str, Any]:
    """The bytes kp-list must read at all (its "bytes read / lower bound"): every hlist
    head of kprobe_table; per struct kprobe on a hash list (one per probed function) its
    next link and the fields a row shows (addr, flags, pre_handler: the kind); per
    aggregate its child list's head; per child its list link and the same fields. Symbol
    names cost nothing: kp-list takes them from the vmlinux, like kallsyms in the guest."""
    aggregates = event_mix(events)["aggregated_functions"]   # functions with a second event
    row = sizes["link"] + sizes["addr"] + sizes["flags"] + sizes["pre_handler"]
    total = sizes["kprobe_table"] + (n - aggregates) * row + aggregates * sizes["link"] + \
        2 * aggregates * row
    return {"bytes": total, "sizes": sizes, "aggregates": aggregates,
            "formula": "kprobe_table + (N - A + 2A) × (link + addr + flags + pre_handler) "
                       "+ A × link, A = aggregates"}


def boot(kernel: str, lab: Lab, events: list[Event], result: dict[str, Any]
         ) -> tuple[Guest, str]:
    """Start the lab (and register the events late when there are many); the guest and
    its debugfs list once it holds still."""
    n = len(events)
    try:
        lab.start()
    except LabError as exc:
        raise BenchError(f"{kernel} N={n}: boot failed: {exc}") from None
    guest = lab.guest
    assert guest is not None
    try:
        result["register_late_s"] = register_late(guest, events)
    except LabError as exc:
        raise BenchError(f"{kernel} N={n}: registering the events failed: {exc}") from None
    expected = guest.settled(f"cat {LIST}", attempts=40)
    if result["register_late_s"] is not None:
        # registered unverified: N is what took (the plan's few refusals are recorded)
        result["planned_n"] = n
        result["refused"] = guest.run("cat /tmp/bench.failed").splitlines()[:20]
        n = len(expected.splitlines())
    if len(expected.splitlines()) != n:
        raise BenchError(f"{kernel} N={n}: debugfs lists {len(expected.splitlines())} probes")
    return guest, expected


def measure(kernel: str, events: list[Event], links: list[Link], tools: Tools,
            profile: bool, baseline: Tools | None = None) -> dict[str, Any]:
    """One boot with these events: everything the table needs for this N, and with a
    `baseline` plugin, kp-list and kp-list -v of both plugins side by side."""
    n = len(events)
    scenario = tools.workdir / f"bench-{n}.scenario"
    write_scenario(scenario, events)
    result: dict[str, Any] = {"n": n, "events": event_mix(events)}
    # the host's load says how much to trust the times (TCG and gdb share 2 cores)
    result["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    booted = time.monotonic()
    lab = Lab(kernel, scenario=str(scenario))
    relay: Relay | None = None
    try:
        guest, expected = boot(kernel, lab, events, result)
        n = result["n"] = len(expected.splitlines())
        result["boot_s"] = round(time.monotonic() - booted, 2)
        result["floor"] = guest_floor(guest)
        checks: dict[str, list[str]] = {}
        result["direct"] = direct_times(lab, tools, expected, n, checks, profile)
        relay = Relay(("127.0.0.1", lab.gdb_port or 0)).start()
        field_sizes: dict[str, int] = {}
        result["delays"], result["serial"] = relay_times(lab, relay, tools, expected, n, links,
                                                         checks, field_sizes)
        result["lower_bound"] = lower_bound(field_sizes, events, n)
        after = guest.settled(f"cat {LIST}")       # the guest runs again once gdb detached
        if after != expected:
            checks["debugfs changed during the run"] = diff_summary(expected, after)
        result["cold_start"] = cold_starts(lab, relay, tools, expected, checks)
        result["checks"] = checks
        result["correct"] = not checks
        if baseline is not None:
            result["side_by_side"] = side_by_side(lab, relay, tools, baseline, expected, n,
                                                  links)
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        return result
    finally:
        if relay is not None:
            relay.close()
        lab.stop()
