"""Registered kprobes: kprobe_table, aggregates, kretprobes and their owners.

Mirrors kernel/kprobes.c: `kprobe_table[KPROBE_TABLE_SIZE]` is an array of
hlists of `struct kprobe`; a probe whose pre_handler is `aggr_pre_handler` is an
aggregate whose `list` holds the probes registered on that address. Each probe
struct is read from the target in one memory read and decoded with its DWARF
layout; on a link that pays per byte (`kp-read-block`), only the fields a listing
row uses and its link (memory.read_parts), the rest when first asked for.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import lists, percpu
from gdb_kprobe.target import layouts, memory, symbols

__all__ = ["Kprobe", "Handlers", "Bucket", "KprobeTable", "KretprobeInfo", "TraceEvent",
           "read_table", "find_entry", "table_symbol", "hash_ptr", "read_kretprobe",
           "trace_event", "on_dyn_event_list", "trace_hits", "FLAG_NAMES"]

# include/linux/kprobes.h: these bits are part of the kprobes API and have not
# changed since they were introduced.
KPROBE_FLAG_GONE = 1
KPROBE_FLAG_DISABLED = 2
KPROBE_FLAG_OPTIMIZED = 4
KPROBE_FLAG_FTRACE = 8
KPROBE_FLAG_ON_FUNC_ENTRY = 16
# what a walk of kprobe_table reads of each probe besides its link: the fields of a row of
# kprobes/list (address, kind, flags); the others are read when first asked for
ROW_FIELDS = ("addr", "flags", "pre_handler")
LATER_FIELDS = ("post_handler", "nmissed", "symbol_name", "offset", "opcode")
ALL_FIELDS = ROW_FIELDS + LATER_FIELDS       # Kprobe's fields after `address`, in its order
FLAG_NAMES = {KPROBE_FLAG_GONE: "GONE", KPROBE_FLAG_DISABLED: "DISABLED",
              KPROBE_FLAG_OPTIMIZED: "OPTIMIZED", KPROBE_FLAG_FTRACE: "FTRACE",
              KPROBE_FLAG_ON_FUNC_ENTRY: "ON_FUNC_ENTRY"}


@dataclasses.dataclass
class Kprobe:
    """One `struct kprobe`, decoded from its bytes."""

    address: int              # of the struct kprobe
    addr: int                 # the probed address
    flags: int
    pre_handler: int
    post_handler: int
    nmissed: int
    symbol_name: int          # const char * (as registered; often NULL after lookup)
    offset: int
    opcode: int
    parent: "Kprobe | None" = None        # the aggregate this probe hangs from
    children: list["Kprobe"] = dataclasses.field(default_factory=list)
    damage: str | None = None             # a broken child list
    misplaced: str | None = None          # found in a bucket its address does not hash to

    @property
    def gone(self) -> bool:
        return bool(self.flags & KPROBE_FLAG_GONE)

    @property
    def disabled(self) -> bool:
        return bool(self.flags & (KPROBE_FLAG_DISABLED | KPROBE_FLAG_GONE))

    @property
    def optimized(self) -> bool:
        return bool(self.flags & KPROBE_FLAG_OPTIMIZED)

    @property
    def ftrace(self) -> bool:
        return bool(self.flags & KPROBE_FLAG_FTRACE)

    def flag_names(self) -> list[str]:
        names = [name for bit, name in FLAG_NAMES.items() if self.flags & bit]
        unknown = self.flags & ~sum(FLAG_NAMES)
        if unknown:
            names.append(f"{unknown:#x}?")
        return names

    @classmethod
    def of_row(cls, address: int, addr: int, flags: int, pre_handler: int) -> "Kprobe":
        """A probe decoded from ROW_FIELDS (maybe all that was read of it): LATER_FIELDS
        are left unset (no __init__: 10,000 rows a listing; the defaults after `opcode` set
        here), and `__getattr__` reads them (the whole struct, once) when first asked for."""
        probe = cls.__new__(cls)
        probe.__dict__.update(address=address, addr=addr, flags=flags, pre_handler=pre_handler,
                              parent=None, children=[], damage=None, misplaced=None)
        return probe

    def __getattr__(self, name: str) -> int:
        # called only for an attribute that is not set: LATER_FIELDS of a probe of_row()
        if name in LATER_FIELDS and "address" in self.__dict__:
            kprobe = layouts.layout("struct kprobe")
            whole = _decode(kprobe.view(memory.read(self.address, kprobe.size), self.address))
            for later in LATER_FIELDS:
                self.__dict__[later] = getattr(whole, later)
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@dataclasses.dataclass
class Handlers:
    """Addresses of the kernel functions that tell probe kinds apart."""

    aggr_pre_handler: int
    pre_handler_kretprobe: int
    kprobe_dispatcher: int | None
    kretprobe_dispatcher: int | None

    @classmethod
    def lookup(cls) -> "Handlers":
        table = symbols.kernel()
        aggr = table.address_of("aggr_pre_handler")
        kret = table.address_of("pre_handler_kretprobe")
        if aggr is None or kret is None:
            raise KpError("this kernel has no kprobes (aggr_pre_handler / pre_handler_kretprobe "
                          "not in the symbol file); is CONFIG_KPROBES set?")
        return cls(aggr, kret, table.address_of("kprobe_dispatcher"),
                   table.address_of("kretprobe_dispatcher"))


def _decode(view: layouts.View) -> Kprobe:
    return Kprobe(view.address, *view.ints(ALL_FIELDS))


@dataclasses.dataclass
class Bucket:
    index: int
    probes: list[Kprobe]          # hlist order; aggregates carry their children
    damage: str | None = None


class KprobeTable:
    """A snapshot of kprobe_table, read at the current stop."""

    def __init__(self, buckets: list[Bucket], handlers: Handlers) -> None:
        self.buckets = buckets
        self.handlers = handlers

    def is_aggregate(self, probe: Kprobe) -> bool:
        return probe.pre_handler == self.handlers.aggr_pre_handler

    def is_return_probe(self, probe: Kprobe) -> bool:
        return probe.pre_handler == self.handlers.pre_handler_kretprobe

    def reported(self) -> list[tuple[Kprobe, Kprobe | None] | str]:
        """(probe, aggregate) pairs in the order kprobes/list prints them (show_kprobe_addr),
        with a note (a str) where a damaged list was cut short, at the place it happened."""
        rows: list[tuple[Kprobe, Kprobe | None] | str] = []
        for bucket in self.buckets:
            for probe in bucket.probes:
                if self.is_aggregate(probe):
                    rows.extend([(child, probe) for child in probe.children])
                else:
                    rows.append((probe, None))
                if probe.damage:
                    rows.append(probe.damage)
                if probe.misplaced:
                    rows.append(probe.misplaced)
            if bucket.damage:
                rows.append(bucket.damage)
        return rows

    @property
    def damage(self) -> list[str]:
        return [row for row in self.reported() if isinstance(row, str)]


def find_entry(table: KprobeTable, address: int) -> Kprobe | None:
    """The hash-table entry (an aggregate, or the lone probe) for the probes at `address`,
    as get_kprobe() finds it."""
    for bucket in table.buckets:
        for probe in bucket.probes:
            if probe.addr == address:
                return probe
    return None


def table_symbol() -> tuple[int, int]:
    """Address and bucket count of kprobe_table."""
    address = symbols.kernel_address("kprobe_table")
    symbol = gdb.lookup_static_symbol("kprobe_table")
    if symbol is None:
        raise KpError("kprobe_table has no debug info; load the DWARF vmlinux of the running "
                      "kernel (linux-image-<ver>-dbg)")
    array = symbol.type.strip_typedefs()
    element = array.target().strip_typedefs()
    return address, array.sizeof // element.sizeof


def read_table(whole: bool = False) -> KprobeTable:
    """A snapshot of `kprobe_table[]`: every bucket's hlist, aggregates with their children,
    and a note wherever a list is damaged. `whole`: read every struct kprobe whole (for
    a caller that shows all its fields), not only what a listing row uses."""
    handlers = Handlers.lookup()
    kprobe = layouts.layout("struct kprobe")
    hlist_offset = kprobe.offset("hlist")
    list_offset = kprobe.offset("list")
    table_address, count = table_symbol()
    heads = memory.read(table_address, 8 * count)        # the whole table in one read
    # per link: the parts of a struct kprobe a row uses and their decoder (read_parts reads
    # all of them, so the bytes need no View to guard the rest)
    row_reads = {link: (kprobe.spans((*ROW_FIELDS, link)), kprobe.decoder((*ROW_FIELDS, link)))
                 for link in ("hlist.next", "list.next")}

    def probe_at(address: int, link: str) -> tuple[Kprobe, int]:
        """The probe at `address` and its `link`'s next pointer, in one unpack: a row's
        fields only (10,000 probes decode no more than they show), or with `whole` all."""
        if whole:
            view = kprobe.view(memory.read(address, kprobe.size), address)
            *fields, following = view.ints((*ALL_FIELDS, link))
            return Kprobe(address, *fields), following
        spans, decode = row_reads[link]
        addr, flags, pre_handler, following = decode(memory.read_parts(address, kprobe.size,
                                                                       spans)[0])
        return Kprobe.of_row(address, addr, flags, pre_handler), following

    def fetcher(offset: int, link: str) -> Callable[[int], tuple[Kprobe, int]]:
        return lambda node: probe_at(node - offset, link)

    def prefetcher(offset: int) -> Callable[[list[int]], None]:
        return lambda nodes: memory.prefetch([node - offset for node in nodes], kprobe.size)

    # every chain a step a round, the reads of a round back to back (lists.walk_lists)
    walks = lists.walk_lists(
        [(int.from_bytes(heads[8 * index: 8 * index + 8], "little"), 0, f"kprobe_table[{index}]")
         for index in range(count)], fetcher(hlist_offset, "hlist.next"),
        prefetch=prefetcher(hlist_offset))
    aggregates = [probe for walk in walks for probe in walk.items
                  if probe.pre_handler == handlers.aggr_pre_handler]
    children = lists.walk_lists(
        [(_read_fields(kprobe, probe.address, ("list.next",)).ptr("list.next"),
          probe.address + list_offset,
          f"aggregate at {probe.addr:#x}") for probe in aggregates],
        fetcher(list_offset, "list.next"), prefetch=prefetcher(list_offset))
    for probe, walk in zip(aggregates, children):
        probe.children, probe.damage = walk.items, walk.damage
        for child in probe.children:
            child.parent = probe
    buckets = []
    for index, walk in enumerate(walks):
        for probe in walk.items:
            home = hash_ptr(probe.addr, count.bit_length() - 1)
            if home != index:
                probe.misplaced = (f"kprobe_table[{index}]: the probe at {probe.addr:#x} hashes "
                                   f"to bucket {home}: a next pointer jumped between buckets")
        buckets.append(Bucket(index, walk.items, walk.damage))
    return KprobeTable(buckets, handlers)


GOLDEN_RATIO_64 = 0x61C8864680B583EB      # include/linux/hash.h


def hash_ptr(address: int, bits: int) -> int:
    """hash_ptr(addr, KPROBE_HASH_BITS): the bucket register_kprobe() puts a probe in."""
    return arch.u64(address * GOLDEN_RATIO_64) >> (64 - bits)


def _read_fields(layout: layouts.Layout, address: int, paths: tuple[str, ...]) -> layouts.View:
    """The struct at `address`, of which `paths` are used: read whole or in parts, as the
    link makes cheaper (memory.read_parts)."""
    data, known = memory.read_parts(address, layout.size, layout.spans(paths))
    return layout.view(data, address, known)


# -- details for kp-list -v / kp-show --------------------------------------------------

@dataclasses.dataclass
class KretprobeInfo:
    address: int
    handler: int
    entry_handler: int
    maxactive: int
    nmissed: int
    data_size: int
    rethook: int              # struct rethook * (0 on kernels before rethook)


def read_kretprobe(probe: Kprobe) -> KretprobeInfo:
    """The `struct kretprobe` a return probe's `struct kprobe` is embedded in (`kp`)."""
    layout = layouts.layout("struct kretprobe")
    address = probe.address - layout.offset("kp")
    view = layout.view(memory.read(address, layout.size), address)
    return KretprobeInfo(address, view.ptr("handler"), view.ptr("entry_handler"),
                         view.int("maxactive"), view.int("nmissed"), view.int("data_size"),
                         # kretprobe.rh: 73f9b911faa7 "kprobes: Use rethook for kretprobe if
                         # possible" (v5.18), with CONFIG_KRETPROBE_ON_RETHOOK only
                         view.ptr("rh") if layout.has_field("rh") else 0)


@dataclasses.dataclass
class TraceEvent:
    """The trace event (struct trace_kprobe) a probe belongs to."""

    name: str                 # group/event
    address: int              # struct trace_kprobe
    nhit: int                 # unsigned long __percpu *: the hits kprobe_profile sums
    # on dyn_event_list, i.e. in kprobe_events/dynamic_events (True), or a perf kprobe PMU
    # probe made by perf_event_open() (False); None: this kernel cannot tell
    listed: bool | None = True


def on_dyn_event_list(trace_kprobe: int) -> bool | None:
    """Is the `struct trace_kprobe` at `trace_kprobe` on dyn_event_list? A perf kprobe PMU
    probe (create_local_trace_kprobe()) never is: its devent.list still points at itself
    (dyn_event_init() does INIT_LIST_HEAD). `devent`: 5448d44c3855 "tracing: Add unified
    dynamic event framework" (v5.0); None (unknown) without it."""
    tk = layouts.layout("struct trace_kprobe")
    if not tk.has_field("devent.list"):
        return None
    node = trace_kprobe + tk.offset("devent.list")
    return memory.read_u64(node) != node


def trace_event(probe: Kprobe, kretprobe: KretprobeInfo | None,
                handlers: Handlers) -> TraceEvent | None:
    """The trace event when the probe was made through kprobe_events, else None."""
    from_trace = (handlers.kprobe_dispatcher is not None
                  and probe.pre_handler == handlers.kprobe_dispatcher) or \
        (kretprobe is not None and handlers.kretprobe_dispatcher is not None
         and kretprobe.handler == handlers.kretprobe_dispatcher)
    if not from_trace:
        return None
    # tp.event (struct trace_probe_event): 60d53e2c3b75 "tracing/probe: Split trace_event
    # related data from trace_probe" (v5.3); older kernels are not supported
    tk = layouts.layout("struct trace_kprobe")
    address = probe.address - tk.offset("rp.kp")
    view = _read_fields(tk, address, ("tp.event", "nhit") if tk.has_field("nhit")
                        else ("tp.event",))
    event_ptr = view.ptr("tp.event")
    event = layouts.layout("struct trace_probe_event")
    event_view = _read_fields(event, event_ptr, ("class.system", "call.name"))
    group = layouts.printable(memory.read_cstring(event_view.ptr("class.system"), 64))
    name = layouts.printable(memory.read_cstring(event_view.ptr("call.name"), 64))
    # trace_kprobe.nhit, a per-CPU counter for years; checked rather than assumed, since a
    # missing counter only costs kp-show its hit count
    return TraceEvent(f"{group}/{name}", address, view.ptr("nhit") if tk.has_field("nhit") else 0,
                      on_dyn_event_list(address))


def trace_hits(event: TraceEvent) -> int | None:
    """Sum of the per-CPU hit counters, as /sys/kernel/tracing/kprobe_profile prints."""
    if not event.nhit:
        return None
    return sum(memory.read_u64(event.nhit + offset) for offset in percpu.offsets())
