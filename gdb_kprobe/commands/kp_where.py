"""kp-where: is this CPU inside kprobe handling, for which probe, at which stage?"""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe import guards, percpu_state, render
from gdb_kprobe.commands.base import KpCommand


class KpWhere(KpCommand):
    name = "kp-where"
    summary = ("Say whether the selected CPU is handling a kprobe: which probe, which stage "
               "(pre-handler, single-step, post-handler, kretprobe return handler) and which "
               "frame is the probed function.")

    def run(self, args: argparse.Namespace) -> None:
        guards.require_kernel()
        gdb.write(render.where(percpu_state.where()))
