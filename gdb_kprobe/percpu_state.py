"""Where the selected CPU is in kprobe handling: current_kprobe, kprobe_ctlblk and the
backtrace (which the unwinders make reach the probed function)."""
from __future__ import annotations

import dataclasses

import gdb

from gdb_kprobe import target, types, unwind
from gdb_kprobe.kernel import anatomy, kprobes, percpu
from gdb_kprobe.kernel.kallsyms import Location, Symbolizer

STAGES = {"kprobe_int3_handler": "int3 entry", "optimized_callback": "optprobe entry",
          "kprobe_ftrace_handler": "ftrace entry", "kprobe_post_process": "post-handler",
          "rethook_trampoline_handler": "kretprobe return handler",
          "arch_rethook_trampoline_callback": "kretprobe return handler"}


@dataclasses.dataclass
class Where:
    cpu: int
    current: int
    probe_location: Location | None
    status: str
    stage: str
    frames: list[tuple[int, str]]          # (level, what) for the interesting frames


def where() -> Where:
    cpu = gdb.selected_thread().num - 1
    current = target.read_u64(percpu.addresses("current_kprobe")[cpu])
    ctlblk = types.layout("struct kprobe_ctlblk")
    block = percpu.addresses("kprobe_ctlblk")[cpu]
    status_value = ctlblk.view(target.read(block, ctlblk.size), block).int("kprobe_status")
    status = anatomy.KPROBE_STATUS.get(status_value, f"{status_value:#x}?")
    symbolizer = Symbolizer()
    location = None
    handlers: set[int] = set()
    if current:
        layout = types.layout("struct kprobe")
        view = layout.view(target.read(current, layout.size), current)
        location = symbolizer.lookup(view.ptr("addr"))
        table = kprobes.read_table()
        entry = anatomy.find_entry(table, view.ptr("addr"))
        members = (entry.children if entry and table.is_aggregate(entry) else [entry]) if entry else []
        for probe in members:
            handlers.update({probe.pre_handler, probe.post_handler})
    frames = []
    stage = "not in kprobe handling" if not current else f"handling ({status})"
    frame = gdb.newest_frame()
    level = 0
    while frame is not None and level < 64:
        function = frame.function()
        name = function.name if function else None
        if name is None:               # asm code (asm_exc_int3, trampolines): ELF symbols
            found = symbolizer.lookup(int(frame.pc()))
            name = found.symbol if found else None
        start = int(function.value().address) if function else None
        key = (int(frame.read_register("rsp")) & ((1 << 64) - 1), int(frame.pc()))
        label = unwind.labels.get(key)
        if label:
            frames.append((level, f"{name or '??'} {label}"))
        elif name in STAGES:
            frames.append((level, f"{name}: {STAGES[name]}"))
        elif start in handlers and start:
            frames.append((level, f"{name}: a handler of this probe"))
        if name in STAGES and STAGES[name].startswith("kretprobe"):
            stage = "kretprobe return handler (rethook)"
        frame = frame.older()
        level += 1
    if current:
        names = [what for _, what in frames]
        if status == "KPROBE_HIT_SS":
            stage = "single-stepping the copied instruction"
        elif any("post-handler" in w for w in names) or status == "KPROBE_HIT_SSDONE":
            stage = "post-handler"
        elif status == "KPROBE_HIT_ACTIVE":
            stage = "pre-handler"
        elif status == "KPROBE_REENTER":
            stage = "re-entered (a probe hit inside a handler)"
    return Where(cpu, current, location, status, stage, frames)
