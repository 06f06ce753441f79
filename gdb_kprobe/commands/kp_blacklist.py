"""kp-blacklist: the kprobe blacklist, as /sys/kernel/debug/kprobes/blacklist shows it."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.kernel import blacklist
from gdb_kprobe.ui import jsonout, jsonout_listings, render


class KpBlacklist(KpCommand):
    name = "kp-blacklist"
    arch_neutral = True       # layouts from DWARF, no instruction bytes
    summary = "List the address ranges kprobes may not be placed in, as debugfs does."
    mirrors = "/sys/kernel/debug/kprobes/blacklist (kernel/kprobes.c: kprobe_blacklist_seq_show)"

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("pattern", nargs="?", help="only entries whose symbol contains this")
        self.add_json_option(parser)
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        found = blacklist.listing(args.pattern)
        if args.json:
            # no match is an empty "entries" beside the "total" it was picked from
            gdb.write(jsonout.dumps(jsonout_listings.blacklist(found)))
            return
        if args.pattern and not found.rows:
            gdb.write(f"kp-blacklist: no entry's symbol contains `{args.pattern}` (of "
                      f"{found.total} entries)\n")
        gdb.write(render.blacklist(found.rows, found.damage))

    def complete_argument(self, text, word):
        return self.complete_place(text, word)
