"""pwndbg integration: our commands in pwndbg's command list, pwndbg's theme in our colours.

pwndbg is not a dependency and is never imported here: everything reads the modules an
already-loaded pwndbg put in sys.modules, through feature checks (getattr, not version
numbers), so both the older layout (pwndbg.gdblib.*) and the newer one (pwndbg.aglib.*,
pwndbg.dbg) work, and any API difference only turns the integration off. Without pwndbg
nothing here does anything.

Load order: gdb-kprobe's gdbinit.py sourced after pwndbg's (the documented way) attaches
at once; if pwndbg is loaded later, the next prompt attaches (a before_prompt check that
only looks at sys.modules; it also lists our commands again after pwndbg's `reload`).
`set kp-debug on` prints what the integration did and why.

What it changes in pwndbg:
- `pwndbg [filter]` lists our kp-* commands under its Kernel category. gdb already has
  the commands (KpCommand), so pwndbg gets plain listing entries, not pwndbg Command
  objects (creating those would register each command with gdb a second time).
- Its backtrace pane shows our frame labels (integration/pwndbg_backtrace.py), as `bt`
  does. Nothing else in its context display: our before_prompt hook runs before pwndbg's
  gdb.prompt_hook (gdb emits the event first) and we never set gdb.prompt_hook.
"""
from __future__ import annotations

import sys
from typing import Callable, NamedTuple

import gdb

from gdb_kprobe import options
from gdb_kprobe.integration import pwndbg_backtrace
from gdb_kprobe.target import cache

__all__ = ["Theme", "notes", "loaded", "attached", "attach", "theme", "register"]

Colour = Callable[[str], str]

# Our palette roles → where pwndbg keeps the matching theme colour, first found wins.
# Functions of one string; all follow `set <param>-color` and `set disable-colors`.
_ROLES: dict[str, tuple[str, ...]] = {
    "heading": ("pwndbg.color.context.banner",),              # banner-color
    "flag": ("pwndbg.color.message.hint",),                   # message-hint-color (markers)
    "address": ("pwndbg.color.memory.c.code",),               # memory-code-color (kernel text)
    "symbol": ("pwndbg.aglib.nearpc.c.symbol",                # nearpc-symbol-color
               "pwndbg.gdblib.nearpc.c.symbol"),
}

_state: dict = {"attached": False, "listing": None, "context": None}
_commands: list = []           # the kp-* command objects to list (register() gets them)
notes: list[str] = []          # what happened, for `set kp-debug on`


class Theme(NamedTuple):
    enabled: bool                  # pwndbg's own `disable-colors` is off
    roles: dict[str, Colour]       # palette role → pwndbg colour function


class _Listed:
    """A `pwndbg [filter]` entry for a command gdb already has: the attributes pwndbg's
    listing reads in each of its generations (name/doc, command_name/description,
    aliases, category, shell, is_alias), and no gdb registration."""

    repeat = False
    shell = False
    is_alias = False
    subcommand_names = None
    examples = ""
    notes = ""

    def __init__(self, command, category) -> None:
        self.command_name = self.__name__ = command.name
        self.description = self.__doc__ = _short(command.summary)
        self.doc = self.help_str = command.__doc__       # the full `help kp-...` text
        self.parser = command.parser
        self.aliases: list[str] = []
        self.category = category


def _short(summary: str) -> str:
    """The summary's first clause, for pwndbg's one-line-per-command table; each ends with
    a period, as pwndbg's own descriptions do."""
    cut = min((summary.find(mark) for mark in (": ", " (", "; ") if mark in summary),
              default=-1)
    short = summary[:cut] if cut >= 20 else summary
    return short.rstrip(".") + "."


def loaded() -> bool:
    """pwndbg is loaded in this gdb (its commands module too, i.e. it finished starting)."""
    return "pwndbg" in sys.modules and "pwndbg.commands" in sys.modules


def attached() -> bool:
    return _state["attached"]


def _note(text: str) -> None:
    if text not in notes:
        notes.append(text)
        if options.current.debug:
            gdb.write(f"gdb-kprobe: pwndbg: {text}\n")


def _lookup(path: str):
    """The object at a dotted path inside the loaded pwndbg, or None (this pwndbg has no
    such thing); never imports."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        found = sys.modules.get(".".join(parts[:cut]))
        if found is None:
            continue
        try:
            for name in parts[cut:]:
                found = getattr(found, name)
        except AttributeError:      # another pwndbg layout: the caller tries the next path
            return None
        except Exception as exc:    # e.g. a colour name pwndbg's theme cannot parse
            _note(f"{path}: {type(exc).__name__}: {exc}")
            return None
        return found
    return None


def attach() -> bool:
    """List our commands in pwndbg and label its backtrace pane, once pwndbg is loaded;
    True when attached. Does it again when pwndbg's objects are new ones (its `reload`
    command re-imports them)."""
    if not loaded():
        return False
    _hook_backtrace_pane()
    listing = getattr(sys.modules["pwndbg.commands"], "commands", None)
    if _state["attached"] and listing is _state["listing"]:
        return True
    # one attempt per list: a failure is noted, not retried at every prompt
    _state.update(attached=True, listing=listing)
    try:
        count = _list_commands(listing)
    except Exception as exc:       # pwndbg's API differs: plain mode, say why on request
        _note(f"commands not listed ({type(exc).__name__}: {exc})")
        return True
    _note(f"{count} kp-* commands listed under pwndbg's Kernel category")
    return True


def _hook_backtrace_pane() -> None:
    """Our frame labels in pwndbg's backtrace pane; one attempt per context module."""
    context = sys.modules.get("pwndbg.commands.context")
    if context is None or context is _state.get("context"):
        return
    _state["context"] = context
    try:
        pwndbg_backtrace.hook(context, _note)
    except Exception as exc:
        _note(f"backtrace pane not labelled ({type(exc).__name__}: {exc})")


def _list_commands(listing) -> int:
    module = sys.modules["pwndbg.commands"]
    category = getattr(getattr(module, "CommandCategory"), "KERNEL")
    names = getattr(module, "command_names", None)
    present = {getattr(c, "command_name", getattr(c, "__name__", None)) for c in listing}
    count = 0
    for command in _commands:
        if command.name in present:
            continue
        listing.append(_Listed(command, category))
        if isinstance(names, set):
            names.add(command.name)    # pwndbg then refuses a command of the same name
        count += 1
    return count


def theme() -> Theme | None:
    """pwndbg's colours for our palette roles, or None without pwndbg (or when reading
    its theme fails: then our own colours)."""
    if not attach():
        return None
    try:
        return _theme()
    except Exception as exc:
        _note(f"theme not used ({type(exc).__name__}: {exc})")
        return None


def _theme() -> Theme:
    disable = _lookup("pwndbg.color.disable_colors")
    roles: dict[str, Colour] = {}
    for role, paths in _ROLES.items():
        for path in paths:
            found = _lookup(path)
            if callable(found):
                roles[role] = found
                break
        else:
            _note(f"no pwndbg colour for {role!r}: gdb-kprobe's own is used")
    asm = _asm_highlighter()
    if asm is not None:
        roles["asm"] = asm
    return Theme(not bool(disable) if disable is not None else True, roles)


def _asm_highlighter() -> Colour | None:
    """pwndbg's pygments highlighting of assembly (its syntax-highlight-style), or plain
    text when the user turned pwndbg's `syntax-highlight` off."""
    highlight = _lookup("pwndbg.color.syntax_highlight.syntax_highlight")
    if not callable(highlight):
        return None
    for path in ("pwndbg.config", "pwndbg.gdblib.config.config", "pwndbg.gdblib.config"):
        config = _lookup(path)
        value = getattr(config, "syntax_highlight", None) if config is not None else None
        if value is not None:
            if not bool(value):
                return str
            break
    return lambda text: highlight(text, ".asm")


def _before_prompt(*_args) -> None:
    attach()                       # cheap: a few dict lookups once attached


def register(commands: list) -> None:
    """At load: attach now if pwndbg is already loaded; check again before each prompt
    (pwndbg loaded after us, or reloaded). Our palette asks `theme()` from now on."""
    _commands[:] = commands
    options.current.theme = theme
    attach()
    cache.register(_before_prompt, "before_prompt")    # the plugin's one prompt listener
