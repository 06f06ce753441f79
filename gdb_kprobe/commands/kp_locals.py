"""kp-locals: the parameters and locals at a probe point, by DWARF and by stack slots."""
from __future__ import annotations

import argparse
import pathlib

import gdb

from gdb_kprobe.analysis import offsets_table, probe_locals, probe_module
from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand, palette
from gdb_kprobe.engine import breakpoints
from gdb_kprobe.errors import KpError, KpUsageError
from gdb_kprobe.kernel import places
from gdb_kprobe.ui import (jsonout, jsonout_offsets, module_source, offsets_table as offsets_text,
                          render_stop)


class KpLocals(KpCommand):
    name = "kp-locals"
    pause_collection = False       # --stop runs the target to the place
    summary = ("Show the parameters and locals in scope at a probe point, where each lives at "
               "that exact PC (register, frame-pointer or stack slot: %rbp/%rsp on x86-64, "
               "%x29/%sp on arm64; optimized out), their values when "
               "stopped there, the stack slots the code touches, and a kprobe_events line that "
               "records the same values; with --module DIR, a kprobe module that prints them.")

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
        parser.add_argument("--module", metavar="DIR",
                            help="write a kprobe module into DIR (C source and Kbuild) whose "
                                 "pre_handler prints these variables, read from struct pt_regs; "
                                 "build it with make -C <kernel headers> M=DIR")
        self.add_json_option(parser)
        return parser

    def check_args(self, args: argparse.Namespace) -> None:
        if args.module and args.offsets:
            raise KpUsageError("kp-locals: --module writes a module for one place; --offsets "
                               "lists a whole function: use one of them")
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


def _width() -> int | None:
    """gdb's `width` (None: unlimited), so the table splits its columns to fit."""
    width = gdb.parameter("width")
    return width if isinstance(width, int) and width > 0 else None


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
