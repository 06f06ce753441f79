"""kp-list: the registered kprobes, as /sys/kernel/debug/kprobes/list shows them."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe import colour, guards, jsonout, render
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.errors import KpUsageError
from gdb_kprobe.kernel import listing, report


class KpList(KpCommand):
    name = "kp-list"
    summary = "List the registered kprobes exactly as /sys/kernel/debug/kprobes/list does."
    mirrors = "/sys/kernel/debug/kprobes/list (kernel/kprobes.c: show_kprobe_addr)"

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="also show handlers, owner (module or trace event), nmissed, "
                                 "and kretprobe handler/entry_handler/maxactive")
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

    def run(self, args: argparse.Namespace) -> None:
        if args.json and args.numbered:
            raise KpUsageError("kp-list: --json always numbers the probes (their \"index\" is "
                               "the N of kp-show #N); drop -n")
        guards.require_kernel()
        needs_details = args.verbose or bool(args.module)
        result = report.probe_rows(verbose=needs_details)
        rows = [row for row in result.rows
                if not isinstance(row, report.ProbeRow) or _matches(row, args)]
        if not args.verbose:
            for row in rows:
                if isinstance(row, report.ProbeRow):
                    row.details = None
        listing.remember([row.probe.addr for row in rows if isinstance(row, report.ProbeRow)])
        if args.json:
            gdb.write(jsonout.dumps(jsonout.probe_list(rows)))
        else:
            gdb.write(render.probe_list(rows, numbered=args.numbered, palette=colour.palette()))

    def complete_argument(self, text, word):
        return gdb.COMPLETE_SYMBOL


def _matches(row: report.ProbeRow, args: argparse.Namespace) -> bool:
    if args.type and row.kind != args.type:
        return False
    if args.symbol and (row.location is None or args.symbol not in row.location.symbol):
        return False
    if args.module:
        in_module = row.location is not None and row.location.module == args.module
        owned = row.details is not None and row.details.owner == f"module {args.module}"
        if not (in_module or owned):
            return False
    return True
