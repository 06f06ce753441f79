"""The cold start: `gdb vmlinux` → source gdbinit.py → attach → first kp-list, from spawn."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import tempfile
import time
from typing import Any

from bench.common import COMMAND_TIMEOUT, BenchError
from bench.relay import Relay
from bench.session import Tools
from qemu import kernels
from qemu.lab import Lab

MARKER = "KP-BENCH-MARK"
PHASES = ["start", "file", "source", "attach", "kp-list"]


def _mark(name: str) -> list[str]:
    return ["-ex", f"python print('{MARKER} {name}', __import__('time').time())"]


def cold_start(lab: Lab, relay: Relay, tools: Tools, index_dir: pathlib.Path,
               expected: str) -> dict[str, Any]:
    """One `gdb vmlinux` → source gdbinit.py → attach → first kp-list, timed from spawn."""
    assert lab.files
    command = [tools.gdb, "-q", "-nx", "-batch",
               "-iex", f"set index-cache directory {index_dir}",
               "-iex", "set index-cache enabled on",
               "-ex", "set pagination off", "-ex", "set confirm off",
               "-ex", "set style enabled off", *_mark("start"),
               "-ex", f"file {lab.files.vmlinux}", *_mark("file"),
               "-ex", f"source {tools.gdbinit}", *_mark("source"),
               "-ex", f"target remote 127.0.0.1:{relay.port}", *_mark("attach"),
               "-ex", "kp-list", *_mark("kp-list"),
               "-ex", "detach"]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)    # gdb embeds the system Python: keep the venv out
    relay.reset()
    spawned = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=COMMAND_TIMEOUT)
    counters = relay.snapshot()
    marks = {m.group(1): float(m.group(2))
             for m in re.finditer(rf"^{MARKER} (\S+) ([0-9.]+)$", proc.stdout, re.M)}
    if "kp-list" not in marks:
        raise BenchError(f"cold start failed (exit {proc.returncode}): "
                         f"{(proc.stdout + proc.stderr)[-1500:]}")
    listing = proc.stdout.split(f"{MARKER} attach", 1)[1].split("\n", 1)[1]
    listing = listing.split(f"{MARKER} kp-list", 1)[0]
    phases = {name: round(marks[name] - (marks[PHASES[i - 1]] if i else spawned), 4)
              for i, name in enumerate(PHASES)}
    return {"total_s": round(marks["kp-list"] - spawned, 4), "phases_s": phases,
            "correct": listing == expected, "packets": counters.packets,
            "memory_reads": counters.memory_reads}


def cold_starts(lab: Lab, relay: Relay, tools: Tools, expected: str,
                checks: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    """`repeat` cold starts with the lab's warm index cache and as many with an empty one;
    wrong outputs go to `checks`."""
    relay.set_delay(0.0)
    result: dict[str, list[dict[str, Any]]] = {"warm_index": [], "empty_index": []}
    index = kernels.cache_dir() / "gdb-index"   # the lab's own, warmed by the session
    for _ in range(tools.repeat):
        result["warm_index"].append(cold_start(lab, relay, tools, index, expected))
        with tempfile.TemporaryDirectory(prefix="kp-bench-index-") as empty:
            result["empty_index"].append(
                cold_start(lab, relay, tools, pathlib.Path(empty), expected))
    for kind, runs in result.items():
        if not all(run["correct"] for run in runs):
            checks[f"cold start ({kind}) kp-list output"] = ["differs from debugfs"]
    return result
