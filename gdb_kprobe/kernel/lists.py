"""Bounded, cycle-checked walks over kernel linked lists (hlist and list_head).

Unlike scripts/gdb/linux/lists.py the walkers here take a `fetch` that reads the
whole containing object in one memory read and returns it with its next
pointer, so a walk costs one read per element. A damaged list (unreadable or
non-canonical pointer, a cycle, too many elements) ends the walk with a note
saying where, instead of an exception or a hang.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, Sequence, TypeVar

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import layouts, memory

__all__ = ["Walk", "walk", "walk_lists", "for_each_entry", "llist_views", "MAX_ELEMENTS"]

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
    return walk_lists([(first, stop_at, what)], fetch, limit)[0]


def walk_lists(starts: Sequence[tuple[int, int, str]], fetch: Callable[[int], tuple[T, int]],
               limit: int = MAX_ELEMENTS,
               prefetch: Callable[[list[int]], None] | None = None) -> list[Walk[T]]:
    """walk() over several lists at once, (first, stop_at, what) each: one step of every list
    a round, and `prefetch(nodes)` before each round with the nodes it will fetch, so that
    their reads go back to back (a hash table's 64 chains: gdb's reads come ~15 µs
    cheaper each when no Python runs between them, QEMU's gdbstub still awake)."""
    results: list[Walk[T]] = [Walk() for _ in starts]
    seen: list[set[int]] = [set() for _ in starts]
    live = [(index, first) for index, (first, stop_at, _) in enumerate(starts) if first != stop_at]
    while live:
        if prefetch is not None:
            prefetch([node for _, node in live if arch.is_canonical(node)])
        following_round = []
        for index, node in live:
            result, (_, stop_at, what) = results[index], starts[index]
            if node in seen[index]:
                result.damage = f"{what}: cycle: node {node:#x} comes again after " \
                                f"{len(result.items)} entries"
                continue
            if len(result.items) >= limit:
                result.damage = f"{what}: more than {limit} entries; stopped walking"
                continue
            if not arch.is_canonical(node):
                result.damage = f"{what}: non-canonical next pointer {node:#x}"
                continue
            seen[index].add(node)
            try:
                item, following = fetch(node)
            except KpError as exc:
                result.damage = f"{what}: {exc}"
                continue
            result.items.append(item)
            if following != stop_at:
                following_round.append((index, following))
        live = following_round
    return results


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
