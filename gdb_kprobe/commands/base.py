"""The base of every kp-* command: argparse parsing, guards, one-line errors.

A command subclass declares `name`, builds its parser in `build_parser()` and
implements `run(args)`: parse → ask the model → render. Whatever goes wrong ends
as one gdb error line, never a Python traceback (`set kp-debug on` shows it).
"""
from __future__ import annotations

import argparse
import contextlib
import re
import traceback
from typing import Iterator

import gdb

from gdb_kprobe import settings
from gdb_kprobe.errors import KpError, KpUsageError


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
            with _c_language():
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
            if settings.debug():
                gdb.write(traceback.format_exc())
            raise gdb.GdbError(f"{self.name}: internal error: {type(exc).__name__}: {exc} "
                               "(`set kp-debug on` shows the traceback)") from None

    def complete(self, text: str, word: str):
        if word is not None and word.startswith("-"):
            options = [opt for action in self.parser._actions for opt in action.option_strings]
            return sorted(opt for opt in options if opt.startswith(word))
        return self.complete_argument(text, word)

    def complete_argument(self, text: str, word: str):
        return gdb.COMPLETE_NONE

    def run(self, args: argparse.Namespace) -> None:
        raise NotImplementedError


@contextlib.contextmanager
def _c_language() -> Iterator[None]:
    """Run a command in gdb's C language. With `set language auto`, gdb takes the language of
    the selected frame, and a CPU stopped in an assembler stub (entry_64.S, a trampoline)
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
