"""gdb settings of the plugin: `set kp-debug on|off`."""
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
        return ""

    def get_show_string(self, value: str) -> str:
        return f"kp-debug is {value}."


_debug: _DebugParameter | None = None


def register() -> None:
    global _debug
    if _debug is None:
        _debug = _DebugParameter()


def debug() -> bool:
    return bool(_debug and _debug.value)
