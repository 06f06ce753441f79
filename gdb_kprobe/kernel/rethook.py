"""kretprobe instances: how many of `maxactive` are in use right now.

The pool changed shape between kernels: 6.1 keeps free rethook nodes on a
`freelist_head` (a singly linked list), 6.7+ in an `objpool_head` with per-CPU
rings (free = tail - head on each CPU). Both are found through DWARF.
"""
from __future__ import annotations

import dataclasses
import struct

from gdb_kprobe import target, types
from gdb_kprobe.kernel import lists


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
    if not rethook_address:
        return Instances(None, None, "none (no rethook)")
    rethook = types.layout("struct rethook")
    view = rethook.view(target.read(rethook_address, rethook.size), rethook_address)
    if rethook.has_field("pool.cpu_slots"):
        return _objpool(view, rethook)
    if rethook.has_field("pool.head"):
        return _freelist(view, maxactive)
    return Instances(maxactive, None, "unknown pool layout")


def _freelist(view: types.View, maxactive: int) -> Instances:
    node = types.layout("struct freelist_node")
    next_offset = node.offset("next")

    def fetch(address: int) -> tuple[int, int]:
        return address, struct.unpack("<Q", target.read(address + next_offset, 8))[0]

    walk = lists.walk(view.ptr("pool.head"), 0, fetch, "rethook freelist", limit=1 << 16)
    return Instances(maxactive, len(walk.items), "freelist", walk.damage)


def _objpool(view: types.View, rethook: types.Layout) -> Instances:
    total = view.int("pool.nr_objs")
    cpus = view.int("pool.nr_possible_cpus")
    slots_array = view.ptr("pool.cpu_slots")
    if not slots_array or not 0 < cpus <= 8192:
        return Instances(total, None, "objpool")
    from gdb_kprobe.kernel import percpu
    count_cpus = percpu.cpu_count()
    pointers = struct.unpack(f"<{count_cpus}Q", target.read(slots_array, 8 * count_cpus))
    slot = types.layout("struct objpool_slot")
    free = 0
    for pointer in pointers:
        if pointer:
            slot_view = slot.view(target.read(pointer, slot.size), pointer)
            free += (slot_view.int("tail") - slot_view.int("head")) & 0xFFFFFFFF
    return Instances(total, free, "objpool")
