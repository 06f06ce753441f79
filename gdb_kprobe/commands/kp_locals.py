"""kp-locals: the parameters and locals at a probe point, by DWARF and by stack slots."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.analysis import offsets_table, probe_locals
from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand, palette
from gdb_kprobe.engine import breakpoints
from gdb_kprobe.errors import KpUsageError
from gdb_kprobe.kernel import places
from gdb_kprobe.ui import jsonout, jsonout_offsets, offsets_table as offsets_text, render_stop


class KpLocals(KpCommand):
    name = "kp-locals"
    summary = ("Show the parameters and locals in scope at a probe point, where each lives at "
               "that exact PC (register, %rbp/%rsp slot, optimized out), their values when "
               "stopped there, the stack slots the code touches, and a kprobe_events line that "
               "records the same values.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("place", help="symbol+offset (inet_accept+20 or inet_accept+0x14) "
                                          "or a 0x address; with --offsets a function "
                                          "(inet_accept or module:function)")
        parser.add_argument("--frame", type=int, metavar="N",
                            help="read values in frame N of the current stop (its PC is used)")
        parser.add_argument("--break", dest="stop", action="store_true",
                            help="set a breakpoint at the place, resume until it is hit, then "
                                 "print with values")
        parser.add_argument("--offsets", action="store_true",
                            help="a table of the whole function: each instruction boundary a "
                                 "row (runs of identical rows grouped), each parameter and "
                                 "local a column saying where it lives there, and whether "
                                 "kprobe_events takes a probe there (kp-check's verdict)")
        self.add_json_option(parser)
        return parser

    def check_args(self, args: argparse.Namespace) -> None:
        if args.offsets and (args.stop or args.frame is not None):
            raise KpUsageError("kp-locals: --offsets shows a whole function without values; "
                               "it takes neither --break nor --frame")

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        if args.offsets:
            table = offsets_table.build(args.place)
            gdb.write(jsonout.dumps(jsonout_offsets.offsets_table(table)) if args.json else
                      offsets_text.render(table, palette(), _width()))
            return
        place = places.resolve(args.place)
        if args.stop:
            breakpoints.run_to(place)
        report = probe_locals.report_at(place, args.frame)
        if args.json:
            gdb.write(jsonout.dumps(jsonout.locals_report(report)))
        else:
            gdb.write(render_stop.locals_report(report))

    def complete_argument(self, text, word):
        return self.complete_place(text, word)


def _width() -> int | None:
    """gdb's `width` (None: unlimited), so the table splits its columns to fit."""
    width = gdb.parameter("width")
    return width if isinstance(width, int) and width > 0 else None
