"""gdb settings of the plugin: `set kp-debug on|off`, `set kp-color`, `set kp-unwind`,
`set kp-read-block`.

Each parameter writes its value into gdb_kprobe.options, which the layers below read
without knowing about gdb parameters."""
from __future__ import annotations

import gdb

from gdb_kprobe import options
from gdb_kprobe.engine import unwind
from gdb_kprobe.integration import pwndbg
from gdb_kprobe.target import memory

__all__ = ["register"]


class _DebugParameter(gdb.Parameter):
    """Show Python tracebacks of internal errors in kp-* commands."""

    set_doc = "Set whether kp-* commands show Python tracebacks of internal errors."
    show_doc = "Show whether kp-* commands show Python tracebacks of internal errors."

    def __init__(self) -> None:
        super().__init__("kp-debug", gdb.COMMAND_MAINTENANCE, gdb.PARAM_BOOLEAN)
        self.value = options.current.debug

    def get_set_string(self) -> str:
        options.current.debug = bool(self.value)
        if self.value:             # say what the pwndbg integration did (or why it did not)
            return "\n".join(f"gdb-kprobe: pwndbg: {note}" for note in pwndbg.notes)
        return ""

    def get_show_string(self, value: str) -> str:
        return f"kp-debug is {value}."


class _ColourParameter(gdb.Parameter):
    """Colour in kp-* output: on, off, or auto (on when gdb's styling is on; under pwndbg,
    unless pwndbg's disable-colors is on)."""

    set_doc = "Set colouring of kp-* output (on, off, auto)."
    show_doc = "Show colouring of kp-* output."

    def __init__(self) -> None:
        super().__init__("kp-color", gdb.COMMAND_SUPPORT, gdb.PARAM_ENUM, ["auto", "on", "off"])
        self.value = options.current.colour

    def get_set_string(self) -> str:
        options.current.colour = str(self.value)
        return ""

    def get_show_string(self, value: str) -> str:
        return f"kp-color is {value}."


class _UnwindParameter(gdb.Parameter):
    """Whether gdb-kprobe's unwinders see through kprobe entry paths and rethook returns."""

    set_doc = "Set whether backtraces see through kprobe trampolines (on by default)."
    show_doc = "Show whether backtraces see through kprobe trampolines."

    def __init__(self) -> None:
        super().__init__("kp-unwind", gdb.COMMAND_STACK, gdb.PARAM_BOOLEAN)
        self.value = options.current.unwind

    def get_set_string(self) -> str:
        options.current.unwind = bool(self.value)
        unwind.set_enabled(bool(self.value))
        return ""

    def get_show_string(self, value: str) -> str:
        return f"kp-unwind is {value}."


class _ReadBlockParameter(gdb.Parameter):
    """How big kp-* commands' memory reads are: auto, or a block size in bytes.

auto (the default) times each remote read, fits time = round trip + bytes / throughput
(hex doubles the bytes on the wire), and reads what the commands ask for at the block
size that minimises the expected time: 2 KiB blocks over fast TCP, where the round trip
dominates; exact reads over kgdb on a serial line, which pays per byte, and of only
the fields of an object a walk uses (neighbours together when a round trip costs more).
N forces aligned N-byte blocks (a power of two up to 4096); 0 or 1 means exact reads.
`show kp-read-block` also says what auto has measured of the link."""

    set_doc = "Set the size of kp-* memory reads (auto, or bytes; 0 or 1: exact reads)."
    show_doc = "Show the size of kp-* memory reads and what auto measured of the link."

    def __init__(self) -> None:
        super().__init__("kp-read-block", gdb.COMMAND_DATA, gdb.PARAM_STRING)
        self.value = options.current.read_block

    def get_set_string(self) -> str:
        text = str(self.value or "auto").strip().lower()
        try:
            memory.set_read_block(text)
        except ValueError as exc:
            self.value = options.current.read_block        # keep the setting in force
            raise gdb.GdbError(f"{exc}; use `set kp-read-block auto|N`") from None
        self.value = options.current.read_block = text
        return ""

    def get_show_string(self, value: str) -> str:
        return f"kp-read-block is {value or 'auto'} ({memory.describe_reads()})."


_registered: list[gdb.Parameter] = []


def register() -> None:
    if not _registered:
        _registered.extend((_DebugParameter(), _ColourParameter(), _UnwindParameter(),
                            _ReadBlockParameter()))
