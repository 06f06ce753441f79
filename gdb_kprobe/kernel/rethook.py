"""kretprobe instances: how many of `maxactive` are in use right now.

The pool changed shape between kernels: 6.1 keeps free rethook nodes on a
`freelist_head` (a singly linked list; 54ecbe6f1ed5 "rethook: Add a generic return hook",
v5.18), 6.7+ in an `objpool_head` with per-CPU rings (free = tail - head on each CPU;
4bbd93455659 "kprobes: kretprobe scalability improvement" and b4edb8d2d464 "lib: objpool
added: ring-array based lockless MPMC", v6.7). Both are found through DWARF.
"""
from __future__ import annotations

import dataclasses
import struct

from gdb_kprobe.kernel import lists, percpu
from gdb_kprobe.target import layouts, memory

__all__ = ["Instances", "count"]


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


def count(rethook_address: int, maxactive: int) -> Instances:
    """In-use and free instances of a kretprobe's `struct rethook` (kretprobe.rh)."""
    if not rethook_address:
        return Instances(None, None, "none (no rethook)")
    rethook = layouts.layout("struct rethook")
    view = rethook.view(memory.read(rethook_address, rethook.size), rethook_address)
    if rethook.has_field("pool.cpu_slots"):
        return _objpool(view, rethook)
    if rethook.has_field("pool.head"):
        return _freelist(view, maxactive)
    return Instances(maxactive, None, "unknown pool layout")


def _freelist(view: layouts.View, maxactive: int) -> Instances:
    node = layouts.layout("struct freelist_node")
    next_offset = node.offset("next")

    def fetch(address: int) -> tuple[int, int]:
        return address, struct.unpack("<Q", memory.read(address + next_offset, 8))[0]

    walk = lists.walk(view.ptr("pool.head"), 0, fetch, "rethook freelist", limit=1 << 16)
    return Instances(maxactive, len(walk.items), "freelist", walk.damage)


def _objpool(view: layouts.View, rethook: layouts.Layout) -> Instances:
    total = view.int("pool.nr_objs")
    # objpool_head.nr_possible_cpus: 78d0b16127da "objpool: cache nr_possible_cpus() and
    # avoid caching nr_cpu_ids" (v6.10); v6.7 to v6.9 call it nr_cpus
    cpus = view.int("pool.nr_possible_cpus" if rethook.has_field("pool.nr_possible_cpus")
                    else "pool.nr_cpus")
    slots_array = view.ptr("pool.cpu_slots")
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
