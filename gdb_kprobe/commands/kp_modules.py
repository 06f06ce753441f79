"""kp-modules: loaded modules (as /proc/modules), and loading their .ko symbols into gdb."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.engine import symbol_files
from gdb_kprobe.ui import jsonout, jsonout_listings, render


class KpModules(KpCommand):
    name = "kp-modules"
    arch_neutral = True       # layouts from DWARF, no instruction bytes
    summary = ("List the loaded kernel modules; with --load DIR, load the symbols of the ones "
               "whose DIR/<name>.ko exists into gdb, at their section addresses.")
    mirrors = "/proc/modules and /sys/module/<name>/sections"

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("--load", metavar="DIR", action="append", default=[],
                            help="a directory of .ko files (remembered for later loads)")
        parser.add_argument("names", nargs="*", help="only these modules")
        self.add_json_option(parser)
        return parser

    def check_args(self, args: argparse.Namespace) -> None:
        for directory in args.load:          # remembered even when no target is attached yet
            symbol_files.add_search_directory(directory)

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        found = symbol_files.module_rows(args.names, load=bool(args.load))
        if args.json:
            gdb.write(jsonout.dumps(jsonout_listings.modules(found)))
            return
        rows = [(row.module, row.path, row.state) for row in found.rows]
        gdb.write(render.module_list(rows, found.damage))

    def complete_argument(self, text, word):
        return gdb.COMPLETE_FILENAME
