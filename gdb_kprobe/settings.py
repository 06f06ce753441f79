"""gdb settings of the plugin: `set kp-debug on|off`, `set kp-color`, `set kp-unwind`."""
from __future__ import annotations

import gdb


class _DebugParameter(gdb.Parameter):
    """Show Python tracebacks of internal errors in kp-* commands."""

    set_doc = "Set whether kp-* commands show Python tracebacks of internal errors."
    show_doc = "Show whether kp-* commands show Python tracebacks of internal errors."

    def __init__(self) -> None:
        super().__init__("kp-debug", gdb.COMMAND_MAINTENANCE, gdb.PARAM_BOOLEAN)
        self.value = False

    def get_set_string(self) -> str:
        if self.value:             # say what the pwndbg integration did (or why it did not)
            from gdb_kprobe import pwndbg_compat
            return "\n".join(f"gdb-kprobe: pwndbg: {note}" for note in pwndbg_compat.notes)
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
        self.value = "auto"

    def get_set_string(self) -> str:
        return ""

    def get_show_string(self, value: str) -> str:
        return f"kp-color is {value}."


class _UnwindParameter(gdb.Parameter):
    """Whether gdb-kprobe's unwinders see through kprobe entry paths and rethook returns."""

    set_doc = "Set whether backtraces see through kprobe trampolines (on by default)."
    show_doc = "Show whether backtraces see through kprobe trampolines."

    def __init__(self) -> None:
        super().__init__("kp-unwind", gdb.COMMAND_STACK, gdb.PARAM_BOOLEAN)
        self.value = True

    def get_set_string(self) -> str:
        from gdb_kprobe import unwind
        unwind.set_enabled(bool(self.value))
        return ""

    def get_show_string(self, value: str) -> str:
        return f"kp-unwind is {value}."


_debug: _DebugParameter | None = None
_colour: _ColourParameter | None = None
_unwind: _UnwindParameter | None = None


def register() -> None:
    global _debug, _colour, _unwind
    if _debug is None:
        _debug = _DebugParameter()
        _colour = _ColourParameter()
        _unwind = _UnwindParameter()


def colour_mode() -> str:
    """The kp-color setting as set: auto, on or off."""
    return _colour.value if _colour else "off"


def colour() -> bool:
    value = colour_mode()
    if value == "auto":
        try:
            return bool(gdb.parameter("style enabled"))
        except (gdb.error, RuntimeError):
            return False
    return value == "on"


def debug() -> bool:
    return bool(_debug and _debug.value)
