"""kp-where: is this CPU inside kprobe handling, for which probe, at which stage?"""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.analysis import where
from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.ui import render_stop


class KpWhere(KpCommand):
    name = "kp-where"
    summary = ("Say whether the selected CPU is handling a kprobe: which probe, which stage "
               "(pre-handler, single-step, post-handler, kretprobe return handler) and which "
               "frame is the probed function.")

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        gdb.write(render_stop.where(where.where()))
