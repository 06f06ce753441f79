"""Colour for terminal output: pygments for disassembly when it is importable.

Commands build a Palette from the settings (`palette()`) and hand it to the
renderers, which stay free of gdb calls. Colour is off when `set kp-color off`,
when NO_COLOR is set, when gdb's styling is off (auto), or without pygments
(gdb's embedded Python may not have it). gdb 14 and later also drop escape sequences
from Python output while `set style enabled` is off, whatever kp-color says.
"""
from __future__ import annotations

import os

try:
    from pygments import highlight
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import GasLexer
    _LEXER, _FORMATTER = GasLexer(), TerminalFormatter()
except ImportError:            # plain output without pygments
    highlight = None

BOLD, YELLOW, CYAN, RESET = "\x1b[1m", "\x1b[33m", "\x1b[36m", "\x1b[0m"


class Palette:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def asm(self, text: str) -> str:
        if highlight is None or not self.enabled:
            return text
        return highlight(text, _LEXER, _FORMATTER).rstrip("\n")

    def heading(self, text: str) -> str:
        return f"{BOLD}{text}{RESET}" if self.enabled else text

    def flag(self, text: str) -> str:
        return f"{YELLOW}{text}{RESET}" if self.enabled else text

    def address(self, text: str) -> str:
        return f"{CYAN}{text}{RESET}" if self.enabled else text


PLAIN = Palette(False)


def palette() -> Palette:
    """The palette the user's settings ask for."""
    from gdb_kprobe import settings
    if os.environ.get("NO_COLOR"):
        return PLAIN
    return Palette(settings.colour())
