"""Colour for terminal output: pygments for disassembly when it is importable.

Commands build a Palette from the settings (commands/base.py: `palette()`) and hand it to
the renderers, which stay free of gdb calls. With `set kp-color auto` colour follows gdb's
own rule (target/terminal.py: `set style enabled`, a terminal, TERM not dumb, not inside
`pipe`) and pwndbg's `disable-colors`; `off` and NO_COLOR turn it off, `on` forces it.
Without pygments (gdb's embedded Python may not have it) disassembly stays plain. Under
pwndbg the palette takes pwndbg's theme colours (integration/pwndbg.py).
"""
from __future__ import annotations

from typing import Callable, Mapping

try:
    from pygments import highlight
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import GasLexer
    _LEXER, _FORMATTER = GasLexer(), TerminalFormatter()
except ImportError:            # plain output without pygments
    highlight = None

__all__ = ["Palette", "PLAIN"]

BOLD, YELLOW, CYAN, RESET = "\x1b[1m", "\x1b[33m", "\x1b[36m", "\x1b[0m"


def _asm(text: str) -> str:
    if highlight is None:
        return text
    return highlight(text, _LEXER, _FORMATTER).rstrip("\n")


# Our own colours per role; a theme (pwndbg's) may replace any of them.
_OWN: dict[str, Callable[[str], str]] = {
    "asm": _asm,
    "heading": lambda text: f"{BOLD}{text}{RESET}",
    "flag": lambda text: f"{YELLOW}{text}{RESET}",
    "address": lambda text: f"{CYAN}{text}{RESET}",
    "symbol": str,
}


class Palette:
    def __init__(self, enabled: bool,
                 theme: Mapping[str, Callable[[str], str]] | None = None) -> None:
        self.enabled = enabled
        self.theme = dict(theme or {})

    def _paint(self, role: str, text: str) -> str:
        if not self.enabled:
            return text
        themed = self.theme.get(role)
        if themed is not None:
            try:
                return str(themed(text))
            except Exception:      # a third-party theme function failed: our colour
                pass
        return _OWN[role](text)

    def asm(self, text: str) -> str:
        return self._paint("asm", text)

    def heading(self, text: str) -> str:
        return self._paint("heading", text)

    def flag(self, text: str) -> str:
        return self._paint("flag", text)

    def address(self, text: str) -> str:
        return self._paint("address", text)

    def symbol(self, text: str) -> str:
        return self._paint("symbol", text)


PLAIN = Palette(False)
