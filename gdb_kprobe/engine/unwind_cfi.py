"""The unwinder for ordinary kernel frames where gdb's own gives wrong callers: arm64's
return addresses are signed (arch.SIGNED_RETURN_ADDRESSES), and QEMU 7.2's gdbstub gives gdb
no pauth_cmask register to strip them with, so gdb's DWARF unwinder puts the caller at a
signed, unreadable pc and the backtrace ends there. Here each frame in the kernel image is
unwound from the vmlinux's CFI (target/cfi.py: the whole row), its return address stripped
(arch.code_address). A return address a kretprobe took (arm64 6.1 and 6.12 have no rethook:
__kretprobe_trampoline, instances on task->kretprobe_instances) becomes the real caller in the
same step. Module code and asm without CFI are left to gdb's unwinders.
"""
from __future__ import annotations

import gdb

from gdb_kprobe import arch
from gdb_kprobe.engine import code_map
from gdb_kprobe.kernel import lists, owners, sched
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.target import cache, cfi, context, frame_labels, layouts, memory

__all__ = ["unwind", "stopped_at", "FrameId", "value", "label_entry"]

# (sp, pc) of frames whose pc is where they stopped, not a return address (a probed
# function's, from a pt_regs): their CFI row is the one at pc, not at pc - 1. The
# unwinder fills it and clears it when the target runs (engine/unwind.py).
stopped_at: set[tuple[int, int]] = set()


def _register(pending, name: str) -> int:
    return arch.u64(int(pending.read_register(name)))


def value(pending, register: str, value: int) -> gdb.Value:
    return gdb.Value(value).cast(pending.read_register(register).type)


class FrameId:
    """gdb 13 wants gdb.Value attributes (gdb 14+ also has gdb.unwinder.FrameId)."""

    def __init__(self, pending, sp: int, pc: int) -> None:
        self.sp = value(pending, arch.STACK_POINTER, sp)
        self.pc = value(pending, arch.PROGRAM_COUNTER, pc)


def label_entry(sp: int, pc: int, kind: str, regs: dict[str, int], probes: frozenset[int],
                trampoline: int | None) -> None:
    """Label an entry frame whose pt_regs gives its caller (engine/unwind.py), and that
    caller: the probed frame of a kprobe's trap; the real return address where a kretprobe
    trampoline saved the pt_regs (the kernel sets its pc to the return address before the
    handler runs: arm64 6.1's __kretprobe_trampoline calls the handler, 6.12's traps with a
    BRK, where the lr that reached it is the trampoline); or an exception's interrupted code."""
    probed = regs[arch.PT_REGS_PC]
    if probed - arch.TRAP_PC_ADVANCE in probes:
        probed -= arch.TRAP_PC_ADVANCE   # x86: handlers run with regs->ip past the int3
    where = Symbolizer().lookup(probed) or hex(probed)
    caller = (regs[arch.PT_REGS_SP], regs[arch.PT_REGS_PC])
    if probed in probes:
        stopped_at.add(caller)
        frame_labels.put(sp, pc, f"<kprobe: {kind} on {where}>")
        frame_labels.put(*caller, f"[probed at {where}]")
    elif kind == "kretprobe" or arch.code_address(
            regs.get(arch.RETURN_ADDRESS_REGISTER, 0)) == trampoline:
        # a return address (its CFI row is at pc - 1); the lr of a probed frame at its
        # function's entry may be the trampoline too, which is why probes come first
        frame_labels.put(sp, pc, f"<kretprobe: returns to {where}>")
    else:                            # the same entry, not a kprobe's trap (arm64: a fault)
        stopped_at.add(caller)
        frame_labels.put(sp, pc, f"<exception entry: pt_regs from {where}>")


def unwind(pending, pc: int, codes: code_map.CodeMap):
    """An ordinary kernel frame unwound from the vmlinux's CFI, with the return address's
    PAC stripped (arch.SIGNED_RETURN_ADDRESSES: gdb's own unwinder would give the caller
    a signed pc). A return address a kretprobe took (the trampoline) is replaced by the
    real one, from the task's kretprobe_instance of this frame. None: no CFI for pc
    (asm code), gdb's unwinders try."""
    sp = _register(pending, arch.STACK_POINTER)
    stopped = pending.level() == 0 or (sp, pc) in stopped_at
    rules = _rules_at(pc) if stopped else _rules_at(pc - 1)
    if rules is None:
        return None
    names = arch.DWARF_REGS
    if rules.cfa_register >= len(names):
        return None
    cfa = arch.u64(_register(pending, names[rules.cfa_register]) + rules.cfa_offset)
    saved = {names[number]: memory.read_u64(cfa + offset)
             for number, offset in rules.saved.items() if number < len(names)}
    for register in (*arch.CALLEE_SAVED, arch.RETURN_ADDRESS_REGISTER):
        if register not in saved:
            saved[register] = _register(pending, register)
    ret_addr = arch.code_address(saved[arch.RETURN_ADDRESS_REGISTER], _va_bits())
    if ret_addr and ret_addr == codes.trampoline:
        restored = _kretprobe_instance_ret(pending, saved.get(arch.FRAME_POINTER_REGISTER, 0))
        if restored:
            ret_addr = arch.code_address(restored, _va_bits())
            name = Symbolizer().lookup(codes.trampoline)
            frame_labels.put(cfa, ret_addr, "<kretprobe: return address restored from "
                             f"kretprobe_instance (was {name.symbol if name else 'trampoline'})>")
    info = pending.create_unwind_info(FrameId(pending, cfa, rules.function))
    info.add_saved_register(arch.PROGRAM_COUNTER, value(pending, arch.PROGRAM_COUNTER, ret_addr))
    info.add_saved_register(arch.STACK_POINTER, value(pending, arch.STACK_POINTER, cfa))
    for register, raw in saved.items():
        if register != arch.STACK_POINTER:
            info.add_saved_register(register, value(pending, register, raw))
    return info


# pc → its CFI row, for the symbol file (a stop unwinds the same return addresses again)
_rows: dict[int, object] = {}
cache.register(_rows.clear, *cache.OBJFILE, "relocate")


def _rules_at(pc: int):
    if pc not in _rows:
        _rows[pc] = cfi.frame_rules_at(pc, arch.ENTRY_PADDING,
                                       arch.DWARF_REGS.index(arch.STACK_POINTER))
    return _rows[pc]


def _va_bits() -> int:
    return arch.address_bits(owners.vmcoreinfo())


def _kretprobe_instance_ret(pending, frame_pointer: int) -> int | None:
    """ret_addr of the current task's kretprobe_instance made at the entry of the function
    whose caller's frame pointer is `frame_pointer` (arm64 arch_prepare_kretprobe(): ri->fp
    = regs->regs[29]; kretprobe_find_ret_addr() matches the same way). Kernels with
    kretprobes on rethook keep none (task->rethooks instead: _rethook_node)."""
    task = sched.current_task(context.current_cpu(),
                              lambda name: int(pending.read_register(name)))
    task_layout = layouts.layout("struct task_struct")
    if not task or not frame_pointer or not task_layout.has_field("kretprobe_instances"):
        return None
    first = memory.read_u64(task + task_layout.offset("kretprobe_instances"))
    for view in lists.llist_views(first, layouts.layout("struct kretprobe_instance"), "llist"):
        if view.int("fp") == frame_pointer:
            return view.int("ret_addr")
    return None
