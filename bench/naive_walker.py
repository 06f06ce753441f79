"""The yardstick: `naive-kp-list`, kprobes/list written the way scripts/gdb/linux does it.

`source bench/naive_walker.py` in gdb. Like Linux's own gdb scripts (lx-lsmod,
lx-ps, ...) it walks kernel data with gdb.Value: `kprobe_table[i]`, `p['addr']`,
`p['flags']`, hlist and list_head pointers followed with dereferences, container_of
with pointer arithmetic, and `info symbol` per probe for `symbol+offset`. Each field
access is a separate lazy gdb.Value fetch, hence a separate memory read over the
wire: that is the cost the benchmark compares kp-list against. It does not use
gdb_kprobe on purpose.

Output lines are those of /sys/kernel/debug/kprobes/list (kernel/kprobes.c:
show_kprobe_addr/report_probe) for probes in the kernel image; module symbols are
not loaded in gdb, so a probe in module text prints its bare address.
"""
from __future__ import annotations

import re
from typing import Iterator

import gdb

# include/linux/kprobes.h
KPROBE_FLAG_GONE = 1
KPROBE_FLAG_DISABLED = 2
KPROBE_FLAG_OPTIMIZED = 4
KPROBE_FLAG_FTRACE = 8

_INFO_SYMBOL = re.compile(r"^(\S+)(?: \+ (\d+))? in section (\S+)(?: of (\S+))?")


def offset_of(struct_ptr: gdb.Type, member: str) -> int:
    """scripts/gdb/linux/utils.py offset_of: the member's address in a NULL struct."""
    element = gdb.Value(0).cast(struct_ptr)
    return int(element.dereference()[member].address)


def container_of(ptr: gdb.Value, struct_ptr: gdb.Type, member: str) -> gdb.Value:
    """scripts/gdb/linux/utils.py container_of."""
    ulong = gdb.lookup_type("unsigned long")
    return (ptr.cast(ulong) - offset_of(struct_ptr, member)).cast(struct_ptr)


def hlist_for_each(head: gdb.Value) -> Iterator[gdb.Value]:
    """scripts/gdb/linux/lists.py hlist_for_each: yields `struct hlist_node *`."""
    node = head["first"]
    while int(node) != 0:
        yield node
        node = node.dereference()["next"]


def list_for_each(head: gdb.Value) -> Iterator[gdb.Value]:
    """scripts/gdb/linux/lists.py list_for_each: yields `struct list_head *`."""
    node = head["next"]
    while int(node) != int(head.address):
        yield node
        node = node.dereference()["next"]


def symbol_of(address: int) -> tuple[str, int, str | None] | None:
    """(symbol, offset, module) from `info symbol`, or None when gdb knows none."""
    text = gdb.execute(f"info symbol {address:#x}", to_string=True)
    match = _INFO_SYMBOL.match(text)
    if match is None:
        return None
    module = match.group(4)
    if module:
        module = module.rsplit("/", 1)[-1].removesuffix(".ko").replace("-", "_")
    return match.group(1), int(match.group(2) or 0), module


def report_probe(p: gdb.Value, aggregate: gdb.Value | None, kretprobe_handler: int) -> str:
    """One line as report_probe() prints it."""
    addr = int(p["addr"])
    kind = "r" if int(p["pre_handler"]) == kretprobe_handler else "k"
    found = symbol_of(addr)
    if found is not None:
        symbol, offset, module = found
        line = f"{addr:016x}  {kind}  {symbol}+{offset:#x}  {module or ' '} "
    else:
        line = f"{addr:016x}  {kind}  {addr:#x} "
    flags = int(p["flags"])
    # OPTIMIZED and FTRACE are the aggregate's, GONE and DISABLED the probe's own
    shared = int(aggregate["flags"]) if aggregate is not None else flags
    if flags & KPROBE_FLAG_GONE:
        line += "[GONE]"
    elif flags & KPROBE_FLAG_DISABLED:
        line += "[DISABLED]"
    if shared & KPROBE_FLAG_OPTIMIZED:
        line += "[OPTIMIZED]"
    if shared & KPROBE_FLAG_FTRACE:
        line += "[FTRACE]"
    return line


class NaiveKpList(gdb.Command):
    """List registered kprobes like /sys/kernel/debug/kprobes/list (naive gdb.Value walk)."""

    def __init__(self) -> None:
        super().__init__("naive-kp-list", gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        kprobe_ptr = gdb.lookup_type("struct kprobe").pointer()
        table = gdb.parse_and_eval("kprobe_table")
        buckets = table.type.sizeof // table[0].type.sizeof
        aggr_handler = int(gdb.parse_and_eval("&aggr_pre_handler"))
        kretprobe_handler = int(gdb.parse_and_eval("&pre_handler_kretprobe"))
        lines = []
        for index in range(buckets):
            for node in hlist_for_each(table[index]):
                p = container_of(node, kprobe_ptr, "hlist")
                if int(p["pre_handler"]) == aggr_handler:
                    for child in list_for_each(p["list"]):
                        kp = container_of(child, kprobe_ptr, "list")
                        lines.append(report_probe(kp, p, kretprobe_handler))
                else:
                    lines.append(report_probe(p, None, kretprobe_handler))
        gdb.write("".join(line + "\n" for line in lines))


NaiveKpList()
