"""`bench-time FILE COMMAND...`: run a gdb command, time it inside gdb, keep its output.

`source bench/gdb_timer.py` in gdb. The wall time is taken around gdb.execute in
gdb's own Python, so pexpect and the terminal are not part of it; the output goes
to FILE (not the terminal: printing 1000 lines through a pty would be measured
otherwise by whoever waits for the prompt). Prints one line for the driver:
`BENCH-TIME <seconds> <ok|error: message>`.
"""
from __future__ import annotations

import time

import gdb


class BenchTime(gdb.Command):
    """bench-time FILE COMMAND...: time COMMAND, write its output to FILE."""

    def __init__(self) -> None:
        super().__init__("bench-time", gdb.COMMAND_MAINTENANCE)

    def invoke(self, argument: str, from_tty: bool) -> None:
        path, _, command = argument.strip().partition(" ")
        status = "ok"
        started = time.perf_counter()
        try:
            output = gdb.execute(command, to_string=True)
        except gdb.error as exc:   # GdbError from a Python command arrives as gdb.error
            output = ""
            status = f"error: {exc}"
        elapsed = time.perf_counter() - started
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(output)
        gdb.write(f"BENCH-TIME {elapsed:.6f} {status}\n")


BenchTime()
