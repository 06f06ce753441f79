"""Marks the frames gdb-kprobe's unwinders explained, in `bt`:
`<kprobe: int3 on inet_csk_accept+0x5>` on the entry frame, `[probed]` on the probed
function, `<kretprobe: ...>` on a caller recovered from a rethook node."""
from __future__ import annotations

import gdb
from gdb.FrameDecorator import FrameDecorator

from gdb_kprobe import arch
from gdb_kprobe.analysis.where import entry_probe_name
from gdb_kprobe.engine import unwind
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.kernel.runtime_code import runtime_code_symbol
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
    """A name for code without a DWARF function (entry asm, trampolines): from the ELF
    symbols as bt names it, else the name /proc/kallsyms gives the run-time code holding pc
    (a dynamic ftrace trampoline is `ftrace_trampoline`, an optprobe detour buffer
    `kprobe_optinsn_page`); "??" when neither does. Only frames gdb has no name for ask."""
    found = Symbolizer().lookup(pc)
    if found:
        return found.symbol
    return runtime_code_symbol(pc) or "??"


def _unnamed_kernel_frame(limit: int = 256) -> bool:
    """Is there a frame at kernel code gdb has no name for (asm entry code, a trampoline:
    `?? ()` in gdb's own bt), which the filter names from the ELF symbols? The frames
    are built already (settle(), or gdb's bt builds them anyway); the user-space end of
    a syscall's stack (pc 0, or below the kernel half) is not ours to name."""
    try:
        frame = gdb.newest_frame()
        for _ in range(limit):
            if frame is None:
                return False
            if int(frame.pc()) >= arch.CODE_SPACE_START and frame.name() is None:
                return True
            frame = frame.older()
    except gdb.error:
        pass
    return False


class _Marked(FrameDecorator):
    def __init__(self, base, label: str | None, name: str | None = None) -> None:
        super().__init__(base)
        self._label = label
        self._name = name

    # gdb would give the arguments, file and line of the function before (pc - 1's)
    def frame_args(self):
        return None if self._name else super().frame_args()

    def filename(self):
        return None if self._name else super().filename()

    def line(self):
        return None if self._name else super().line()

    def address(self):
        return self.inferior_frame().pc() if self._name else super().address()

    def function(self):
        name = self._name or super().function()
        if isinstance(name, int) or not name or name in ("??", "???"):
            # asm code has no DWARF function: name it from the ELF symbols, as bt does
            name = code_name(self.inferior_frame().pc())
        return f"{name} {self._label}" if self._label else name


class KprobeFrameFilter:
    """Labels the frames our unwinders explained. gdb asks `enabled` once per `bt` before
    it prints: that builds the frames (settling kretprobe callers), and only when some
    frame got a label does the filter take part. Otherwise gdb prints the backtrace
    itself, as fast as without the plugin (a Python filter prints frame by frame through
    FrameDecorator, several times slower)."""

    def __init__(self) -> None:
        self.name = "gdb-kprobe"
        self.priority = 100
        self._enabled = True            # `disable frame-filter global gdb-kprobe`
        gdb.frame_filters[self.name] = self

    @property
    def enabled(self) -> bool:
        if not self._enabled:
            return False
        if unwind.enabled():
            unwind.settle()
            if frame_labels.any_made():
                return True
        return _unnamed_kernel_frame()

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)

    def filter(self, frames):
        for decorator in frames:
            frame = decorator.inferior_frame()
            label = label_of(frame)
            name = entry_probe_name(frame, label)
            if name == "":
                continue               # pc - 1's inlined helpers, not the probed function's
            yield _Marked(decorator, label, name)


_filter: KprobeFrameFilter | None = None


def register() -> None:
    global _filter
    if _filter is None:
        _filter = KprobeFrameFilter()
