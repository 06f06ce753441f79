"""Our frame labels in pwndbg's backtrace pane (`context backtrace`, the pane shown at
every stop).

pwndbg draws that pane itself: one line per frame, `address symbol`, the symbol from
`info symbol`. It never asks gdb's frame filters, so `<kprobe: int3 on ...>` and
`[probed at ...]` (engine/framefilter.py) appear in `bt` but not there, and a trampoline
page with no ELF symbol shows as `None`. pwndbg keeps its sections in
`pwndbg.commands.context.context_sections` ("b" is the backtrace); we wrap that entry:
pwndbg's lines come back unchanged except that a labelled frame gets its label, and a
frame pwndbg could not name gets bt's name for it.

Lines are matched to frames by their address, in order, so the wrapper does not depend
on how pwndbg picks its window of frames. Anything unexpected leaves pwndbg's lines as
they were (and a note for `set kp-debug on`).
"""
from __future__ import annotations

import functools
import re
from typing import Callable

import gdb

from gdb_kprobe.engine import framefilter, unwind
from gdb_kprobe.target import frame_labels

__all__ = ["hook", "add_labels"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ADDRESS = re.compile(r"\b0x([0-9a-f]+)\b")
_NO_SYMBOL = re.compile(r"\s*(?:\x1b\[[0-9;]*m)*None(?:\x1b\[[0-9;]*m)*\s*$")
_MARK = "__gdb_kprobe_wraps__"     # on our wrapper: the pwndbg function it wraps


def hook(context_module, note: Callable[[str], None]) -> bool:
    """Wrap pwndbg's backtrace section in `context_module` (pwndbg.commands.context),
    once per module object (pwndbg's `reload` makes a new one). True when wrapped."""
    sections = getattr(context_module, "context_sections", None)
    original = sections.get("b") if isinstance(sections, dict) else None
    if original is None or not callable(original):
        note("no backtrace section in pwndbg.commands.context: its pane keeps pwndbg's names")
        return False
    if getattr(original, _MARK, None) is not None:
        return True

    @functools.wraps(original)      # pwndbg validates section names by __name__
    def labelled(*args, **kwargs):
        lines = original(*args, **kwargs)
        # pwndbg builds only the frames it shows (at every stop): when they met a
        # kretprobe's trampoline, draw them again with the real callers. Not settle(),
        # which builds the whole stack first, several ms of stack reads per stop (#19).
        for _ in range(2):
            try:
                if not unwind.rebuild_if_met():
                    break
            except Exception as exc:    # never break pwndbg's pane
                note(f"frames not settled ({type(exc).__name__}: {exc})")
                break
            lines = original(*args, **kwargs)
        try:
            return add_labels(lines)
        except Exception as exc:        # pwndbg's output is not what we expect: leave it
            note(f"backtrace pane left as pwndbg drew it ({type(exc).__name__}: {exc})")
            return lines

    setattr(labelled, _MARK, original)
    sections["b"] = labelled
    note("frame labels added to pwndbg's backtrace pane")
    return True


def add_labels(lines: list[str]) -> list[str]:
    """pwndbg's backtrace lines with our labels appended to the frames that have one."""
    labelled = _labelled_frames() if frame_labels.any_made() else {}
    if not labelled:
        return lines
    out = []
    for line in lines:
        pc = _frame_pc(line)
        label = labelled.get(pc) if pc is not None else None
        out.append(line if label is None else _with_label(line, pc, label))
    return out


def _labelled_frames(limit: int = 256) -> dict[int, str]:
    """pc → label of the frames our unwinders explained, newest first (the first wins
    when two frames share a pc, which recursion through a probe can do)."""
    found: dict[int, str] = {}
    try:
        frame = gdb.newest_frame()
    except gdb.error:
        return found
    for _ in range(limit):
        if frame is None:
            break
        label = framefilter.label_of(frame)
        if label is not None:
            found.setdefault(int(frame.pc()), label)
        try:
            frame = frame.older()
        except gdb.error:
            break
    return found


def _frame_pc(line: str) -> int | None:
    """The frame address on one pwndbg backtrace line (`▶ 0 0xffff... symbol+off`)."""
    match = _ADDRESS.search(_ANSI.sub("", line))
    return int(match.group(1), 16) if match else None


def _with_label(line: str, pc: int, label: str) -> str:
    missing = _NO_SYMBOL.search(line)
    if missing is not None:             # pwndbg found no symbol: bt's name for the code
        line = line[:missing.start()] + " " + framefilter.code_name(pc)
    elif _ANSI.sub("", line).rstrip().endswith(f"{pc:x}"):
        line = line.rstrip() + " " + framefilter.code_name(pc)
    return f"{line.rstrip()} {label}"
