"""Tasks and the scheduler's clock: the task running on a CPU, its name, the guest's time.

Mirrors what `current` is on x86-64: the per-CPU `current_task`, or `pcpu_hot.current_task`
from v6.2 (e57ef2ed97c1 "x86: Put hot per CPU variables into a struct") to v6.14 (v6.15 moved
it back: a1e4cc0155ad "x86/percpu: Move current_task to percpu hot section"). The symbols
tell which this kernel has.
"""
from __future__ import annotations

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import percpu
from gdb_kprobe.target import context, layouts, memory, symbols

__all__ = ["current_task", "task_name", "current_task_name", "guest_clock_ns"]


def current_task(cpu: int) -> int | None:
    """The `struct task_struct *` running on `cpu`; None when the kernel has neither form."""
    table = symbols.kernel()
    offsets = percpu.offsets()
    if table.address_of("pcpu_hot") is not None:
        hot = layouts.layout("struct pcpu_hot")
        slot = table.address_of("pcpu_hot") + hot.offset("current_task") + offsets[cpu]
    elif table.address_of("current_task") is not None:
        slot = table.address_of("current_task") + offsets[cpu]
    elif table.address_of("__entry_task") is not None:
        # arm64 keeps `current` in SP_EL0, which QEMU's gdbstub does not give; __switch_to()
        # stores the same task in this per-CPU variable (entry_task_switch())
        slot = arch.u64(table.address_of("__entry_task") + offsets[cpu])
    else:
        return None
    return memory.read_u64(slot)


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
