"""The kprobe blacklist: `kprobe_blacklist`, a list of `struct kprobe_blacklist_entry`
(start_addr..end_addr), as /sys/kernel/debug/kprobes/blacklist prints it."""
from __future__ import annotations

import dataclasses

from gdb_kprobe.kernel import lists
from gdb_kprobe.kernel.kallsyms import Location, Symbolizer
from gdb_kprobe.target import layouts, symbols

__all__ = ["BlacklistEntry", "Listing", "read_blacklist", "listing", "blacklisted"]


@dataclasses.dataclass
class BlacklistEntry:
    """One `struct kprobe_blacklist_entry`."""

    start: int
    end: int


@dataclasses.dataclass
class Listing:
    """What kp-blacklist prints: entries with their symbols, and where the walk broke."""

    rows: list[tuple[BlacklistEntry, Location | None]]
    damage: list[str]
    total: int                     # entries before the pattern


def read_blacklist() -> lists.Walk[BlacklistEntry]:
    """kprobe_blacklist, in list order (what debugfs kprobes/blacklist prints)."""
    return lists.for_each_entry(
        symbols.kernel_address("kprobe_blacklist"),
        layouts.layout("struct kprobe_blacklist_entry"), "list",
        lambda view: BlacklistEntry(view.ptr("start_addr"), view.ptr("end_addr")),
        "kprobe_blacklist")


def listing(pattern: str | None = None) -> Listing:
    """The blacklist with each entry's symbol (kprobe_blacklist_seq_show's %ps); only the
    entries whose symbol contains `pattern` when one is given."""
    walk = read_blacklist()
    symbolizer = Symbolizer()
    rows = [(entry, symbolizer.lookup(entry.start)) for entry in walk.items]
    if pattern:
        rows = [(entry, found) for entry, found in rows if found and pattern in found.symbol]
    return Listing(rows, [walk.damage] if walk.damage else [], len(walk.items))


def blacklisted(address: int, blacklist: list[BlacklistEntry], symbolizer: Symbolizer) -> bool:
    """within_kprobe_blacklist(): in an entry's range, or a `.`-suffixed copy (foo.cold,
    foo.isra.0) of a blacklisted function."""
    if any(entry.start <= address < entry.end for entry in blacklist):
        return True
    found = symbolizer.lookup(address)
    if found and found.offset == 0 and "." in found.symbol:
        base = symbols.kernel().address_of(found.symbol.split(".")[0])
        return base is not None and any(e.start <= base < e.end for e in blacklist)
    return False
