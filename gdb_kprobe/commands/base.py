"""The base of every kp-* command: argparse parsing, guards, one-line errors, the palette.

A command subclass declares `name`, builds its parser in `build_parser()` and
implements `run(args)`: parse → ask the model → render. Whatever goes wrong ends
as one gdb error line, never a Python traceback (`set kp-debug on` shows it).
"""
from __future__ import annotations

import argparse
import os
import traceback

import gdb

from gdb_kprobe import options
from gdb_kprobe.errors import KpError, KpUsageError
from gdb_kprobe.target import context
from gdb_kprobe.ui.colour import PLAIN, Palette

__all__ = ["KpArgumentParser", "KpCommand", "palette"]


class _HelpShown(Exception):
    pass


class KpArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise KpUsageError(f"{self.prog}: {message}; see `help {self.prog}`")

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            raise KpUsageError(message.strip())
        raise _HelpShown()

    def _print_message(self, message: str, file=None) -> None:
        if message:
            gdb.write(message)


class KpCommand(gdb.Command):
    name = ""
    summary = ""          # first line of `help <name>`
    mirrors = ""          # which /proc or debugfs file the output mirrors, if any

    def __init__(self) -> None:
        self.parser = self.build_parser()
        self.__doc__ = self._doc()
        super().__init__(self.name, gdb.COMMAND_DATA)

    def build_parser(self) -> KpArgumentParser:
        # a fixed width: help (and docs/commands.md made from it) must not depend on $COLUMNS
        return KpArgumentParser(prog=self.name, description=self.summary, add_help=True,
                                formatter_class=lambda prog: argparse.HelpFormatter(prog,
                                                                                    width=92))

    @staticmethod
    def add_json_option(parser: KpArgumentParser) -> None:
        """--json: one JSON document instead of text (gdb_kprobe/jsonout.py, docs/json.md)."""
        parser.add_argument("--json", action="store_true",
                            help="print one line of JSON instead of text (no colour); fields "
                                 "and schema: docs/json.md")

    def _doc(self) -> str:
        text = self.summary + "\n\n" + self.parser.format_help()
        if self.mirrors:
            text += f"\nMirrors {self.mirrors}."
        return text

    # gdb entry points ---------------------------------------------------------------
    def invoke(self, argument: str, from_tty: bool) -> None:
        try:
            try:
                argv = gdb.string_to_argv(argument)
            except (gdb.error, ValueError) as exc:
                raise KpUsageError(f"{self.name}: cannot split the arguments: {exc}")
            try:
                args = self.parser.parse_args(argv)
            except _HelpShown:
                return
            self.check_args(args)
            with context.language_c():
                self.run(args)
        except KpError as exc:
            raise gdb.GdbError(str(exc)) from None
        except gdb.GdbError:
            raise
        except KeyboardInterrupt:
            raise gdb.GdbError(f"{self.name}: interrupted") from None
        except gdb.MemoryError as exc:
            raise gdb.GdbError(f"{self.name}: cannot read target memory: {exc}") from None
        except gdb.error as exc:
            text = " ".join(str(exc).split())
            gone = gdb.selected_inferior().pid == 0      # the connection dropped meanwhile
            if gone or any(word in text for word in ("Remote connection closed",
                                                     "Target disconnected",
                                                     "Remote communication error")):
                raise gdb.GdbError(f"{self.name}: the target went away ({text}); reconnect with "
                                   "target remote, or open a dump with core-file") from None
            raise gdb.GdbError(f"{self.name}: {text}") from None
        except Exception as exc:  # a bug of ours: still one line, details on request
            if options.current.debug:
                gdb.write(traceback.format_exc())
            raise gdb.GdbError(f"{self.name}: internal error: {type(exc).__name__}: {exc} "
                               "(`set kp-debug on` shows the traceback)") from None

    def complete(self, text: str, word: str):
        """Options and their values from the parser; anything else by the command. gdb cuts
        `word` at characters such as `-`, so the token is taken from `text` and each
        completion is given from where `word` starts."""
        tokens = text.split(" ")
        current = tokens[-1]
        cut = len(current) - len(word or "")
        previous = next((token for token in reversed(tokens[:-1]) if token), None)
        wanting = self._option_wanting_value(previous)
        if wanting is not None:
            return [choice[cut:] for choice in map(str, wanting.choices or ())
                    if choice.startswith(current)] or gdb.COMPLETE_NONE
        if current.startswith("-"):
            flags = {opt for action in self.parser._actions for opt in action.option_strings}
            return sorted(opt[cut:] for opt in flags if opt.startswith(current))
        return self.complete_argument(text, word)

    def _option_wanting_value(self, token: str | None):
        """The parser action of `token` when it is an option that takes a value."""
        if not token or not token.startswith("-"):
            return None
        for action in self.parser._actions:
            if token in action.option_strings and action.nargs != 0:
                return action
        return None

    def complete_argument(self, text: str, word: str):
        return gdb.COMPLETE_NONE

    def check_args(self, args: argparse.Namespace) -> None:
        """Refuse argument combinations before any guard looks at the target."""

    def run(self, args: argparse.Namespace) -> None:
        raise NotImplementedError


def palette() -> Palette:
    """The palette the user's settings ask for (pwndbg's theme when pwndbg is loaded)."""
    if os.environ.get("NO_COLOR"):
        return PLAIN
    settings = options.current
    styled = context.gdb_styling() if settings.colour == "auto" else settings.colour == "on"
    theme = settings.theme() if settings.theme is not None else None
    if theme is None:
        return Palette(styled)
    return Palette(theme.enabled if settings.colour == "auto" else styled, theme.roles)
