"""kp-where's model: where the selected CPU is in kprobe handling, from the per-CPU
current_kprobe and kprobe_ctlblk and from the backtrace (which the unwinder makes reach the
probed function, labelling the frames it explained)."""
from __future__ import annotations

import dataclasses

import gdb

from gdb_kprobe import arch
from gdb_kprobe.kernel import anatomy, kprobes, percpu
from gdb_kprobe.kernel.kallsyms import Location, Symbolizer
from gdb_kprobe.kernel.runtime_code import runtime_code_symbol
from gdb_kprobe.target import context, frame_labels, layouts, memory

__all__ = ["Where", "WhereFrame", "where", "entry_probe_name"]

# the stages of kprobe handling by function name are the arch seam's (arch.KPROBE_STAGES)


@dataclasses.dataclass
class WhereFrame:
    """A frame that tells where the CPU is: one the unwinder labelled ("unwound"), a stage
    of kprobe handling ("stage"), or a handler of the probe being handled ("handler")."""

    level: int
    function: str | None       # None: no symbol covers the pc
    kind: str
    note: str                  # the unwinder's label, the stage, or what the handler is


@dataclasses.dataclass
class Where:
    """A CPU's place in kprobe handling."""

    cpu: int
    current: int                            # current_kprobe; 0 when NULL
    probe_address: int | None               # that kprobe's addr
    probe_location: Location | None
    status: str
    stage: str
    frames: list[WhereFrame]               # the interesting frames, newest first

    @property
    def handling(self) -> bool:
        # a rethook return handler runs with current_kprobe NULL: still kprobe handling
        return bool(self.current) or self.stage.startswith("kretprobe")


def entry_probe_name(frame: gdb.Frame, label: str | None,
                     symbolizer: Symbolizer | None = None) -> str | None:
    """A probe at a function's first instruction (arm64's BRK leaves regs->pc there): gdb
    names a frame that is not the newest from pc - 1, the function before, and makes frames
    for its inlined helpers. The function's name ("" for such an inline frame), or None."""
    if not label or not label.startswith("[probed"):
        return None
    found = (symbolizer or Symbolizer()).lookup(int(frame.pc()))
    if not found or found.offset:
        return None
    return "" if frame.type() == gdb.INLINE_FRAME else found.symbol


def where() -> Where:
    """Where the selected CPU is: the probe it handles, the stage, the frames that tell."""
    cpu = context.current_cpu()
    current = memory.read_u64(percpu.addresses("current_kprobe")[cpu])
    ctlblk = layouts.layout("struct kprobe_ctlblk")
    block = percpu.addresses("kprobe_ctlblk")[cpu]
    status_value = ctlblk.view(memory.read(block, ctlblk.size), block).int("kprobe_status")
    status = anatomy.KPROBE_STATUS.get(status_value, f"{status_value:#x}?")
    symbolizer = Symbolizer()
    location = probe_address = None
    handlers: set[int] = set()
    if current:
        layout = layouts.layout("struct kprobe")
        view = layout.view(memory.read(current, layout.size), current)
        probe_address = view.ptr("addr")
        location = symbolizer.lookup(probe_address)
        table = kprobes.read_table()
        entry = kprobes.find_entry(table, probe_address)
        members = (entry.children if entry and table.is_aggregate(entry) else [entry]) if entry else []
        for probe in members:
            handlers.update({probe.pre_handler, probe.post_handler})
    frames: list[WhereFrame] = []
    stage = "not in kprobe handling" if not current else f"handling ({status})"
    stages = arch.KPROBE_STAGES
    frame = gdb.newest_frame()
    level = 0
    while frame is not None and level < 64:
        function = frame.function()
        name = function.name if function else None
        label = frame_labels.get(frame_labels.key_of(frame))
        entry = entry_probe_name(frame, label, symbolizer)
        if entry is not None:          # "": pc - 1's inlined helpers, left out
            name, function = entry, None
        if name is None:               # asm code (asm_exc_int3): ELF symbols; code made at
            found = symbolizer.lookup(int(frame.pc()))      # run time: kallsyms' name
            name = found.symbol if found else runtime_code_symbol(int(frame.pc()))
        start = int(function.value().address) if function else None
        if label and entry != "":
            frames.append(WhereFrame(level, name, "unwound", label))
        elif name in stages:
            frames.append(WhereFrame(level, name, "stage", stages[name]))
        elif start in handlers and start:
            frames.append(WhereFrame(level, name, "handler", "a handler of this probe"))
        if name in stages and stages[name].startswith("kretprobe"):
            machinery = "rethook" if "rethook" in name else "kretprobe_instance"
            stage = f"kretprobe return handler ({machinery})"
        frame = frame.older()
        level += 1
    # arm64's kretprobe return handler (no rethook) runs with current_kprobe set to the
    # kretprobe's and kprobe_status left from the last probe: the frames tell
    if current and not stage.startswith("kretprobe"):
        if status == "KPROBE_HIT_SS":
            stage = "single-stepping the copied instruction"
        elif any("post-handler" in shown.note for shown in frames) or status == "KPROBE_HIT_SSDONE":
            stage = "post-handler"
        elif status == "KPROBE_HIT_ACTIVE":
            stage = "pre-handler"
        elif status == "KPROBE_REENTER":
            stage = "re-entered (a probe hit inside a handler)"
    return Where(cpu, current, probe_address, location, status, stage, frames)
