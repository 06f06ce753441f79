"""gdb frame unwinders that see through the kprobe machinery.

Entry paths. Every way into a kprobe handler saves the probed context as a
struct pt_regs on the stack and calls C code with a pointer to it:
  - int3:     asm_exc_int3 does `mov %rsp,%rdi; call exc_int3`;
  - optprobe: the detour buffer does `mov %rsp,%rsi; call optimized_callback`;
  - ftrace:   the ftrace trampoline does `lea (%rsp),%rcx; call kprobe_ftrace_handler`.
So in the frame whose PC is the return address of that call, %rsp is the pt_regs
(checked on 6.1 and 6.12: the handlers' `regs` argument equals it). Its caller is
the probed function, with the registers in pt_regs; regs->ip is addr+1 while the
handlers run (past the int3), so addr is shown.

Return probes. A kretprobe's rethook replaces the return address with
arch_rethook_trampoline and keeps the real one in a rethook_node on the task
(`task->rethooks`: ret_addr, and frame = the address of the return slot). For a
frame of a function with such a node, the caller is ret_addr with %rsp = frame+8;
callee-saved registers come from the pushes the prologue made by that PC.

`set kp-unwind off` turns both off (to see gdb's own, broken, backtrace).
"""
from __future__ import annotations

import struct

import gdb
import gdb.unwinder

from gdb_kprobe import arch, options
from gdb_kprobe.analysis import prologue
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kprobes, sched
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import (cache, context, disasm, frame_labels, guards, layouts, memory,
                               symbols)

__all__ = ["KprobeUnwinder", "register", "set_enabled", "enabled", "fits"]

ENTRY_CALLEES = {"exc_int3": "int3", "optimized_callback": "optprobe",
                 "kprobe_ftrace_handler": "ftrace", "arch_ftrace_ops_list_func": "ftrace"}


class FrameId:
    """gdb 13 wants gdb.Value attributes (gdb 14+ also has gdb.unwinder.FrameId)."""

    def __init__(self, pending, sp: int, pc: int) -> None:
        self.sp = _value(pending, "rsp", sp)
        self.pc = _value(pending, "rip", pc)


def _reg(pending, name: str) -> int:
    return arch.u64(int(pending.read_register(name)))


def _entry_kind(pc: int) -> str | None:
    """Is pc the return address of an entry path's call into C code?"""
    table = symbols.kernel()
    found = table.lookup(pc) if symbols.in_kernel_image(pc) else None
    if found and found[0] == "asm_exc_int3":
        return "int3"
    if found and found[0].startswith("ftrace_regs_caller"):
        return "ftrace"
    if found is not None:
        return None
    try:
        before = memory.read(pc - 5, 5)           # dynamically allocated code: look at the call
    except KpError:
        return None
    if before[0] != arch.CALL32:
        return None
    callee = arch.u64(pc + struct.unpack("<i", before[1:])[0])
    name = table.lookup(callee)
    return ENTRY_CALLEES.get(name[0]) if name and name[1] == 0 else None


def _pt_regs(address: int) -> dict[str, int] | None:
    layout = layouts.layout("struct pt_regs")
    try:
        view = layout.view(memory.read(address, layout.size), address)
    except KpError:
        return None
    if view.int("cs") != arch.KERNEL_CS or not arch.is_canonical(view.int("ip")):
        return None
    return {name: view.int(name) for name in arch.UNWIND_REGS}


@cache.cache_until("cont", "memory_changed", "objfile")
def _probe_addresses() -> frozenset[int]:
    """Registered probe addresses, read once per stop (for regs->ip - 1)."""
    table = kprobes.read_table()
    return frozenset(p.addr for b in table.buckets for p in b.probes)


class KprobeUnwinder(gdb.unwinder.Unwinder):
    def __init__(self) -> None:
        super().__init__("gdb-kprobe")

    def __call__(self, pending):
        if not fits(pending.architecture().name()):
            return None                # its register names and entry decoding are x86-64's
        try:
            return self._unwind(pending)
        except (KpError, gdb.error, gdb.MemoryError, ValueError, KeyError) as exc:
            if options.current.debug:
                gdb.write(f"kp-unwind: frame {pending.level()}: {type(exc).__name__}: {exc}\n")
            return None                # let gdb's own unwinders try

    def _unwind(self, pending):
        pc = _reg(pending, "rip")
        sp = _reg(pending, "rsp")
        kind = _entry_kind(pc)
        if kind is not None:
            return self._from_pt_regs(pending, pc, sp, kind)
        return self._from_rethook(pending, pc, sp)

    def _from_pt_regs(self, pending, pc: int, sp: int, kind: str):
        regs = _pt_regs(sp)
        if regs is None:
            return None
        probed = regs["ip"]
        if probed - 1 in _probe_addresses():
            probed -= 1                # handlers run with regs->ip just past the int3
        info = pending.create_unwind_info(FrameId(pending, sp, pc))
        # rip is regs->ip as the kernel has it (addr+1 while handlers run): gdb looks up
        # an outer frame's unwind rules at pc-1, which is then the probed instruction.
        for name, register in arch.UNWIND_REGS.items():
            info.add_saved_register(register, _value(pending, register, regs[name]))
        where = Symbolizer().lookup(probed)
        frame_labels.put(sp, pc, f"<kprobe: {kind} on {where or hex(probed)}>")
        frame_labels.put(regs["sp"], regs["ip"], f"[probed at {where or hex(probed)}]")
        return info

    def _from_rethook(self, pending, pc: int, sp: int):
        trampoline = symbols.kernel().address_of("arch_rethook_trampoline")
        if trampoline is None or not _on_stack(sp, trampoline):
            return None                # cheap test first: most frames have no kretprobe
        node = _rethook_node_for(pc, sp, trampoline)
        if node is None:
            return None
        frame_slot, ret_addr = node
        cfa = frame_slot + 8
        info = pending.create_unwind_info(FrameId(pending, cfa, _function_start(pc)))
        info.add_saved_register("rip", _value(pending, "rip", ret_addr))
        info.add_saved_register("rsp", _value(pending, "rsp", cfa))
        saved = _saved_by_prologue(pc, cfa)
        for register in arch.CALLEE_SAVED:
            value = saved.get(register)
            if value is None:
                value = _reg(pending, register)
            info.add_saved_register(register, _value(pending, register, value))
        frame_labels.put(cfa, ret_addr, "<kretprobe: return address restored from rethook "
                                        "(was arch_rethook_trampoline)>")
        return info


STACK_SCAN = 1024                      # more than any kernel function's frame


def _on_stack(sp: int, trampoline: int) -> bool:
    """Is the trampoline's address in the stack just above sp (where this frame's return
    slot is)? One read; saves the task and rethook walk on ordinary frames."""
    try:
        data = memory.read(sp, STACK_SCAN)
    except KpError:
        return True                    # cannot tell: take the slow, exact path
    return trampoline.to_bytes(8, "little") in data


def _value(pending, register: str, value: int) -> gdb.Value:
    return gdb.Value(value).cast(pending.read_register(register).type)


def _function_start(pc: int) -> int:
    found = Symbolizer().lookup(pc)
    return pc - found.offset if found else pc


def _rethook_node_for(pc: int, sp: int, trampoline: int) -> tuple[int, int] | None:
    """(frame slot, ret_addr) of the current task's rethook node for this frame."""
    task = sched.current_task(context.current_cpu())
    if not task:
        return None
    task_layout = layouts.layout("struct task_struct")
    # task_struct.rethooks: 54ecbe6f1ed5 "rethook: Add a generic return hook" (v5.18),
    # with CONFIG_RETHOOK; without it kretprobes keep no per-task list we can read
    if not task_layout.has_field("rethooks"):
        return None
    node_layout = layouts.layout("struct rethook_node")
    llist_offset = node_layout.offset("llist")
    first = memory.read_u64(task + task_layout.offset("rethooks"))
    function = _function_start(pc)
    best = None
    seen = 0
    node = first
    while node and seen < 256:
        seen += 1
        address = node - llist_offset
        view = node_layout.view(memory.read(address, node_layout.size), address)
        frame_slot = view.int("frame")
        if frame_slot >= sp and memory.read_u64(frame_slot) == trampoline \
                and _node_function(view) == function:
            if best is None or frame_slot < best[0]:
                best = (frame_slot, view.int("ret_addr"))
        node = view.ptr("llist.next")
    return best


def _node_function(view: layouts.View) -> int | None:
    """The function a rethook node's kretprobe is on (rethook->data is the kretprobe)."""
    rethook = view.ptr("rethook")
    if not rethook:
        return None
    data = memory.read_u64(rethook + layouts.layout("struct rethook").offset("data"))
    kretprobe = layouts.layout("struct kretprobe")
    addr = memory.read_u64(data + kretprobe.offset("kp.addr"))
    return _function_start(addr)


# Pushes made by each function's prologue, by PC offset. Disassembling needs gdb
# commands, which must not run inside an unwinder (gdb is in the middle of building
# frames), so a function met during unwinding is analysed right before the next prompt
# and the frames are rebuilt; until then its callee-saved registers pass through.
_pushes: dict[int, list[tuple[int, str]]] = {}       # function start → [(insn end, register)]
_wanted: set[int] = set()
cache.register(_pushes.clear, *cache.OBJFILE)


def _saved_by_prologue(pc: int, cfa: int) -> dict[str, int]:
    """Callee-saved registers the function pushed before pc: the i-th push is at
    CFA-16-8i (the return address is at CFA-8)."""
    start = _function_start(pc)
    pushes = _pushes.get(start)
    if pushes is None:
        _wanted.add(start)
        return {}
    saved = {}
    done = [register for end, register in pushes if end <= pc]
    for index, register in enumerate(done):
        if register in arch.CALLEE_SAVED:
            saved[register] = memory.read_u64(cfa - 16 - 8 * index)
    return saved


def _analyse_wanted(*_args) -> None:
    if not _wanted:
        return
    for start in list(_wanted):
        _wanted.discard(start)
        try:
            found = Symbolizer().lookup(start)
            end = start + (found.size if found and found.size else 0x200)
            insns = disasm.original(start, count=None, end=end) or disasm.live(start, None, end)
            facts, _ = prologue.analyse(insns, end)
            pushed = []
            remaining = list(facts.pushes)
            for insn in insns:
                asm = " ".join(insn.asm.split())
                if remaining and asm in (f"push %{remaining[0]}", f"pushq %{remaining[0]}"):
                    pushed.append((insn.address + len(insn.raw), remaining.pop(0)))
            _pushes[start] = pushed
        except (KpError, gdb.error):
            _pushes[start] = []
    _rebuild_frames()


def _rebuild_frames() -> None:
    """Drop gdb's frames so they are built again by the unwinders, keeping the frame the
    user selected (`frame 6`): gdb alone would fall back to frame #0."""
    try:
        level = gdb.selected_frame().level()
    except (gdb.error, AttributeError):          # no frame; Frame.level() is gdb 11+
        level = 0
    gdb.invalidate_cached_frames()
    if level <= 0:
        return
    try:
        frame = gdb.newest_frame()
        for _ in range(level):
            frame = frame.older() if frame is not None else None
        if frame is not None:
            frame.select()
    except gdb.error:
        pass


_unwinder: KprobeUnwinder | None = None


def register() -> None:
    """Register the unwinder, and the prompt hook that analyses prologues it asked for."""
    global _unwinder
    if _unwinder is None:
        _unwinder = KprobeUnwinder()
        gdb.unwinder.register_unwinder(None, _unwinder, replace=True)
        gdb.events.before_prompt.connect(_analyse_wanted)


def set_enabled(enabled: bool) -> None:
    if _unwinder is not None:
        _unwinder.enabled = enabled
        frame_labels.clear()
        _rebuild_frames()


def enabled() -> bool:
    return _unwinder is not None and _unwinder.enabled


def fits(architecture: str) -> bool:
    """Does this unwinder know frames of `architecture`? Only where the arch seam in use is
    the frame's: elsewhere gdb's own unwinders alone build the frames (bt stays gdb's)."""
    return guards.arch_seam_fits(architecture)
