"""Bounded, cycle-checked walks over kernel linked lists (hlist and list_head).

Unlike scripts/gdb/linux/lists.py the walkers here take a `fetch` that reads the
whole containing object in one memory read and returns it with its next
pointer, so a walk costs one read per element. A damaged list (unreadable or
non-canonical pointer, a cycle, too many elements) ends the walk with a note
saying where, instead of an exception or a hang.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import layouts, memory

__all__ = ["Walk", "walk", "for_each_entry", "llist_views", "MAX_ELEMENTS"]

T = TypeVar("T")
MAX_ELEMENTS = 100_000


class Walk(Generic[T]):
    """The elements reached, and a note when the walk had to stop early."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.damage: str | None = None


def walk(first: int, stop_at: int, fetch: Callable[[int], tuple[T, int]],
         what: str, limit: int = MAX_ELEMENTS) -> Walk[T]:
    """Follow next pointers from node `first` until `stop_at` (0 for hlist, the head for list).

    `fetch(node)` returns (element, next node address).
    """
    result: Walk[T] = Walk()
    seen: set[int] = set()
    node = first
    while node != stop_at:
        if node in seen:
            result.damage = f"{what}: cycle: node {node:#x} comes again after " \
                            f"{len(result.items)} entries"
            break
        if len(result.items) >= limit:
            result.damage = f"{what}: more than {limit} entries; stopped walking"
            break
        if not arch.is_canonical(node):
            result.damage = f"{what}: non-canonical next pointer {node:#x}"
            break
        seen.add(node)
        try:
            item, following = fetch(node)
        except KpError as exc:
            result.damage = f"{what}: {exc}"
            break
        result.items.append(item)
        node = following
    return result


def for_each_entry(head: int, layout: layouts.Layout, member: str,
                   decode: Callable[[layouts.View], T], what: str) -> Walk[T]:
    """list_for_each_entry(): the objects of type `layout` linked through their list_head
    `member` from the list_head at `head`, each read whole in one read and decoded."""
    member_offset = layout.offset(member)

    def fetch(node: int) -> tuple[T, int]:
        address = node - member_offset
        view = layout.view(memory.read(address, layout.size), address)
        return decode(view), view.ptr(f"{member}.next")

    return walk(memory.read_u64(head), head, fetch, what)


def llist_views(first: int, layout: layouts.Layout, member: str,
                limit: int = 256) -> Iterator[layouts.View]:
    """llist_for_each_entry() from the node `first` (an llist_head's .first, e.g. a task's
    kretprobe_instances or rethooks): each object of type `layout`, linked through its
    llist_node `member`, read whole and lazily (a caller looking for one reads no further);
    at most `limit` (a damaged or cyclic list ends there)."""
    member_offset = layout.offset(member)
    node = first
    for _ in range(limit):
        if not node:
            return
        address = node - member_offset
        view = layout.view(memory.read(address, layout.size), address)
        yield view
        node = view.ptr(f"{member}.next")
