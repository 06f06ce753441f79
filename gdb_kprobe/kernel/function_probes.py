"""The probes of one function, for kp-show.

`in_function()` is kp-show FUNCTION: the anatomy of every probed address inside the
function, in address order (the way kp-list SYM filters, but by the function's own range).
`at_address()` is kp-show PLACE: the anatomy at that address, and the probes elsewhere in
the same function, so a probe a few bytes further on is never a surprise.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import anatomy, kprobes, kprobes_list, places
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.kernel.kprobes_list import ProbeRow

__all__ = ["Function", "Shown", "in_function", "at_address", "rows_in"]


@dataclasses.dataclass(frozen=True)
class Function:
    """A function (or any symbol) by its start: duplicate static names stay apart."""

    symbol: str
    module: str | None
    address: int
    size: int                       # 0 when unknown

    @property
    def spec(self) -> str:
        """How kp-show names it."""
        return f"{self.module}:{self.symbol}" if self.module else self.symbol

    def __str__(self) -> str:
        return f"{self.symbol} [{self.module}]" if self.module else self.symbol


@dataclasses.dataclass
class Shown:
    """What kp-show shows: whole places, and the function's other probes in brief."""

    function: Function | None       # None: no symbol covers the address
    whole_function: bool            # kp-show FUNCTION: `places` are all of its probes
    places: list[anatomy.Anatomy]   # address order
    others: list[ProbeRow]          # the function's probes at other addresses, address order
    damage: list[str]               # places that could not be read
    modules: list                   # the modules loaded now (for symbol loading)

    @property
    def probe_count(self) -> int:
        return sum(len(place.probes) for place in self.places) + len(self.others)


def rows_in(function: Function, table: kprobes.KprobeTable,
            symbolizer: Symbolizer) -> list[ProbeRow]:
    """The probes whose address lies in `function`, in address order (debugfs order within
    one address: an aggregate's children as its list holds them)."""
    found = []
    for entry in table.reported():
        if isinstance(entry, str):
            continue
        row = kprobes_list.row_of(entry, table, symbolizer)
        location = row.location
        if location is None or location.module != function.module or \
                row.probe.addr - location.offset != function.address:
            continue
        found.append(row)
    return sorted(found, key=lambda row: row.probe.addr)


def in_function(spec: str) -> Shown:
    """kp-show FUNCTION: every probed address in the function named by `sym` or `mod:sym`."""
    table = kprobes.read_table()
    symbolizer = Symbolizer()
    start = places.resolve(spec, symbolizer, kprobe_entry=False)
    function = Function(start.symbol or spec, start.module, start.address, start.size)
    addresses = list(dict.fromkeys(row.probe.addr
                                   for row in rows_in(function, table, symbolizer)))
    if not addresses:
        size = f", {function.size:#x} bytes" if function.size else ""
        raise KpError(f"no kprobe is registered in {function} ({function.address:#x}{size}); "
                      "kp-list shows the registered ones")
    shown, damage = [], []
    for address in addresses:
        try:
            shown.append(anatomy.gather(address, table, symbolizer))
        except KpError as exc:      # one damaged aggregate should not hide the other places
            damage.append(f"the probes at {address:#x} "
                          f"(+{address - function.address:#x}): {exc}")
    if not shown:
        raise KpError(damage[0])
    return Shown(function, True, shown, [], damage, symbolizer.modules)


def at_address(address: int) -> Shown:
    """kp-show PLACE: the probes at `address`, and the function's probes elsewhere."""
    table = kprobes.read_table()
    symbolizer = Symbolizer()
    place = anatomy.gather(address, table, symbolizer)
    function, others = None, []
    if place.location is not None:
        location = place.location
        function = Function(location.symbol, location.module, address - location.offset,
                            location.size)
        others = [row for row in rows_in(function, table, symbolizer)
                  if row.probe.addr != address]
    return Shown(function, False, [place], others, [], place.modules)
