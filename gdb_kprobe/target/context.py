"""Small gdb context helpers: a temporary gdb setting, the current CPU, registers of a frame,
One place for each, instead of one per caller."""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError

__all__ = ["setting", "language_c", "current_cpu", "cpu_of_thread", "frame_registers",
           "newest_registers", "non_stop"]


def _shown(value: object) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    return str(value)


@contextlib.contextmanager
def setting(name: str, value: str) -> Iterator[None]:
    """`set NAME VALUE` for the duration of a block, restored whatever ends it."""
    previous = _shown(gdb.parameter(name))
    if previous == value:
        yield
        return
    gdb.execute(f"set {name} {value}", to_string=True)
    try:
        yield
    finally:
        gdb.execute(f"set {name} {previous}", to_string=True)


@contextlib.contextmanager
def language_c() -> Iterator[None]:
    """Run in gdb's C language. With `set language auto`, gdb takes the language of the
    selected frame, and a CPU stopped in an assembler stub (entry_64.S, a trampoline)
    makes it `asm`, which names types without their tag: "socket *" for
    "struct socket *". What we print must not depend on where the CPU happened to stop."""
    # 'The current source language is "auto; currently asm".' or '... is "c".'
    shown = re.search(r'"(\w+)(?:; currently (\w+))?"', gdb.execute("show language", to_string=True))
    if shown is None or (shown[2] or shown[1]) == "c":
        yield
        return
    previous = shown[1]                 # "auto" stays auto: gdb follows the frames again
    gdb.execute("set language c", to_string=True)
    try:
        yield
    finally:
        gdb.execute(f"set language {previous}", to_string=True)


def cpu_of_thread(thread: gdb.InferiorThread) -> int:
    """The CPU number of a gdb thread: QEMU's gdbstub and kgdb show one thread per CPU,
    numbered from 1 (as scripts/gdb/linux/cpus.py's get_current_cpu() assumes)."""
    return thread.num - 1


def current_cpu() -> int:
    """The CPU of the selected thread."""
    thread = gdb.selected_thread()
    if thread is None:
        raise KpError("no thread selected: not attached to a kernel")
    return cpu_of_thread(thread)


def frame_registers(frame: gdb.Frame, names: list[str]) -> dict[str, int]:
    """gdb registers of `frame` by gdb name, unsigned."""
    return {name: arch.u64(int(frame.read_register(name))) for name in names}


def newest_registers(pt_regs_names: list[str]) -> dict[str, int]:
    """Registers of the newest frame by their struct pt_regs names (ip, ax, ...)."""
    frame = gdb.newest_frame()
    return {name: arch.u64(int(frame.read_register(arch.PT_REGS[name])))
            for name in pt_regs_names}


def non_stop() -> bool:
    try:
        return bool(gdb.parameter("non-stop"))
    except (gdb.error, RuntimeError, AttributeError):
        return False
