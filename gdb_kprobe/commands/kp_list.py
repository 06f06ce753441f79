"""kp-list: the registered kprobes, as /sys/kernel/debug/kprobes/list shows them."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards, last_list
from gdb_kprobe.commands.base import KpCommand, palette
from gdb_kprobe.errors import KpUsageError
from gdb_kprobe.kernel import kprobes_list
from gdb_kprobe.ui import jsonout, render


class KpList(KpCommand):
    name = "kp-list"
    arch_neutral = True       # layouts from DWARF, no instruction bytes
    summary = "List the registered kprobes exactly as /sys/kernel/debug/kprobes/list does."
    mirrors = "/sys/kernel/debug/kprobes/list (kernel/kprobes.c: show_kprobe_addr)"

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="also show handlers, owner (a module, a trace event, or a "
                                 "warning for code in no listed module), nmissed, and kretprobe "
                                 "handler/entry_handler/maxactive")
        parser.add_argument("symbol", nargs="?", default=None,
                            help="only probes whose symbol contains this text")
        parser.add_argument("-m", "--module", metavar="NAME",
                            help="only probes in module NAME or owned by it")
        parser.add_argument("-t", "--type", choices=("k", "r"),
                            help="only kprobes (k) or return probes (r)")
        parser.add_argument("-n", "--numbered", action="store_true",
                            help="number the lines; kp-show #N then shows line N")
        self.add_json_option(parser)
        return parser

    def needs_arch_seam(self, args: argparse.Namespace) -> bool:
        # -v names each struct kprobe's memory region from the arch's memory map (x86's so
        # far: on arm64 it called the heap "no region the kernel maps")
        return args.verbose

    def check_args(self, args: argparse.Namespace) -> None:
        if args.json and args.numbered:
            raise KpUsageError("kp-list: --json always numbers the probes (their \"index\" is "
                               "the N of kp-show #N); drop -n")

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        row_filter = kprobes_list.RowFilter(args.symbol, args.module, args.type)
        report = kprobes_list.listing(args.verbose, row_filter)
        rows = report.rows
        last_list.remember([row.probe.addr for row in rows
                            if isinstance(row, kprobes_list.ProbeRow)])
        if args.json:
            gdb.write(jsonout.dumps(jsonout.probe_list(rows)))
        elif row_filter and not any(isinstance(row, kprobes_list.ProbeRow) for row in rows):
            # unfiltered, an empty list is what debugfs prints: nothing
            gdb.write(f"kp-list: no probe matches {row_filter.describe()} (of "
                      f"{report.registered} registered)\n")
            gdb.write(render.probe_list(rows))          # damage notes, if any
        else:
            gdb.write(render.probe_list(rows, numbered=args.numbered, palette=palette()))

    def complete_argument(self, text, word):
        return self.complete_place(text, word)
