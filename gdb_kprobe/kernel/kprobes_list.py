"""The rows of /sys/kernel/debug/kprobes/list, gathered from the model.

`probe_rows()` follows show_kprobe_addr()/report_probe() in kernel/kprobes.c:
one row per probe in bucket and hlist order, aggregates expanded into their
children, the location looked up like kallsyms_lookup(). Rendering is elsewhere.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kprobes
from gdb_kprobe.kernel.owners import Owner, OwnerWarning, attribute
from gdb_kprobe.kernel.kallsyms import Location, Symbolizer

__all__ = ["Details", "ProbeRow", "Damage", "Report", "RowFilter", "probe_rows", "listing",
           "details_for", "row_of", "safe_lookup"]


@dataclasses.dataclass
class Details:
    """The -v extras: handlers by name, owner (kernel/owners.py), and kretprobe fields;
    `warnings`: the probe's pointers that no known owner holds (a hidden module's code)."""

    owner: Owner
    event: kprobes.TraceEvent | None
    pre_handler: Location | None
    post_handler: Location | None
    kretprobe: kprobes.KretprobeInfo | None
    ret_handler: Location | None
    entry_handler: Location | None
    warnings: tuple[OwnerWarning, ...] = ()


@dataclasses.dataclass
class ProbeRow:
    probe: kprobes.Kprobe
    aggregate: kprobes.Kprobe | None
    kind: str                        # "k" or "r", as kprobes/list prints
    location: Location | None
    details: Details | None = None

    @property
    def flags_probe(self) -> kprobes.Kprobe:
        """OPTIMIZED and FTRACE come from the aggregate, GONE/DISABLED from the probe."""
        return self.aggregate or self.probe

    def listed_flags(self) -> list[str]:
        """The flag words report_probe() prints, in its order: [GONE] hides [DISABLED];
        OPTIMIZED and FTRACE are the aggregate's. kp-list text and JSON both use this."""
        own, flags = self.probe.flags, (self.aggregate or self.probe).flags
        words = []
        # the bits, not the properties: 10,000 rows a listing
        if own & kprobes.KPROBE_FLAG_GONE:
            words.append("GONE")
        elif own & kprobes.KPROBE_FLAG_DISABLED:
            words.append("DISABLED")
        if flags & kprobes.KPROBE_FLAG_OPTIMIZED:
            words.append("OPTIMIZED")
        if flags & kprobes.KPROBE_FLAG_FTRACE:
            words.append("FTRACE")
        return words


@dataclasses.dataclass
class Damage:
    """Where a walk had to stop or found something inconsistent, in listing order."""

    note: str


@dataclasses.dataclass
class Report:
    rows: list[ProbeRow | Damage]
    registered: int | None = None          # probes before filtering (kp-list's filters)

    @property
    def probes(self) -> list[ProbeRow]:
        return [row for row in self.rows if isinstance(row, ProbeRow)]


def probe_rows(verbose: bool = False) -> Report:
    """Every registered probe in debugfs order; with `verbose`, each row's Details too
    (which show all of each struct kprobe: read whole)."""
    table = kprobes.read_table(whole=verbose)
    symbolizer = Symbolizer()
    rows: list[ProbeRow | Damage] = []
    for entry in table.reported():
        if isinstance(entry, str):
            rows.append(Damage(entry))
            continue
        row = row_of(entry, table, symbolizer)
        probe = row.probe
        if verbose:
            try:
                row.details = details_for(row, table, symbolizer)
            except KpError as exc:
                rows.append(row)
                rows.append(Damage(f"probe at {probe.addr:#x}: details unreadable: {exc}"))
                continue
        rows.append(row)
    if symbolizer.damage:
        rows.append(Damage(symbolizer.damage))
    return Report(rows)


def row_of(entry: tuple[kprobes.Kprobe, kprobes.Kprobe | None], table: kprobes.KprobeTable,
           symbolizer: Symbolizer) -> ProbeRow:
    """One debugfs row of a (probe, its aggregate) entry of `table.reported()`."""
    probe, aggregate = entry
    kind = "r" if table.is_return_probe(probe) else "k"
    return ProbeRow(probe, aggregate, kind, safe_lookup(symbolizer, probe.addr))


def safe_lookup(symbolizer: Symbolizer, address: int) -> Location | None:
    try:
        return symbolizer.lookup(address)
    except KpError:
        return None     # e.g. a damaged module list: print the bare address, as %pS does


def _handler(address: int, symbolizer: Symbolizer) -> Location | None:
    return symbolizer.lookup(address) if address else None


def details_for(row: ProbeRow, table: kprobes.KprobeTable, symbolizer: Symbolizer) -> Details:
    """Handlers by name, the owner (a trace event's `struct trace_kprobe`, else whoever's
    code the handlers or whose memory the `struct kprobe` is in: owners.attribute()) and the
    kretprobe."""
    probe = row.probe
    kretprobe = kprobes.read_kretprobe(probe) if row.kind == "r" else None
    event = kprobes.trace_event(probe, kretprobe, table.handlers)
    handlers = [("pre_handler", probe.pre_handler), ("post_handler", probe.post_handler)]
    if kretprobe:
        handlers += [("kretprobe handler", kretprobe.handler),
                     ("entry_handler", kretprobe.entry_handler)]
    attribution = attribute(probe.address, handlers, symbolizer.modules,
                            event.name if event else None, symbolizer.damage,
                            event.listed if event else True)
    return Details(
        owner=attribution.owner,
        event=event,
        pre_handler=_handler(probe.pre_handler, symbolizer),
        post_handler=_handler(probe.post_handler, symbolizer),
        kretprobe=kretprobe,
        ret_handler=_handler(kretprobe.handler, symbolizer) if kretprobe else None,
        entry_handler=_handler(kretprobe.entry_handler, symbolizer) if kretprobe else None,
        warnings=attribution.warnings,
    )


@dataclasses.dataclass(frozen=True)
class RowFilter:
    """kp-list's filters: a symbol substring, a module (location or owner), a kind."""

    def __bool__(self) -> bool:
        return bool(self.symbol or self.module or self.kind)

    def describe(self) -> str:
        """The filters in words, for "nothing matched"."""
        parts = [f"a symbol containing `{self.symbol}`" if self.symbol else "",
                 f"module {self.module}" if self.module else "",
                 {"k": "kprobes", "r": "return probes"}.get(self.kind or "", "")]
        return ", ".join(part for part in parts if part)

    symbol: str | None = None
    module: str | None = None
    kind: str | None = None              # "k" or "r"

    def matches(self, row: ProbeRow) -> bool:
        if self.kind and row.kind != self.kind:
            return False
        if self.symbol and (row.location is None or self.symbol not in row.location.symbol):
            return False
        if self.module:
            in_module = row.location is not None and row.location.module == self.module
            owned = row.details is not None and row.details.owner == Owner("module", self.module)
            if not (in_module or owned):
                return False
        return True


def listing(verbose: bool, row_filter: RowFilter) -> Report:
    """kp-list: the rows that pass the filter, damage notes kept in place; Details only with
    `verbose` (they are read anyway when filtering by module owner)."""
    result = probe_rows(verbose=verbose or bool(row_filter.module))
    rows = [row for row in result.rows
            if not isinstance(row, ProbeRow) or row_filter.matches(row)] if row_filter \
        else result.rows
    if row_filter.module and not verbose:
        for row in rows:
            if isinstance(row, ProbeRow):
                row.details = None
    return Report(rows, len(result.probes))
