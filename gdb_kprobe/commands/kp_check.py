"""kp-check: would register_kprobe() accept this place, and if not, why."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.kernel import checks
from gdb_kprobe.ui import render


class KpCheck(KpCommand):
    name = "kp-check"
    summary = ("Say whether a kprobe could be registered at a place (as `p SPEC` in "
               "kprobe_events or register_kprobe()), the errno the kernel would return if not, "
               "and whether it would be ftrace-based or optimizable.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("places", nargs="+", metavar="place",
                            help="symbol[+offset] or module:symbol[+offset], as kprobe_events "
                                 "takes it")
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        gdb.write("".join(render.verdict(checks.check(place)) for place in args.places))

    def complete_argument(self, text, word):
        return gdb.COMPLETE_SYMBOL
