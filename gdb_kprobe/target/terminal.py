"""Would gdb style what it writes now? The colour rule of every kp-* command.

gdb styles its own output only when `set style enabled` is on, TERM is set and not
`dumb`, its stdout is a terminal, and the output goes there (not into `pipe CMD | SHELL`).
Python's gdb.write passes escape sequences through in each of those cases (gdb 13 and 18
alike; gdb 14+ only drop them when `style enabled` is off), so the plugin must decide
itself, by the same rule.
"""
from __future__ import annotations

import os

import gdb

__all__ = ["gdb_would_style", "output_is_piped"]


def gdb_would_style() -> bool:
    """gdb's rule for styling its own output, checked now."""
    try:
        if not gdb.parameter("style enabled"):
            return False
    except (gdb.error, RuntimeError):
        return False
    if os.environ.get("TERM", "dumb") == "dumb":       # gdb's term_cli_styling()
        return False
    try:
        if not os.isatty(1):
            return False
    except OSError:
        return False
    return not output_is_piped()


def output_is_piped() -> bool:
    """True while `pipe CMD | SHELL` (or `| CMD | SHELL`) sends our output into SHELL.

    gdb gives Python no way to ask which file its output goes to. But gdb starts SHELL
    (popen) before it runs CMD, so while CMD runs, a child of gdb reads from a pipe whose
    write end gdb holds. Linux /proc shows both ends; elsewhere this says False."""
    children = _children()
    if not children:
        return False
    held = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if link.startswith("pipe:"):
                held.add(link)
    except OSError:
        return False
    for child in children:
        try:
            if os.readlink(f"/proc/{child}/fd/0") in held:
                return True
        except OSError:
            continue
    return False


def _children() -> list[str]:
    found: list[str] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as listing:
                found.extend(listing.read().split())
        except OSError:
            continue
    return found
