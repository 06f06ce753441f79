"""kp-where: is this CPU inside kprobe handling, for which probe, at which stage?"""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.analysis import where
from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.ui import jsonout, jsonout_stop, render_stop


class KpWhere(KpCommand):
    name = "kp-where"
    summary = ("Say whether the selected CPU is handling a kprobe: which probe, which stage "
               "(pre-handler, single-step, post-handler, kretprobe return handler) and which "
               "frame is the probed function.")

    def build_parser(self):
        parser = super().build_parser()
        self.add_json_option(parser)
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        found = where.where()
        if args.json:
            gdb.write(jsonout.dumps(jsonout_stop.where(found)))
        else:
            gdb.write(render_stop.where(found))
