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


def test_lists_walked_together_each_as_alone(lists):
    """walk_lists: a step of every list a round; each list's items and damage are what walk()
    alone gives it, a damaged one leaves the others whole, and `prefetch` sees each round's
    nodes before they are fetched (the canonical ones: a wild pointer is the walk's note)."""
    base = 0xffff000000000000
    a, b, c, d, e = (base + 0x1000 * i for i in range(1, 6))
    links = {a: b, b: 0,                   # a two-element hlist
             c: c,                         # a self-loop
             d: 0xdead000000000100,        # a wild next pointer
             e: 0}
    rounds = []
    starts = [(a, 0, "l0"), (c, 0, "l1"), (d, 0, "l2"), (0, 0, "empty"), (e, 0, "l4")]
    walks = lists.walk_lists(starts, chain(links), prefetch=rounds.append)
    assert [w.items for w in walks] == [[a, b], [c], [d], [], [e]]
    alone = [lists.walk(first, stop, chain(links), what) for first, stop, what in starts]
    assert [w.damage for w in walks] == [w.damage for w in alone]
    assert walks[1].damage.startswith("l1: cycle") and "non-canonical" in walks[2].damage
    assert rounds == [[a, c, d, e], [b, c]]


def test_lists_walked_together_keep_their_limits(lists):
    links = {0xffff000000000000 + i: 0xffff000000000000 + i + 1 for i in range(50)}
    walks = lists.walk_lists([(0xffff000000000000, 0, "t"), (0xffff000000000020, 0, "u")],
                             chain(links), limit=5)
    assert [len(w.items) for w in walks] == [5, 5]
    assert walks[1].damage == "u: more than 5 entries; stopped walking"
