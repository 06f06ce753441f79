"""Who is on this function? Every dynamic hook on one function (or address), or on all of
them, with its owner: kp-hooks' one model call.

Two sources, merged per function:
- kprobes (kernel/kprobes.py: kprobe_table), each with its owner from kernel/probe_owners.py
  (trace event, perf kprobe PMU event with its tasks and BPF programs, module, or flagged
  code) and what is at its address now (anatomy.mechanism(): int3 / optprobe jmp / ftrace
  call), as debugfs kprobes/list and dynamic_events show them;
- ftrace_ops on the function's fentry call site (kernel/ftrace_ops.py: which `struct
  ftrace_ops` hook the ip and whose each is, and what the patched site calls now), as
  /sys/kernel/tracing/enabled_functions shows them.
Each ftrace_ops callback and struct goes through the same owner check as a kprobe's handlers
(owners.attribute()): code in no kernel text and no listed module is flagged, never "kernel".
"""
from __future__ import annotations

import dataclasses
from typing import Any

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import anatomy, decode, ftrace, ftrace_ops, kprobes, places
from gdb_kprobe.kernel.function_probes import Function
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.kernel.kprobes_list import ProbeRow, row_of
from gdb_kprobe.kernel.owners import OwnerWarning, attribute
from gdb_kprobe.kernel.probe_owners import ProbeOwner, owner_of

__all__ = ["KprobeHook", "OpsHook", "FunctionHooks", "HooksReport", "hooks_on", "ftrace_model"]


def ftrace_model() -> Any:
    """kernel/ftrace_ops.py (a seam for the unit tests' fake)."""
    return ftrace_ops


@dataclasses.dataclass
class KprobeHook:
    """One registered probe in the function: its kprobes/list row, owner, and what its
    address holds now (anatomy.mechanism() of the hash-table entry there)."""

    row: ProbeRow
    owner: ProbeOwner
    mechanism: str | None             # None in the every-function listing (no code read)


@dataclasses.dataclass
class OpsHook:
    """One `struct ftrace_ops` on the function's call site (ftrace_ops.FtraceOps), and the
    owner check of its callback and of its struct (owners.attribute())."""

    ops: ftrace_ops.FtraceOps
    func_name: str | None             # the callback's symbol, or a run-time code page's name
    warnings: tuple[OwnerWarning, ...] = ()


@dataclasses.dataclass
class FunctionHooks:
    """The hooks on one function (or on one address, `address_only`)."""

    function: Function | None         # None: no symbol covers the address
    address: int                      # the function's start (or the address asked for)
    ftrace_ip: int | None             # its fentry call site, when it has one
    site: ftrace_ops.SiteContents | None  # what the site at ftrace_ip holds now
    kprobes: list[KprobeHook]
    ftrace_ops: list[OpsHook]

    @property
    def count(self) -> int:
        return len(self.kprobes) + len(self.ftrace_ops)


@dataclasses.dataclass
class HooksReport:
    target: str | None                # what was asked; None: every hooked function
    functions: list[FunctionHooks]    # address order
    damage: list[str]
    notes: list[str]


class _Gatherer:
    """One snapshot of kprobe_table, the modules and ftrace's ops for one report."""

    def __init__(self, read_code: bool = True) -> None:
        # the every-function listing reads no code: one block of kernel text per hooked
        # function would be most of its reads (bench/: 1000 probes, 1000 functions)
        self.read_code = read_code
        self.table = kprobes.read_table()
        self.symbolizer = Symbolizer()
        self.model = ftrace_model()
        self.damage: list[str] = list(self.table.damage)
        self.notes: list[str] = []

    def kprobe_hooks(self, rows: list[ProbeRow]) -> list[KprobeHook]:
        found = []
        mechanisms: dict[int, str] = {}
        for row in rows:
            try:
                owner = owner_of(row, self.table, self.symbolizer)
            except KpError as exc:
                self.damage.append(f"probe at {row.probe.addr:#x}: owner unreadable: {exc}")
                continue
            entry = row.aggregate or row.probe
            if self.read_code and entry.addr not in mechanisms:
                mechanisms[entry.addr] = anatomy.mechanism(entry)
            found.append(KprobeHook(row, owner, mechanisms.get(entry.addr)))
        return found

    def rows(self) -> list[ProbeRow]:
        return [row_of(entry, self.table, self.symbolizer) for entry in self.table.reported()
                if not isinstance(entry, str)]

    def ops_hooks(self, ops_list) -> list[OpsHook]:
        hooks = []
        for ops in ops_list:
            attribution = attribute(ops.address, [("ftrace_ops func", ops.func)],
                                    self.symbolizer.modules, None, self.symbolizer.damage)
            location = self.symbolizer.lookup(ops.func) if ops.func else None
            name = _short(location) if location is not None else self._runtime_name(ops.func)
            # attribute() words the struct as a kprobe's: here it is the ftrace_ops
            warnings = tuple(dataclasses.replace(
                w, pointer="struct ftrace_ops",
                note=w.note.replace("struct kprobe", "struct ftrace_ops", 1))
                if w.pointer == "struct kprobe" else w for w in attribution.warnings)
            if name is not None and location is None:     # run-time code (a trampoline)
                warnings = tuple(w for w in warnings if w.pointer != "ftrace_ops func")
            hooks.append(OpsHook(ops, name, warnings))
        return hooks

    def _runtime_name(self, address: int) -> str | None:
        try:
            return self.model.runtime_code_name(address) if address else None
        except KpError:
            return None

    def ops_on(self, ip: int | None) -> tuple[ftrace_ops.SiteContents | None, list[OpsHook]]:
        if ip is None:
            return None, []
        try:
            ops = self.model.ops_on(ip)
            site = self.model.site_at(ip)
        except KpError as exc:
            self.damage.append(f"ftrace_ops at {ip:#x}: {exc}")
            return None, []
        return site, self.ops_hooks(ops)

    def function_of(self, address: int) -> Function | None:
        location = self.symbolizer.lookup(address)
        if location is None:
            return None
        return Function(location.symbol, location.module, address - location.offset,
                        location.size)


def _short(location) -> str:
    """`symbol [module]`, with +offset only when not 0 (as kp-list -v names handlers)."""
    name = location.symbol if location.offset == 0 else f"{location.symbol}+{location.offset:#x}"
    return f"{name} [{location.module}]" if location.module else name


def _ftrace_ip(start: int, size: int) -> int | None:
    """The function's fentry call site (ftrace_location_range() over the function)."""
    try:
        return ftrace.location_range(start, start + max(size, 1) - 1)
    except KpError:
        return None


def _one_function(spec: str, gatherer: _Gatherer) -> FunctionHooks:
    start = places.resolve(spec, gatherer.symbolizer, kprobe_entry=False)
    function = Function(start.symbol or spec, start.module, start.address, start.size)
    rows = [row for row in gatherer.rows() if row.location is not None
            and row.location.module == function.module
            and row.probe.addr - row.location.offset == function.address]
    rows.sort(key=lambda row: row.probe.addr)
    ip = _ftrace_ip(function.address, function.size)
    site, ops = gatherer.ops_on(ip)
    return FunctionHooks(function, function.address, ip, site, gatherer.kprobe_hooks(rows), ops)


def _one_address(spec: str, gatherer: _Gatherer) -> FunctionHooks:
    place = places.resolve(spec, gatherer.symbolizer)
    if place.symbol is None:
        raise KpError(f"{spec} is in no kernel or module function; kp-hooks takes a function, "
                      "symbol+offset, or an address inside a function")
    decode.require_boundary(place)   # a probe sits only where an instruction starts
    address = place.address
    rows = [row for row in gatherer.rows() if row.probe.addr == address]
    ip = _ftrace_ip(address, 1)
    site, ops = gatherer.ops_on(ip)
    return FunctionHooks(gatherer.function_of(address), address, ip, site,
                         gatherer.kprobe_hooks(rows), ops)


def _everything(gatherer: _Gatherer) -> list[FunctionHooks]:
    by_start: dict[int, FunctionHooks] = {}

    def slot(address: int, location=None) -> FunctionHooks:
        function = gatherer.function_of(address) if location is None else Function(
            location.symbol, location.module, address - location.offset, location.size)
        start = function.address if function is not None else address
        if start not in by_start:
            by_start[start] = FunctionHooks(function, start, None, None, [], [])
        return by_start[start]

    rows_by_start: dict[int, list[ProbeRow]] = {}
    for row in gatherer.rows():        # row.location is kallsyms' lookup of the probed address
        rows_by_start.setdefault(slot(row.probe.addr, row.location).address, []).append(row)
    for start, rows in rows_by_start.items():
        rows.sort(key=lambda row: row.probe.addr)
        by_start[start].kprobes = gatherer.kprobe_hooks(rows)
    try:
        hooked = gatherer.model.hooked_ips()
    except KpError as exc:
        gatherer.damage.append(f"ftrace_ops: {exc}")
        hooked = {}
    for ip, ops in hooked.items():
        hooks = slot(ip)
        hooks.ftrace_ip = ip
        hooks.ftrace_ops = gatherer.ops_hooks(ops)
    return [by_start[start] for start in sorted(by_start)]


def hooks_on(target: str | None) -> HooksReport:
    """kp-hooks: the hooks on the function `target` names (`sym`, `mod:sym`), on one address
    (`0x...`, `sym+off`), or with None on every hooked function, in address order. Only the
    first two read code (what each probed address and the fentry site hold now)."""
    gatherer = _Gatherer(read_code=target is not None)
    if target is None:
        functions = _everything(gatherer)
    elif places.names_function(target):
        functions = [_one_function(target, gatherer)]
    else:
        functions = [_one_address(target, gatherer)]
    if gatherer.symbolizer.damage:
        gatherer.damage.append(gatherer.symbolizer.damage)
    return HooksReport(target, functions, gatherer.damage, gatherer.notes)
