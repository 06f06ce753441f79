"""kp-sim: replay a kprobe's pre-handler → single-step → post-handler with gdb breakpoints."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe import arch
from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.engine import sim
from gdb_kprobe.errors import KpUsageError
from gdb_kprobe.kernel import places
from gdb_kprobe.ui import jsonout, jsonout_stop, render_stop


class KpSim(KpCommand):
    name = "kp-sim"
    pause_collection = False       # runs the target to the place
    summary = ("Replay what a kprobe at a place would see, with gdb breakpoints: the "
               "registers a pre_handler gets, one instruction executed, the registers a "
               "post_handler gets. --ret replays a kretprobe: arguments at entry, the return "
               "value and the elapsed guest time when that call returns.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("place", help="symbol+offset (decimal or 0x offset), or with --ret "
                                          "a function")
        parser.add_argument("-c", "--count", type=_positive, default=1,
                            help="how many hits to report (default 1)")
        parser.add_argument("--regs", metavar="LIST",
                            help="comma-separated pt_regs names (default "
                                 f"{','.join(arch.DEFAULT_SIM_REGS)})")
        parser.add_argument("--ret", action="store_true",
                            help="kretprobe flow on the function named by place")
        self.add_json_option(parser)
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        place = places.resolve(args.place)
        if args.ret:
            self._run_return(place, args)
            return
        found = sim.plan(place, sim.parse_regs(args.regs))
        if args.json:
            # one document once every hit is in: nothing is printed while waiting
            hits: list[sim.Hit] = []
            sim.run_probe(place.address, found.original, found.after, args.count, found.regs,
                          hits.append)
            gdb.write(jsonout.dumps(jsonout_stop.sim_probe(found, hits)))
            return
        after = found.after
        gdb.write(render_stop.sim_intro(place, found.original, found.live,
                                        after.address if after else None,
                                        after.why if after else None))
        done = sim.run_probe(place.address, found.original, after, args.count, found.regs,
                             lambda hit: gdb.write(render_stop.sim_hit(hit, place.address)))
        gdb.write(f"kp-sim: {done} hit(s) reported; breakpoints removed.\n")

    def _run_return(self, place, args: argparse.Namespace) -> None:
        """--ret: the kretprobe flow on a function."""
        if place.offset not in (0, 4) or place.symbol is None:
            raise KpUsageError("kp-sim --ret takes a function (a return probe is always "
                               "at the function's entry)")
        if args.json:
            hits: list[sim.ReturnHit] = []
            sim.run_return(place.address, args.count, hits.append)
            gdb.write(jsonout.dumps(jsonout_stop.sim_return(place, hits)))
            return
        gdb.write(render_stop.sim_return_intro(place))
        done = sim.run_return(place.address, args.count,
                              lambda hit: gdb.write(render_stop.sim_return_hit(hit)))
        gdb.write(f"kp-sim: {done} return(s) reported; breakpoints removed.\n")

    def complete_argument(self, text, word):
        return self.complete_place(text, word)


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 100000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100000, not {value}")
    return value
