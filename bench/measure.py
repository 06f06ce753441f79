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
from bench.plan import Event, event_mix, write_scenario
from bench.relay import Relay
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
    `profile`, also a cProfile of kp-list and kp-list -v (local costs, no relay)."""
    session = Session(lab, None, tools)
    profiles: dict[str, str] = {}
    try:
        warm_up(session)
        runs = run_commands(session, tools.repeat, expected, n, "without the relay", checks)
        for command in ("kp-list", "kp-list -v") if profile else ():
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
                delays: list[float], checks: dict[str, list[str]]) -> dict[str, Any]:
    """The commands through the relay at each delay: times, packets, where reads go."""
    session = Session(lab, relay, tools)
    try:
        warm_up(session)
        labels = session.read_labels()
        result: dict[str, Any] = {}
        for delay in delays:
            relay.set_delay(delay)
            runs = run_commands(session, tools.repeat, expected, n, f"at {delay:g} ms", checks)
            per_command = {command: relay_record(samples, delay, labels)
                           for command, samples in runs.items()}
            if delay == delays[0]:
                # the same reads at every delay: one log is enough
                per_command["kp-list"]["read_log"] = read_log(runs["kp-list"][-1].counters)
            result[f"{delay:g}"] = per_command
        return result
    finally:
        session.close()


def boot(kernel: str, lab: Lab, n: int) -> tuple[Guest, str]:
    """Start the lab; the guest and its debugfs list once it holds still."""
    try:
        lab.start()
    except LabError as exc:
        raise BenchError(f"{kernel} N={n}: boot failed: {exc}") from None
    guest = lab.guest
    assert guest is not None
    expected = guest.settled(f"cat {LIST}")
    if len(expected.splitlines()) != n:
        raise BenchError(f"{kernel} N={n}: debugfs lists {len(expected.splitlines())} probes")
    return guest, expected


def measure(kernel: str, events: list[Event], delays: list[float], tools: Tools,
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
        guest, expected = boot(kernel, lab, n)
        result["boot_s"] = round(time.monotonic() - booted, 2)
        result["floor"] = guest_floor(guest)
        checks: dict[str, list[str]] = {}
        result["direct"] = direct_times(lab, tools, expected, n, checks, profile)
        relay = Relay(("127.0.0.1", lab.gdb_port or 0)).start()
        result["delays"] = relay_times(lab, relay, tools, expected, n, delays, checks)
        after = guest.settled(f"cat {LIST}")       # the guest runs again once gdb detached
        if after != expected:
            checks["debugfs changed during the run"] = diff_summary(expected, after)
        result["cold_start"] = cold_starts(lab, relay, tools, expected, checks)
        result["checks"] = checks
        result["correct"] = not checks
        if baseline is not None:
            result["side_by_side"] = side_by_side(lab, relay, tools, baseline, expected, n,
                                                  delays)
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        return result
    finally:
        if relay is not None:
            relay.close()
        lab.stop()
