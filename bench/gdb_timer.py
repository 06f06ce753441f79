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


# -- until the prompt ---------------------------------------------------------------------
# A stop costs more than the command that made it: gdb's stop events and before_prompt
# hooks (a plugin's, pwndbg's context display) run after the command returns. Python's
# gdb.prompt_hook is called after every before_prompt listener, right before gdb shows
# its prompt, so `bench-prompt` stops its clock there: what a user waits for.
_pending: list[float] = []


def _wrap_prompt_hook() -> None:
    current = gdb.prompt_hook
    if getattr(current, "_bench_timer", False):
        return
    previous = current

    def hook(prompt):
        result = previous(prompt) if callable(previous) else None
        if _pending:
            elapsed = time.perf_counter() - _pending.pop()
            gdb.write(f"BENCH-TIME {elapsed:.6f} ok\n")
        return result

    hook._bench_timer = True
    gdb.prompt_hook = hook


class BenchPrompt(gdb.Command):
    """bench-prompt COMMAND...: time COMMAND until gdb's next prompt (stop events and
    prompt hooks included); its output is discarded."""

    def __init__(self) -> None:
        super().__init__("bench-prompt", gdb.COMMAND_MAINTENANCE)

    def invoke(self, argument: str, from_tty: bool) -> None:
        _wrap_prompt_hook()        # again each time: pwndbg may have set its own meanwhile
        _pending[:] = [time.perf_counter()]
        try:
            gdb.execute(argument, to_string=True)
        except gdb.error as exc:
            _pending.clear()
            gdb.write(f"BENCH-TIME 0 error: {exc}\n")


BenchPrompt()
