"""What to probe: kernel functions that take kprobes, N events over them, the scenario
file that registers them at boot."""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import time

from bench.common import BLACKLIST, EVENTS, GROUP, TRACING, BenchError
from qemu import kernels
from qemu.lab import Guest, Lab


def unambiguous_functions(system_map: pathlib.Path) -> set[str]:
    """Text symbols alone at their address and with a unique name.

    A unique name is what kprobe_events needs; no alias at the address keeps the
    naive walker's `info symbol` and kallsyms agreeing on which name to print.
    """
    names: collections.Counter[str] = collections.Counter()
    addresses: collections.Counter[str] = collections.Counter()
    text: list[tuple[str, str]] = []
    for line in system_map.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        address, kind, name = parts
        names[name] += 1
        addresses[address] += 1
        # not a name ending in X: gdb 13.1's `info symbol` prints aa_unpack_nameX as
        # aa_unpack_name, and the naive walker's line would differ from debugfs
        if kind in "tT" and "." not in name and not name.endswith("X"):
            text.append((address, name))
    return {name for address, name in text if names[name] == 1 and addresses[address] == 1}


def push_lines(guest: Guest, path: str, lines: list[str], chunk: int = 80) -> None:
    """Write lines to a guest file; a tty line in canonical mode holds at most 4095 bytes."""
    guest.run(f": > {path}")
    for start in range(0, len(lines), chunk):
        words = " ".join(lines[start:start + chunk])
        guest.run(f"printf '%s\\n' {words} >> {path}")


# Enabling an ftrace-based kprobe rewrites ftrace's call sites: ~35 ms each in TCG with
# 3,000 armed, growing with their number. Past this many functions the trial enabling is
# skipped; the measured boot's own enabling (1 in 3) then stops a run on a bad function.
ENABLE_CHECK_MAX = 2000
# Past this many functions none are tried before the measured boot (see discover_functions)
TRIAL_MAX = 2000
# More events than this are registered once the guest is up, not by /init: the lab's boot
# timeout (90 s) does not cover 10,000 registrations (~2 minutes, enabling more).
AT_BOOT_MAX = 2000


def discover_functions(kernel: str, need: int, workdir: pathlib.Path) -> list[str]:
    """`need` kernel functions that take a kprobe and a kretprobe event, in a stable order.

    One short boot: the candidates are available_filter_functions (ftrace can trace
    them, so they are real functions) less the kprobes blacklist and duplicated
    names, sampled evenly from that sorted list and registered once for real, then
    enabled all at once: a function the guest cannot take a probe on fails here,
    not in the measured boot.
    """
    clean = unambiguous_functions(kernels.fetch(kernel).system_map)
    empty = workdir / "discover.scenario"
    empty.write_text("# bench: no probes; the functions are tried at run time\n")
    with Lab(kernel, scenario=str(empty)) as lab:
        guest = lab.guest
        assert guest is not None
        guest.run(f"awk '{{print $2}}' {BLACKLIST} | sort -u > /tmp/bl")
        total = int(guest.run(
            f"grep -v '\\[' {TRACING}/available_filter_functions | sort | uniq -u "
            "| grep -v -x -F -f /tmp/bl > /tmp/cand; wc -l < /tmp/cand", timeout=300).strip())
        step = max(1, total // (need * 4))
        sampled = guest.run(f"awk 'NR % {step} == 0' /tmp/cand", timeout=120).split()
        tries = [name for name in sampled if name in clean][: need + need // 3 + 20]
        if need > TRIAL_MAX:
            # 13,000 trial registrations take half an hour on a loaded host (a linear
            # search of the dynamic events per registration); the measured boot registers
            # these unverified and counts what took (register_late)
            return tries[:need]
        push_lines(guest, "/tmp/try", tries)
        # ~11 ms a registration in TCG: 10,000 functions take ~5 minutes
        out = guest.run(
            f"i=0; while read f; do echo \"p:bt/p$i $f\" >> {EVENTS} 2>/dev/null && "
            f"echo \"r:bt/r$i $f\" >> {EVENTS} 2>/dev/null && echo \"OK $f\"; "
            "i=$((i+1)); done < /tmp/try", timeout=max(900, need * 0.2))
        works = [line[3:].strip() for line in out.splitlines() if line.startswith("OK ")]
        if need <= ENABLE_CHECK_MAX:
            guest.run(f"echo 1 > {TRACING}/events/bt/enable; sleep 1; "
                      f"echo 0 > {TRACING}/events/bt/enable", timeout=300)
    if len(works) < need:
        raise BenchError(f"{kernel}: only {len(works)} of {len(tries)} functions took probes; "
                         f"need {need}")
    return works[:need]


@dataclasses.dataclass(frozen=True)
class Event:
    name: str
    kind: str           # "p" or "r"
    function: str
    enabled: bool


def plan_events(functions: list[str], n: int) -> list[Event]:
    """N events: one in ten is a second event on an already probed function (an
    aggregate), one in five a return probe, one in three enabled (one in thirty past
    AT_BOOT_MAX)."""
    pairs = max(1, n // 10)
    distinct = n - pairs
    # past AT_BOOT_MAX one in thirty enabled (~N/30 armed, as many as at N=1000): with 3,333
    # armed on functions the guest runs hot, a stop no longer comes back in 30 s under TCG
    every = 3 if n <= AT_BOOT_MAX else 30
    events = [Event(f"e{i}", "r" if i % 5 == 2 else "p", functions[i], i % every == 0)
              for i in range(distinct)]
    stride = max(1, distinct // pairs)
    for j in range(pairs):
        i = distinct + j
        events.append(Event(f"e{i}", "p", functions[j * stride], i % every == 0))
    return events


def scenario_lines(events: list[Event]) -> list[str]:
    lines = [f"event {e.kind}:{GROUP}/{e.name} {e.function}" for e in events]
    return lines + [f"enable {GROUP}/{e.name}" for e in events if e.enabled]


def write_scenario(path: pathlib.Path, events: list[Event]) -> None:
    """The boot's scenario: the events themselves up to AT_BOOT_MAX, else none (then
    `register_late` registers them once the guest is up)."""
    lines = [f"# generated by bench/run.py: {len(events)} kprobe events"
             + (", registered after boot" if len(events) > AT_BOOT_MAX else "")]
    if len(events) <= AT_BOOT_MAX:
        lines += scenario_lines(events)
    path.write_text("\n".join(lines) + "\n")


def register_late(guest: Guest, events: list[Event]) -> float | None:
    """Past AT_BOOT_MAX: the scenario copied to the guest (quoted lines, 40 a command: a
    tty line holds 4095 bytes) and applied with kp-scenario; the seconds that took."""
    if len(events) <= AT_BOOT_MAX:
        return None
    lines = scenario_lines(events)
    path = "/tmp/bench.scenario"
    guest.run(f": > {path}")
    for start in range(0, len(lines), 40):
        quoted = " ".join(f"'{line}'" for line in lines[start:start + 40])
        guest.run(f"printf '%s\\n' {quoted} >> {path}")
    started = time.monotonic()
    # unverified functions (TRIAL_MAX): a few may refuse a probe; the run counts what took
    guest.run(f"kp-scenario {path} 2>/tmp/bench.failed", timeout=3600, check=False)
    return round(time.monotonic() - started, 1)


def event_mix(events: list[Event]) -> dict[str, int]:
    """What the results record of the events: how many of each kind."""
    return {"return_probes": sum(e.kind == "r" for e in events),
            "enabled": sum(e.enabled for e in events),
            "aggregated_functions": len(events) - len({e.function for e in events})}
