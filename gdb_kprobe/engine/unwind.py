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
(`task->rethooks`: ret_addr, and frame = the address of the return slot). gdb's own
unwinder then gives the hijacked function a caller at arch_rethook_trampoline; we meet
that frame (its PC is the trampoline), look up the node whose return slot it came from,
and remember the slot with the caller's registers gdb restored (exact: from the CFI).
The frames are then built again, and the hijacked function's frame gets the real
caller (ret_addr) instead of the trampoline (`settle()`; the frame filter, finish,
pwndbg's pane and the next prompt call it).

Cost. gdb asks the unwinders about every frame of every stop (stepi builds two or
three), so an ordinary frame costs one range test of its PC: the kernel image's
entry code and the trampoline are known from the ELF symbols at the first stop; code
outside the image (modules, and the ftrace trampolines and optprobe detour buffers
the kernel allocates at run time) is looked at once per PC and stop, and not at all
when gdb has symbols for it (a module loaded with kp-modules --load).

`set kp-unwind off` turns both off (to see gdb's own, broken, backtrace).
"""
from __future__ import annotations

import gdb
import gdb.unwinder

from gdb_kprobe import arch, options
from gdb_kprobe.engine import code_map, unwind_cfi
from gdb_kprobe.engine.unwind_cfi import FrameId, value as _value
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kprobes, lists, sched
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import cache, context, frame_labels, guards, layouts, memory, symbols

__all__ = ["KprobeUnwinder", "register", "set_enabled", "enabled", "settle", "rebuild_if_met",
           "fits"]


_MASK = arch.ADDRESS_MASK


def _reg(pending, name: str) -> int:
    return arch.u64(int(pending.read_register(name)))


# What this stop taught us; frames are built before the stop event and until the target
# runs again, so this lives as the frame labels do (cache.RESUME).
_hijacked: dict[int, tuple[int, int, dict[str, int]]] = {}
# ^ return slot → (function start, ret_addr, the caller's callee-saved registers)
_state = {"rebuild": False}


def _forget_stop() -> None:
    _hijacked.clear()
    unwind_cfi.stopped_at.clear()
    _state["rebuild"] = False


cache.register(_forget_stop, *cache.RESUME)


def _pt_regs(address: int) -> dict[str, int] | None:
    layout = layouts.layout("struct pt_regs")
    try:
        view = layout.view(memory.read(address, layout.size), address)
    except KpError:
        return None
    if not arch.saved_in_kernel(view):
        return None
    return arch.pt_regs_values(view)


@cache.cache_until("cont", "memory_changed", "objfile")
def _probe_addresses() -> frozenset[int]:
    """Registered probe addresses, read once per stop (for regs->ip - 1)."""
    table = kprobes.read_table()
    return frozenset(p.addr for b in table.buckets for p in b.probes)


class KprobeUnwinder(gdb.unwinder.Unwinder):
    def __init__(self) -> None:
        super().__init__("gdb-kprobe")
        self._architecture = None      # the last frame's gdb.Architecture ...
        self._pc_register = None       # ... and how to read its PC (None: not ours)
        self._own_cfi = False          # unwind ordinary kernel frames too (signed returns)

    def __call__(self, pending):
        # gdb calls this for every frame it builds, at every stop (stepi builds two or
        # three): the test for ordinary kernel code is inline, one register read and a
        # range test, with the architecture's answer and register kept per architecture
        try:
            architecture = pending.architecture()
            if architecture is not self._architecture:
                self._learn(architecture)
            if self._pc_register is None:
                return None            # its register names and entry decoding are x86-64's
            pc = int(pending.read_register(self._pc_register)) & _MASK
            codes = code_map.kernel_code()
            if (codes.image[0] <= pc < codes.image[1] and not _hijacked
                    and pc != codes.trampoline and not codes.entry_kind(pc)):
                # an ordinary frame: nothing read, nothing looked up (gdb's unwinder does
                # it), unless gdb cannot strip signed return addresses (arm64)
                return unwind_cfi.unwind(pending, pc, codes) if self._own_cfi else None
            return self._unwind(pending, pc, codes)
        except (KpError, gdb.error, gdb.MemoryError, ValueError, KeyError) as exc:
            if options.current.debug:
                gdb.write(f"kp-unwind: frame {pending.level()}: {type(exc).__name__}: {exc}\n")
            return None                # let gdb's own unwinders try

    def _learn(self, architecture) -> None:
        """Does this unwinder know frames of `architecture`, and by which register
        descriptor does it read their PC (gdb 12+: no lookup by name per frame)?"""
        self._architecture = architecture
        self._pc_register = None
        self._own_cfi = False
        if fits(architecture.name()):
            self._own_cfi = arch.SIGNED_RETURN_ADDRESSES
            registers = getattr(architecture, "registers", None)
            found = registers().find(arch.PROGRAM_COUNTER) if registers else None
            self._pc_register = found if found is not None else arch.PROGRAM_COUNTER

    def _unwind(self, pending, pc: int, codes: code_map.CodeMap):
        if codes.image[0] <= pc < codes.image[1]:
            kind = codes.entry_kind(pc)
            if kind is not None:
                return self._from_pt_regs(pending, pc, _reg(pending, arch.STACK_POINTER), kind)
            if pc == codes.trampoline:
                return self._from_trampoline(pending, pc, _reg(pending, arch.STACK_POINTER))
            if not _hijacked:
                return None
            return self._from_rethook(pending, pc, _reg(pending, arch.STACK_POINTER))
        kind = code_map.outside_entry_kind(pc)
        if kind is not None:
            return self._from_pt_regs(pending, pc, _reg(pending, arch.STACK_POINTER), kind)
        if _hijacked:
            return self._from_rethook(pending, pc, _reg(pending, arch.STACK_POINTER))
        return None

    def _from_pt_regs(self, pending, pc: int, sp: int, kind: str):
        regs = _pt_regs(sp)
        if regs is None:
            return None
        info = pending.create_unwind_info(FrameId(pending, sp, pc))
        # the pc is regs->ip as the kernel has it (x86: addr+1 while handlers run)
        for name, register in arch.UNWIND_REGS.items():
            info.add_saved_register(register, _value(pending, register, regs[name]))
        unwind_cfi.label_entry(sp, pc, kind, regs, _probe_addresses(),
                               code_map.kernel_code().trampoline)
        return info

    def _from_trampoline(self, pending, pc: int, sp: int):
        """A frame at arch_rethook_trampoline: gdb unwound a function whose return address
        a kretprobe took. Its caller is the node's ret_addr; remember the slot so that
        the frames built again give that function the real caller directly."""
        slot = sp - 8                  # the callee's `ret` popped the slot
        node = _rethook_node(slot, pc)
        if node is None:
            return None
        function, ret_addr = node
        saved = {register: _reg(pending, register) for register in arch.CALLEE_SAVED}
        if slot not in _hijacked:
            _hijacked[slot] = (function, ret_addr, saved)
            _state["rebuild"] = True
        frame_labels.put(sp, pc, "<kretprobe: returns to "
                                 f"{Symbolizer().lookup(ret_addr) or hex(ret_addr)}>")
        return _caller_is(pending, FrameId(pending, sp, pc), ret_addr, sp, saved)

    def _from_rethook(self, pending, pc: int, sp: int):
        """A frame of a function whose return slot a kretprobe took (met at this stop)."""
        function = _function_start(pc)
        slots = [slot for slot, (start, _ret, _regs) in _hijacked.items()
                 if start == function and slot >= sp]
        if not slots:
            return None
        slot = min(slots)
        _start, ret_addr, saved = _hijacked[slot]
        cfa = slot + 8
        frame_labels.put(cfa, ret_addr, "<kretprobe: return address restored from rethook "
                                        "(was arch_rethook_trampoline)>")
        return _caller_is(pending, FrameId(pending, cfa, function), ret_addr, cfa, saved)


def _caller_is(pending, frame_id: FrameId, ret_addr: int, sp: int, saved: dict[str, int]):
    """Unwind info whose caller runs at `ret_addr` with `sp` and the callee-saved `saved`."""
    info = pending.create_unwind_info(frame_id)
    info.add_saved_register("rip", _value(pending, "rip", ret_addr))
    info.add_saved_register("rsp", _value(pending, "rsp", sp))
    for register, value in saved.items():
        info.add_saved_register(register, _value(pending, register, value))
    return info


def _function_start(pc: int) -> int:
    found = Symbolizer().lookup(pc)
    return pc - found.offset if found else pc


def _rethook_node(slot: int, trampoline: int) -> tuple[int, int] | None:
    """(function start, ret_addr) of the current task's rethook node for this return slot."""
    task = sched.current_task(context.current_cpu())
    if not task:
        return None
    task_layout = layouts.layout("struct task_struct")
    # task_struct.rethooks: 54ecbe6f1ed5 "rethook: Add a generic return hook" (v5.18),
    # with CONFIG_RETHOOK; without it kretprobes keep no per-task list we can read
    if not task_layout.has_field("rethooks"):
        return None
    if memory.read_u64(slot) != trampoline:
        return None
    first = memory.read_u64(task + task_layout.offset("rethooks"))
    for view in lists.llist_views(first, layouts.layout("struct rethook_node"), "llist"):
        if view.int("frame") == slot:
            function = _node_function(view)
            return (function, view.int("ret_addr")) if function is not None else None
    return None


def _node_function(view: layouts.View) -> int | None:
    """The function a rethook node's kretprobe is on (rethook->data is the kretprobe)."""
    rethook = view.ptr("rethook")
    if not rethook:
        return None
    data = memory.read_u64(rethook + layouts.layout("struct rethook").offset("data"))
    kretprobe = layouts.layout("struct kretprobe")
    addr = memory.read_u64(data + kretprobe.offset("kp.addr"))
    return _function_start(addr)


def settle(depth: int | None = None) -> None:
    """Build the frames (all of them, or the `depth` newest) and, when that met a rethook
    trampoline, build them again so that the hijacked frame gets its real caller. Call it
    before showing frames beyond the newest (bt, finish, pwndbg's pane). Without
    kretprobes on the stack this is the unwinding gdb does anyway, nothing more."""
    if not enabled():
        return
    for _ in range(2):
        _walk(depth)
        if not _state["rebuild"]:
            return
        _state["rebuild"] = False
        _rebuild_frames()


def rebuild_if_met() -> bool:
    """Did the frames built so far meet a rethook trampoline? Then drop them, so that
    they are built again with the hijacked function's real caller (True). For a caller
    that builds only the frames it shows (pwndbg's backtrace pane): settle() would build
    every frame of the stack first, each older one a few stack reads more."""
    if not enabled() or not _state["rebuild"]:
        return False
    _state["rebuild"] = False
    _rebuild_frames()
    return True


def _walk(depth: int | None) -> None:
    try:
        frame = gdb.newest_frame()
        count = 0
        while frame is not None and count < (depth if depth is not None else 256):
            frame = frame.older()
            count += 1
    except gdb.error:                  # no frames (not attached), or the stack ends badly
        pass


def _on_prompt(*_args) -> None:
    """Frames met a trampoline in a command that did not settle() (e.g. `up`): the next
    command sees them rebuilt. Costs a flag test otherwise."""
    if _state["rebuild"]:
        _state["rebuild"] = False
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
    """Register the unwinder, and the prompt hook that rebuilds frames when asked to
    (through the cache registry: one before_prompt listener for the whole plugin)."""
    global _unwinder
    if _unwinder is None:
        _unwinder = KprobeUnwinder()
        gdb.unwinder.register_unwinder(None, _unwinder, replace=True)
        cache.register(_on_prompt, "before_prompt")


def set_enabled(enabled: bool) -> None:
    if _unwinder is not None:
        _unwinder.enabled = enabled
        frame_labels.clear()
        _forget_stop()
        _rebuild_frames()


def enabled() -> bool:
    return _unwinder is not None and _unwinder.enabled


def fits(architecture: str) -> bool:
    """Does this unwinder know frames of `architecture`? Only where the arch seam in use is
    the frame's: elsewhere gdb's own unwinders alone build the frames (bt stays gdb's)."""
    return guards.arch_seam_fits(architecture)
