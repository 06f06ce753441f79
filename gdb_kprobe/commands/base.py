"""The base of every kp-* command: argparse parsing, guards, one-line errors, the palette.

A command subclass declares `name`, builds its parser in `build_parser()` and
implements `run(args)`: parse → ask the model → render. Whatever goes wrong ends
as one gdb error line, never a Python traceback (`set kp-debug on` shows it).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import traceback

import gdb

from gdb_kprobe import arch, options
from gdb_kprobe.errors import KpError, KpUsageError
from gdb_kprobe.kernel import place_names
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import context, terminal
from gdb_kprobe.target import guards as target_guards
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


@contextlib.contextmanager
def _no_collection(pause: bool = True):
    """No cyclic garbage collection while a command runs: a listing of 10,000 probes makes
    ~50,000 objects that all live until it ends, and a collection midway walks gdb's whole
    Python heap (6 % of kp-list's time, bench/). Its cycles are collected after. Not for a
    command that lets the target run (`pause_collection = False`): that may take minutes,
    with other Python (pwndbg's stop hooks) running meanwhile."""
    enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class KpCommand(gdb.Command):
    name = ""
    summary = ""          # first line of `help <name>`
    mirrors = ""          # which /proc or debugfs file the output mirrors, if any
    # True when the command's answer rests on no per-architecture piece (checked on arm64:
    # tests/e2e/test_arm64_lab.py); the others refuse where gdb_kprobe/arch/ is not written
    arch_neutral = False
    # no garbage collection while it runs (_no_collection); False for a command that resumes
    # the target
    pause_collection = True

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
        # gdb's help prints the summary first: the usage below must not repeat it
        description, self.parser.description = self.parser.description, None
        try:
            usage = self.parser.format_help()
        finally:
            self.parser.description = description
        text = self.summary + "\n\n" + usage
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
            if self.needs_arch_seam(args):
                target_guards.require_arch_seam(self.name)
            with context.language_c(), target_guards.kernel_view(), \
                    _no_collection(self.pause_collection):
                self.run(args)
        except arch.Unwritten as exc:
            # a seam name the target's architecture module lacks, met mid-command
            raise gdb.GdbError(f"{self.name}: {exc}") from None
        except KpError as exc:
            raise gdb.GdbError(str(exc)) from None
        except gdb.GdbError:
            raise
        except KeyboardInterrupt:
            # Ctrl-C, or `q` at the pager: gdb prints its own "Quit", as for its commands
            raise
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

    @staticmethod
    def complete_place(text: str, word: str):
        """A place: kernel text symbols, `module:symbol`, `symbol+offset` at instruction
        boundaries (kernel/place_names.py); module names only while the target is stopped.
        Completion never fails loudly: anything unreadable just completes less."""
        current = text.split(" ")[-1]
        cut = len(current) - len(word or "")
        if gdb.current_progspace().filename is None:
            return gdb.COMPLETE_NONE
        try:
            try:
                target_guards.require_stopped_target()
                symbolizer: Symbolizer | None = Symbolizer()
            except KpError:
                symbolizer = None
            with context.language_c():
                found = place_names.complete(current, symbolizer)
        except (KpError, gdb.error, ValueError):
            return gdb.COMPLETE_NONE
        return [name[cut:] for name in found] or gdb.COMPLETE_NONE

    def needs_arch_seam(self, args: argparse.Namespace) -> bool:
        """Does this run's answer rest on gdb_kprobe/arch/ (instruction bytes, the memory
        map, registers)? Then it is refused where the seam is not the target's."""
        return not self.arch_neutral

    def check_args(self, args: argparse.Namespace) -> None:
        """Refuse argument combinations before any guard looks at the target."""

    def run(self, args: argparse.Namespace) -> None:
        raise NotImplementedError


def palette() -> Palette:
    """The palette the user's settings ask for (pwndbg's theme when pwndbg is loaded).

    `set kp-color auto` colours only when gdb would style its own output now (not in a
    `pipe`, not with TERM=dumb, ...: target/terminal.py) and pwndbg's `disable-colors` is
    off; `on` always colours; NO_COLOR turns colour off whatever the setting."""
    settings = options.current
    if os.environ.get("NO_COLOR") or settings.colour == "off":
        return PLAIN
    theme = settings.theme() if settings.theme is not None else None
    styled = settings.colour == "on" or (terminal.gdb_would_style()
                                         and (theme is None or theme.enabled))
    return Palette(styled, theme.roles if theme is not None else None)
