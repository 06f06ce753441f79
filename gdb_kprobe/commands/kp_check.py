"""kp-check: would register_kprobe() accept this place, and if not, why."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.kernel import checks
from gdb_kprobe.ui import jsonout, render


class KpCheck(KpCommand):
    name = "kp-check"
    summary = ("Say whether the kernel would take a kprobe at a place, through each of its two "
               "interfaces: register_kprobe() from a module, and a `p PLACE` line in "
               "kprobe_events (which also wants an ftrace call site in the function, a unique "
               "symbol, an entry for %return); the errno and why if not; where the probe "
               "would land and whether it would be ftrace-based or optimizable.")
    mirrors = "what /sys/kernel/tracing/kprobe_events and register_kprobe() answer"

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("places", nargs="+", metavar="place",
                            help="a place as kprobe_events takes it: SYM[+OFFS], MOD:SYM[+OFFS], "
                                 "SYM%%return, or an address (0x..., octal 0..., decimal)")
        self.add_json_option(parser)
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        results = [checks.check(place) for place in args.places]
        if args.json:
            gdb.write(jsonout.dumps(jsonout.verdicts(results)))
        else:
            gdb.write("".join(render.verdict(result) for result in results))

    def complete_argument(self, text, word):
        return self.complete_place(text, word)
