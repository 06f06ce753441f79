"""kretprobe instances: how many of `maxactive` are in use right now, and which tasks hold
them.

The pool changed shape between kernels: 6.1 keeps free rethook nodes on a
`freelist_head` (a singly linked list; 54ecbe6f1ed5 "rethook: Add a generic return hook",
v5.18), 6.7+ in an `objpool_head` with per-CPU rings (free = tail - head on each CPU;
4bbd93455659 "kprobes: kretprobe scalability improvement" and b4edb8d2d464 "lib: objpool
added: ring-array based lockless MPMC", v6.7). Both are found through DWARF.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Callable

from gdb_kprobe.kernel import lists, percpu, sched
from gdb_kprobe.target import layouts, memory, symbols

__all__ = ["Instances", "count", "Holder", "Holders", "holders"]


@dataclasses.dataclass
class Instances:
    total: int | None
    free: int | None
    pool: str                 # which pool implementation was found
    damage: str | None = None

    @property
    def in_use(self) -> int | None:
        if self.total is None or self.free is None:
            return None
        return self.total - self.free


def count(rethook_address: int, maxactive: int, kretprobe_address: int = 0) -> Instances:
    """In-use and free instances of a kretprobe's `struct rethook` (kretprobe.rh), or on a
    kernel without CONFIG_KRETPROBE_ON_RETHOOK (arm64, which has no HAVE_RETHOOK in 6.1 or
    6.12) of the kretprobe's own pool of kretprobe_instance (those in use are on their
    task's kretprobe_instances list: holders())."""
    if not rethook_address:
        return _kretprobe_pool(kretprobe_address, maxactive)
    rethook = layouts.layout("struct rethook")
    view = rethook.view(memory.read(rethook_address, rethook.size), rethook_address)
    if rethook.has_field("pool.cpu_slots"):
        return _objpool(view, rethook, "pool")
    if rethook.has_field("pool.head"):
        return _freelist(view.ptr("pool.head"), maxactive)
    return Instances(maxactive, None, "unknown pool layout")


def _kretprobe_pool(kretprobe_address: int, maxactive: int) -> Instances:
    """The kretprobe's own pool: kretprobe.freelist (a freelist_head, before v6.7), or the
    objpool_head in its kretprobe_holder (kretprobe.rph->pool, 4bbd93455659 "kprobes:
    kretprobe scalability improvement", v6.7)."""
    kretprobe = layouts.layout("struct kretprobe")
    if not kretprobe_address:
        return Instances(None, None, "none (no rethook)")
    view = kretprobe.view(memory.read(kretprobe_address, kretprobe.size), kretprobe_address)
    if kretprobe.has_field("freelist.head"):
        instances = _freelist(view.ptr("freelist.head"), maxactive)
        return dataclasses.replace(instances, pool="kretprobe freelist")
    holder = layouts.try_layout("struct kretprobe_holder")
    if kretprobe.has_field("rph") and holder is not None and holder.has_field("pool.cpu_slots"):
        address = view.ptr("rph")
        if address:
            holder_view = holder.view(memory.read(address, holder.size), address)
            return dataclasses.replace(_objpool(holder_view, holder, "pool"),
                                       pool="kretprobe objpool")
    return Instances(None, None, "none (no rethook)")


def _freelist(head: int, maxactive: int) -> Instances:
    node = layouts.layout("struct freelist_node")
    next_offset = node.offset("next")

    def fetch(address: int) -> tuple[int, int]:
        return address, struct.unpack("<Q", memory.read(address + next_offset, 8))[0]

    walk = lists.walk(head, 0, fetch, "rethook freelist", limit=1 << 16)
    return Instances(maxactive, len(walk.items), "freelist", walk.damage)


def _objpool(view: layouts.View, layout: layouts.Layout, pool: str) -> Instances:
    """Free = tail - head on each CPU's ring of the objpool_head `pool` in `layout`."""
    total = view.int(f"{pool}.nr_objs")
    # objpool_head.nr_possible_cpus: 78d0b16127da "objpool: cache nr_possible_cpus() and
    # avoid caching nr_cpu_ids" (v6.10); v6.7 to v6.9 call it nr_cpus
    cpus = view.int(f"{pool}.nr_possible_cpus" if layout.has_field(f"{pool}.nr_possible_cpus")
                    else f"{pool}.nr_cpus")
    slots_array = view.ptr(f"{pool}.cpu_slots")
    if not slots_array or not 0 < cpus <= 8192:
        return Instances(total, None, "objpool")
    count_cpus = percpu.cpu_count()
    pointers = struct.unpack(f"<{count_cpus}Q", memory.read(slots_array, 8 * count_cpus))
    slot = layouts.layout("struct objpool_slot")
    free = 0
    for pointer in pointers:
        if pointer:
            slot_view = slot.view(memory.read(pointer, slot.size), pointer)
            free += (slot_view.int("tail") - slot_view.int("head")) & 0xFFFFFFFF
    return Instances(total, free, "objpool")


@dataclasses.dataclass
class Holder:
    """One instance in use: the task whose function return the kretprobe took over."""

    task: int                 # struct task_struct *
    name: str                 # its comm[pid]
    ret_addr: int             # where the function really returns to
    frame: int                # rethook_node.frame / kretprobe_instance.fp
    location: object = None   # ret_addr's symbol (a kallsyms Location), when known


@dataclasses.dataclass
class Holders:
    holders: list[Holder]
    where: str                # which per-task list was read
    damage: list[str]


def holders(kretprobe_address: int, rethook_address: int,
            lookup: Callable[[int], object] = lambda _address: None) -> Holders:
    """The instances of one kretprobe in use now, from every task's own list: with rethook
    task->rethooks (rethook_node.rethook is kretprobe.rh), before it (arm64 6.1)
    task->kretprobe_instances (kretprobe_instance.rph->rp is the kretprobe). Each task
    pushes an instance at the function's entry and pops it at its return."""
    task_layout = layouts.layout("struct task_struct")
    if rethook_address and task_layout.has_field("rethooks"):
        node = layouts.layout("struct rethook_node")
        fields, field, where = ("rethook", "ret_addr", "frame"), "rethooks", "task->rethooks"

        def mine(view: layouts.View) -> bool:
            return view.ptr("rethook") == rethook_address
    elif task_layout.has_field("kretprobe_instances"):
        node = layouts.layout("struct kretprobe_instance")
        fields, field, where = ("rph", "ret_addr", "fp"), "kretprobe_instances", \
            "task->kretprobe_instances"
        rp_offset = layouts.layout("struct kretprobe_holder").offset("rp")

        def mine(view: layouts.View) -> bool:
            holder = view.ptr("rph")
            return bool(holder) and memory.read_u64(holder + rp_offset) == kretprobe_address
    else:
        return Holders([], "no per-task list in this kernel", [])
    llist_offset = node.offset("llist")
    head_offset = task_layout.offset(field)
    found: list[Holder] = []
    tasks, damage = _tasks(task_layout)
    for task in tasks:
        def fetch(address: int) -> tuple[layouts.View, int]:
            start = address - llist_offset
            view = node.view(memory.read(start, node.size), start)
            return view, view.ptr("llist.next")
        walk = lists.walk(memory.read_u64(task + head_offset), 0, fetch, f"{where} of task "
                          f"{task:#x}", limit=4096)
        if walk.damage:
            damage.append(walk.damage)
        for view in walk.items:
            if mine(view):
                ret_addr = view.ptr(fields[1])
                found.append(Holder(task, sched.task_name(task), ret_addr, view.ptr(fields[2]),
                                    lookup(ret_addr)))
    return Holders(found, where, damage)


def _tasks(task_layout: layouts.Layout) -> tuple[list[int], list[str]]:
    """Every thread of every process (for_each_process_thread(): init_task.tasks, then each
    process's signal->thread_head through thread_node); the idle tasks are not on them."""
    init_task = symbols.kernel().address_of("init_task")
    if not init_task:
        return [], ["no init_task symbol: tasks not walked"]
    tasks_offset = task_layout.offset("tasks")
    signal_offset = task_layout.offset("signal")
    node_offset = task_layout.offset("thread_node")
    thread_head = layouts.layout("struct signal_struct").offset("thread_head")

    def link(offset: int):
        return lambda node: (node - offset, memory.read_u64(node))

    head = init_task + tasks_offset
    processes = lists.walk(memory.read_u64(head), head, link(tasks_offset), "task list",
                           limit=1 << 16)
    damage = [processes.damage] if processes.damage else []
    threads: list[int] = []
    for process in processes.items:
        head = memory.read_u64(process + signal_offset) + thread_head
        walk = lists.walk(memory.read_u64(head), head, link(node_offset),
                          f"threads of {process:#x}", limit=1 << 16)
        if walk.damage:
            damage.append(walk.damage)
        threads += walk.items
    return threads, damage
