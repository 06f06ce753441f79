"""What every bench module shares: where things are, in the repo and in the guest."""
from __future__ import annotations

from qemu.lab import REPO

BENCH = REPO / "bench"
RESULTS = BENCH / "results"

# in the guest
LIST = "/sys/kernel/debug/kprobes/list"
BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
TRACING = "/sys/kernel/tracing"
EVENTS = f"{TRACING}/kprobe_events"
GROUP = "bench"           # the trace-event group of the generated events

COMMANDS = ("kp-list", "kp-list -v", "naive-kp-list", "kp-hooks")
LISTINGS = COMMANDS[:3]   # the main table's columns; kp-hooks has its own table against kp-list
FLOOR_LOOPS = 50          # busybox `time` has 10 ms resolution: time a loop of cats
STOP_PAUSE = 0.2          # how long the guest runs between two measured stops
COMMAND_TIMEOUT = 900     # the naive walker at 1 ms and N=1000 takes a while


class BenchError(RuntimeError):
    pass
