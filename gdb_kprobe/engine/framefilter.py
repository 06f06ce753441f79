"""Marks the frames gdb-kprobe's unwinders explained, in `bt`:
`<kprobe: int3 on inet_csk_accept+0x5>` on the entry frame, `[probed]` on the probed
function, `<kretprobe: ...>` on a caller recovered from a rethook node."""
from __future__ import annotations

import gdb
from gdb.FrameDecorator import FrameDecorator

from gdb_kprobe.engine import unwind
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import frame_labels

__all__ = ["KprobeFrameFilter", "register"]


class _Marked(FrameDecorator):
    def __init__(self, base, label: str | None) -> None:
        super().__init__(base)
        self._label = label

    def function(self):
        name = super().function()
        if isinstance(name, int) or not name or name in ("??", "???"):
            # asm code has no DWARF function: name it from the ELF symbols, as bt does
            found = Symbolizer().lookup(self.inferior_frame().pc())
            name = found.symbol if found else "??"
        return f"{name} {self._label}" if self._label else name


class KprobeFrameFilter:
    def __init__(self) -> None:
        self.name = "gdb-kprobe"
        self.priority = 100
        self.enabled = True
        gdb.frame_filters[self.name] = self

    def filter(self, frames):
        for decorator in frames:
            frame = decorator.inferior_frame()
            try:
                key = frame_labels.key_of(frame)
            except gdb.error:
                yield decorator
                continue
            label = frame_labels.get(key) if unwind.enabled() else None
            yield _Marked(decorator, label)


_filter: KprobeFrameFilter | None = None


def register() -> None:
    global _filter
    if _filter is None:
        _filter = KprobeFrameFilter()
