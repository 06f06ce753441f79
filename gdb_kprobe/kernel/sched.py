"""Tasks and the scheduler's clock: the task running on a CPU, its name, the guest's time.

Where `current` lives is the architecture's (arch.CURRENT_TASK_REGISTER, CURRENT_TASK_PERCPU):
x86-64's per-CPU current_task (or pcpu_hot.current_task), arm64's SP_EL0 while the CPU is in
the kernel and its per-CPU __entry_task otherwise.
"""
from __future__ import annotations

from typing import Callable

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import percpu
from gdb_kprobe.target import context, layouts, memory, symbols

__all__ = ["current_task", "task_name", "current_task_name", "guest_clock_ns"]


def current_task(cpu: int, read_register: Callable[[str], int] | None = None) -> int | None:
    """The `struct task_struct *` running on `cpu`; None when the kernel has no form of
    `current` this architecture knows. `read_register` reads a register of the selected
    CPU (default: its newest frame's; an unwinder passes its pending frame's): where the
    architecture keeps `current` in a register, the selected CPU's is taken from there
    while it is in the kernel."""
    register = arch.CURRENT_TASK_REGISTER
    if register is not None and cpu == context.current_cpu():
        task = _from_register(register, read_register)
        if task is not None:
            return task
    table = symbols.kernel()
    for symbol, struct, member in arch.CURRENT_TASK_PERCPU:
        base = table.address_of(symbol)
        if base is None:
            continue
        if struct is not None and member is not None:
            base += layouts.layout(struct).offset(member)
        return memory.read_u64(arch.u64(base + percpu.offsets()[cpu]))
    return None


def _from_register(register: str, read_register: Callable[[str], int] | None) -> int | None:
    """The register's value when the selected CPU is in the kernel (at EL0 arm64's SP_EL0 is
    the user stack pointer), else None."""
    if read_register is None:
        def read_register(name: str) -> int:
            return int(gdb.newest_frame().read_register(name))
    try:
        if arch.in_user_mode(arch.u64(read_register(arch.MODE_REGISTER))):
            return None
        return arch.u64(read_register(register))
    except (gdb.error, ValueError):
        return None         # a stub without the register (no system-register feature)


def task_name(task: int) -> str:
    """`comm[pid]` of a `struct task_struct`, its comm escaped: a task names itself
    (prctl PR_SET_NAME), so it may put anything there."""
    task_layout = layouts.layout("struct task_struct")
    comm = layouts.printable(memory.read_cstring(task + task_layout.offset("comm"), 16))
    pid = task_layout.field("pid")
    number = int.from_bytes(memory.read(task + pid.offset, 4), "little", signed=True)
    return f"{comm}[{number}]"


def current_task_name() -> str | None:
    """`comm[pid]` of the task on the selected CPU, None when it cannot be read."""
    try:
        task = current_task(context.current_cpu())
        return task_name(task) if task is not None else None
    except (KpError, gdb.error, IndexError):
        return None


def guest_clock_ns() -> int | None:
    """The guest's own clock, read from kernel memory: the newest scheduler timestamp of
    any CPU (max of per-CPU runqueues' rq->clock, sched_clock ns since boot). It is
    updated at every scheduler event, so it is fresh even on an idle NOHZ guest where
    timekeeping (tk_core) may be a second behind; host time spent in gdb never counts."""
    try:
        rq = layouts.layout("struct rq")
        offset = rq.offset("clock")
        return max(memory.read_u64(base + offset) for base in percpu.addresses("runqueues"))
    except (KpError, gdb.error, ValueError):
        return None
