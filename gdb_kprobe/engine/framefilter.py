"""Marks the frames gdb-kprobe's unwinders explained, in `bt`:
`<kprobe: int3 on inet_csk_accept+0x5>` on the entry frame, `[probed]` on the probed
function, `<kretprobe: ...>` on a caller recovered from a rethook node."""
from __future__ import annotations

import gdb
from gdb.FrameDecorator import FrameDecorator

from gdb_kprobe.engine import unwind
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import frame_labels

__all__ = ["KprobeFrameFilter", "register", "label_of", "code_name"]


def label_of(frame: gdb.Frame) -> str | None:
    """The label our unwinders gave this frame (`<kprobe: ...>`, `[probed at ...]`), or
    None for an ordinary frame or with `set kp-unwind off`. `bt` shows it through the
    frame filter below, pwndbg's backtrace pane through integration/pwndbg_backtrace.py."""
    if not unwind.enabled() or not unwind.fits(frame.architecture().name()):
        return None
    try:
        return frame_labels.get(frame_labels.key_of(frame))
    except gdb.error:
        return None


def code_name(pc: int) -> str:
    """A name for code without a DWARF function (entry asm, trampolines), from the ELF
    symbols as bt names it; "??" when no symbol covers pc."""
    found = Symbolizer().lookup(pc)
    return found.symbol if found else "??"


class _Marked(FrameDecorator):
    def __init__(self, base, label: str | None) -> None:
        super().__init__(base)
        self._label = label

    def function(self):
        name = super().function()
        if isinstance(name, int) or not name or name in ("??", "???"):
            # asm code has no DWARF function: name it from the ELF symbols, as bt does
            name = code_name(self.inferior_frame().pc())
        return f"{name} {self._label}" if self._label else name


class KprobeFrameFilter:
    def __init__(self) -> None:
        self.name = "gdb-kprobe"
        self.priority = 100
        self.enabled = True
        gdb.frame_filters[self.name] = self

    def filter(self, frames):
        for decorator in frames:
            yield _Marked(decorator, label_of(decorator.inferior_frame()))


_filter: KprobeFrameFilter | None = None


def register() -> None:
    global _filter
    if _filter is None:
        _filter = KprobeFrameFilter()
