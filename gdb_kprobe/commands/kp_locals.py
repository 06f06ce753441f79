"""kp-locals: the parameters and locals at a probe point, by DWARF and by stack slots."""
from __future__ import annotations

import argparse
import pathlib

import gdb

from gdb_kprobe.analysis import probe_locals, probe_module
from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.engine import breakpoints
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import places
from gdb_kprobe.ui import jsonout, module_source, render_stop


class KpLocals(KpCommand):
    name = "kp-locals"
    summary = ("Show the parameters and locals in scope at a probe point, where each lives at "
               "that exact PC (register, %rbp/%rsp slot, optimized out), their values when "
               "stopped there, the stack slots the code touches, and a kprobe_events line that "
               "records the same values; with --module DIR, a kprobe module that prints them.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("place", help="symbol+offset (inet_accept+20 or inet_accept+0x14) "
                                          "or a 0x address")
        parser.add_argument("--frame", type=int, metavar="N",
                            help="read values in frame N of the current stop (its PC is used)")
        parser.add_argument("--break", dest="stop", action="store_true",
                            help="set a breakpoint at the place, resume until it is hit, then "
                                 "print with values")
        parser.add_argument("--module", metavar="DIR",
                            help="write a kprobe module into DIR (C source and Kbuild) whose "
                                 "pre_handler prints these variables, read from struct pt_regs; "
                                 "build it with make -C <kernel headers> M=DIR")
        self.add_json_option(parser)
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        place = places.resolve(args.place)
        if args.module:
            return _write_module(place, pathlib.Path(args.module))
        if args.stop:
            breakpoints.run_to(place)
        report = probe_locals.report_at(place, args.frame)
        if args.json:
            gdb.write(jsonout.dumps(jsonout.locals_report(report)))
        else:
            gdb.write(render_stop.locals_report(report))

    def complete_argument(self, text, word):
        return self.complete_place(text, word)


def _write_module(place, directory: pathlib.Path) -> None:
    model = probe_module.build(place)
    source, kbuild = module_source.file_names(model)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / source).write_text(module_source.c_source(model))
        (directory / kbuild).write_text(module_source.kbuild(model))
    except OSError as exc:
        raise KpError(f"cannot write the module into {directory}: {exc.strerror}") from None
    unread = sum(1 for read in model.reads if read.expression is None)
    gdb.write(f"wrote {directory / source} and {directory / kbuild}: {model.module_name} prints "
              f"{len(model.reads) - unread} variables at {model.place}"
              f"{f' ({unread} without a location there, as comments)' if unread else ''}; "
              f"build with make -C <headers of {model.kernel}> M={directory}\n")
