"""ftrace's call sites: the `struct dyn_ftrace` records the kernel keeps for every fentry
call it can patch (kernel/trace/ftrace.c), read from kernel memory, modules included.

`location_range(start, end)` is ftrace_location_range(): the record whose 5-byte call
overlaps [start, end], found page by page (`ftrace_pages_start`, a list of `struct
ftrace_page`, each an array of records sorted by ip) with a binary search, as lookup_rec()
does. kprobe_events refuses a function that has none (a notrace function).
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import lists
from gdb_kprobe.target import cache, layouts, memory, symbols

__all__ = ["Page", "pages", "location_range"]

MAX_PAGES = 100_000


@dataclasses.dataclass(frozen=True)
class Page:
    """One `struct ftrace_page`: its records and the ips of the first and the last."""

    records: int
    count: int
    first_ip: int
    last_ip: int


@cache.cache_until(*cache.MEMORY)
def pages() -> tuple[Page, ...]:
    """Every non-empty ftrace page, in list order; () when the kernel has no ftrace."""
    start = symbols.kernel().address_of("ftrace_pages_start")
    if start is None:
        return ()
    page = layouts.layout("struct ftrace_page")
    record = layouts.layout("struct dyn_ftrace")
    ip_offset = record.offset("ip")

    def fetch(node: int) -> tuple[Page | None, int]:
        view = page.view(memory.read(node, page.size), node)
        records, count = view.ptr("records"), view.int("index")
        found = None
        if count > 0:
            first = memory.read_u64(records + ip_offset)
            last = memory.read_u64(records + (count - 1) * record.size + ip_offset)
            found = Page(records, count, first, last)
        return found, view.ptr("next")

    walk = lists.walk(memory.read_u64(start), 0, fetch, "ftrace_pages", limit=MAX_PAGES)
    if walk.damage:
        raise KpError(f"cannot read ftrace's call sites: {walk.damage}")
    return tuple(found for found in walk.items if found is not None)


def location_range(start: int, end: int) -> int | None:
    """ftrace_location_range(start, end): the ip of a call site overlapping [start, end]."""
    record = layouts.layout("struct dyn_ftrace")
    ip_offset = record.offset("ip")
    for page in pages():
        if end < page.first_ip or start >= page.last_ip + arch.MCOUNT_INSN_SIZE:
            continue
        low, high = 0, page.count - 1
        while low <= high:                 # lib/bsearch.c with ftrace_cmp_recs()
            middle = (low + high) // 2
            ip = memory.read_u64(page.records + middle * record.size + ip_offset)
            if end < ip:
                high = middle - 1
            elif start >= ip + arch.MCOUNT_INSN_SIZE:
                low = middle + 1
            else:
                return ip
    return None
