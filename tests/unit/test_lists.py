"""The bounded, cycle-checked list walker, on fake memory."""
from __future__ import annotations

import pytest


@pytest.fixture
def lists(fake_gdb):
    from gdb_kprobe.kernel import lists
    return lists


def chain(links: dict[int, int]):
    def fetch(node):
        if node not in links:
            from gdb_kprobe.errors import KpError
            raise KpError(f"cannot read 8 bytes at {node:#x}")
        return node, links[node]
    return fetch


def test_walks_to_the_end(lists):
    walk = lists.walk(0xffff000000001000, 0, chain({0xffff000000001000: 0xffff000000002000,
                                                   0xffff000000002000: 0}), "t")
    assert walk.items == [0xffff000000001000, 0xffff000000002000] and walk.damage is None


def test_cycle_is_reported_not_followed(lists):
    a, b = 0xffff000000001000, 0xffff000000002000
    walk = lists.walk(a, 0, chain({a: b, b: a}), "kprobe_table[3]")
    assert walk.items == [a, b]
    assert walk.damage == f"kprobe_table[3]: cycle: node {a:#x} comes again after 2 entries"


def test_self_loop(lists):
    a = 0xffff000000001000
    walk = lists.walk(a, 0, chain({a: a}), "t")
    assert walk.items == [a] and "cycle" in walk.damage


def test_wild_and_non_canonical_pointers(lists):
    a = 0xffff000000001000
    walk = lists.walk(a, 0, chain({a: 0xdead000000000100}), "t")
    assert walk.items == [a] and walk.damage == "t: non-canonical next pointer 0xdead000000000100"
    walk = lists.walk(a, 0, chain({a: 0xffff000000009000}), "t")
    assert walk.damage == "t: cannot read 8 bytes at 0xffff000000009000"


def test_bounded(lists):
    links = {0xffff000000000000 + i: 0xffff000000000000 + i + 1 for i in range(50)}
    walk = lists.walk(0xffff000000000000, 0, chain(links), "t", limit=10)
    assert len(walk.items) == 10 and walk.damage == "t: more than 10 entries; stopped walking"


def test_list_head_walk_stops_at_head(lists):
    head, a = 0xffff000000000100, 0xffff000000001000
    walk = lists.walk(a, head, chain({a: head}), "t")
    assert walk.items == [a] and walk.damage is None
