"""The plugin's settings as plain values, below every layer that reads them.

integration/parameters.py turns gdb's `set kp-debug|kp-color|kp-unwind|kp-read-block`
into these values; plugin.load() hands in pwndbg's theme. Nothing here talks to gdb.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["Options", "current"]


@dataclasses.dataclass
class Options:
    debug: bool = False                  # set kp-debug: tracebacks of internal errors
    colour: str = "auto"                 # set kp-color: auto | on | off
    unwind: bool = True                  # set kp-unwind: see through kprobe trampolines
    read_block: str = "auto"             # set kp-read-block: auto | N (bytes; 0, 1: exact)
    # pwndbg's theme when pwndbg is loaded (integration/pwndbg.py), else None
    theme: Callable[[], Any] | None = None


current = Options()
