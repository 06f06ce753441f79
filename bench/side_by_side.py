"""--baseline: kp-list and kp-list -v of two plugins, side by side in one boot.

Each plugin gets its own gdb, loaded as a black box (`source <its gdbinit.py>`); QEMU's
gdbstub takes one client, so the two take turns: attach, an untimed kp-list, a fresh
stop per measured command, detach. The turns alternate baseline, candidate, baseline, candidate, ... so that the
host's load, which drifts, weighs on both alike. The links are those of the main table:
gdb straight on the stub (times only), then the relay at each delay (times and reads).
"""
from __future__ import annotations

import statistics
from typing import Any

from bench.checks import output_problems
from bench.relay import Link, Relay
from bench.samples import Sample, exact_link, times_record
from bench.session import Session, Tools, warm_up
from qemu.lab import Lab

SIDES = ("baseline", "candidate")      # the order of each round
COMPARED = ("kp-list", "kp-list -v")

Samples = dict[str, dict[str, list[Sample]]]      # side → command → samples


def plugin_record(samples: list[Sample], delay_ms: float | None, correct: bool) -> dict[str, Any]:
    """One plugin's runs of one command on one link; no packet counts straight on the stub."""
    record = times_record(samples)
    if delay_ms is not None:
        record.update({
            "memory_reads": [s.counters.memory_reads for s in samples],
            "memory_read_bytes": [s.counters.memory_read_bytes for s in samples],
            "packets": [s.counters.packets for s in samples],
            "exact_link_s": round(statistics.median(exact_link(s, delay_ms) for s in samples), 6),
        })
    record["correct"] = correct
    return record


def one_turn(session: Session, relay: Relay | None, side: str, where: str, expected: str,
             n: int, samples: Samples, checks: dict[str, list[str]]) -> None:
    """Attach, each compared command once at a fresh stop, detach."""
    session.attach(relay)
    try:
        # a plugin may check the kernel again on a new connection (ce94ef5 does: one
        # 64-byte read): an untimed kp-list first, so that the figures are those of the
        # main table (a fresh stop in a session that stays attached)
        warm_up(session, ("kp-list",))
        for command in COMPARED:
            session.fresh_stop()
            sample, output = session.timed(command)
            samples[side][command].append(sample)
            problems = output_problems(command, output, expected, n)
            if problems:
                checks.setdefault(f"{side} {command} {where}", problems)
    finally:
        session.detach()


def compare_on_link(sessions: dict[str, Session], relay: Relay | None, link: Link | None,
                    repeat: int, expected: str, n: int,
                    checks: dict[str, list[str]]) -> dict[str, Any]:
    """`repeat` rounds on one link (the relay as `link`, or the stub when None)."""
    delay_ms = link.delay_ms if link is not None else None
    if relay is not None and link is not None:
        relay.set_link(link)
    where = "without the relay" if relay is None or link is None else f"on {link.label}"
    samples: Samples = {side: {command: [] for command in COMPARED} for side in SIDES}
    for _ in range(repeat):
        for side in SIDES:
            one_turn(sessions[side], relay, side, where, expected, n, samples, checks)
    return {command: {side: plugin_record(samples[side][command], delay_ms,
                                          f"{side} {command} {where}" not in checks)
                      for side in SIDES}
            for command in COMPARED}


def side_by_side(lab: Lab, relay: Relay, candidate: Tools, baseline: Tools, expected: str,
                 n: int, links: list[Link]) -> dict[str, Any]:
    """Both plugins on every link; wrong outputs are listed in the result's "checks"."""
    tools = {"baseline": baseline, "candidate": candidate}
    sessions: dict[str, Session] = {}
    checks: dict[str, list[str]] = {}
    try:
        for side in SIDES:
            sessions[side] = Session(lab, None, tools[side], attach=False, name=side)
            # kp-list loads the ELF symbol table once per gdb: not part of the times
            sessions[side].attach(None)
            warm_up(sessions[side], COMPARED)
            sessions[side].detach()
        result: dict[str, Any] = {
            "order": ", ".join(SIDES) + ", … (one turn: attach, an untimed kp-list, each "
                                        "command at a fresh stop, detach)",
            "direct": compare_on_link(sessions, None, None, candidate.repeat, expected, n,
                                      checks),
            # TCP links by delay ("0", "1"), serial lines by name
            "delays": {(link.name if link.bytes_per_s else f"{link.delay_ms:g}"):
                       compare_on_link(sessions, relay, link, candidate.repeat, expected, n,
                                       checks)
                       for link in links}}
    finally:
        for session in sessions.values():
            session.close()
    result["checks"] = checks
    return result
