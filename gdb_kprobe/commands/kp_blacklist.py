"""kp-blacklist: the kprobe blacklist, as /sys/kernel/debug/kprobes/blacklist shows it."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe import guards, render
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.kernel import checks
from gdb_kprobe.kernel.kallsyms import Symbolizer


class KpBlacklist(KpCommand):
    name = "kp-blacklist"
    summary = "List the address ranges kprobes may not be placed in, as debugfs does."
    mirrors = "/sys/kernel/debug/kprobes/blacklist (kernel/kprobes.c: kprobe_blacklist_seq_show)"

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("pattern", nargs="?", help="only entries whose symbol contains this")
        return parser

    def run(self, args: argparse.Namespace) -> None:
        guards.require_kernel()
        walk = checks.read_blacklist()
        symbolizer = Symbolizer()
        rows = [(entry, symbolizer.lookup(entry.start)) for entry in walk.items]
        if args.pattern:
            rows = [(e, loc) for e, loc in rows if loc and args.pattern in loc.symbol]
        gdb.write(render.blacklist(rows, [walk.damage] if walk.damage else []))

    def complete_argument(self, text, word):
        return gdb.COMPLETE_SYMBOL
