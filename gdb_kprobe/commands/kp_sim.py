"""kp-sim: replay a kprobe's pre-handler → single-step → post-handler with gdb breakpoints."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe import code, guards, location, render, sim
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.errors import KpError, KpUsageError
from gdb_kprobe.kernel import anatomy, decode, kprobes


class KpSim(KpCommand):
    name = "kp-sim"
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
                                 f"{','.join(sim.DEFAULT_REGS)})")
        parser.add_argument("--ret", action="store_true",
                            help="kretprobe flow on the function named by place")
        return parser

    def run(self, args: argparse.Namespace) -> None:
        guards.require_kernel()
        place = location.resolve(args.place)
        if args.ret:
            if place.offset not in (0, 4) or place.symbol is None:
                raise KpUsageError("kp-sim --ret takes a function (a return probe is always "
                                   "at the function's entry)")
            gdb.write(render.sim_return_intro(place))
            done = sim.run_return(place.address, args.count,
                                  lambda hit: gdb.write(render.sim_return_hit(hit)))
            gdb.write(f"kp-sim: {done} return(s) reported; breakpoints removed.\n")
            return
        regs = sim.parse_regs(args.regs)
        original = decode.require_boundary(place)
        live = code.live(place.address, 1)[0]
        continuation, armed = _continuation(place, original, live)
        gdb.write(render.sim_intro(place, original, live, continuation, armed))
        done = sim.run_probe(place.address, original, continuation, args.count, regs,
                             lambda hit: gdb.write(render.sim_hit(hit, place.address)))
        gdb.write(f"kp-sim: {done} hit(s) reported; breakpoints removed.\n")

    def complete_argument(self, text, word):
        return gdb.COMPLETE_SYMBOL


def _positive(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 100000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100000, not {value}")
    return value


def _continuation(place: location.Place, original: code.Insn,
                  live: code.Insn) -> tuple[int | None, str | None]:
    """Where to take the post view when the live code is not the original one.

    A real kprobe (int3, optprobe jmp) or an ftrace call there would make stepi enter
    the kernel's own probe machinery; instead a breakpoint where execution continues
    after the kernel ran the probe gives the post view.
    """
    if live.raw == original.raw or live.asm.startswith("nop"):
        return None, None
    next_address = original.address + len(original.raw)
    if live.raw[0] == anatomy.JMP32:
        table = kprobes.read_table()
        entry = anatomy.find_entry(table, place.address)
        optimized = anatomy.optimized_probe(entry) if entry is not None else None
        if optimized is not None:
            return place.address + optimized.copied_size, (
                f"an optimized kprobe (jmp to its detour buffer at {optimized.detour:#x}): the "
                f"detour runs the {optimized.copied_size} original bytes it copied, so the "
                "post view comes after all of them")
        return next_address, "a jmp (an optprobe or a jump label) replaces the original code"
    if live.raw[0] == anatomy.INT3:
        return next_address, ("a real kprobe's int3: the kernel runs its handlers and "
                              "single-steps its copy; the post view is where it resumes")
    if live.raw[0] == anatomy.CALL32:
        return next_address, ("an ftrace call (an ftrace-based kprobe or tracer): the "
                              "trampoline runs and returns; the post view is after the call")
    covering = anatomy.optimized_region_covering(place.address)
    if covering is not None:
        start, size = covering
        raise KpError(f"{place} lies inside the {size} bytes that the optimized kprobe at "
                      f"{start:#x} moved into its detour buffer (the live bytes here are part of "
                      f"its jmp): execution never passes here while it is optimized; simulate "
                      f"at {start:#x} instead")
    raise KpError(f"the live code at {place} ({live.asm}) differs from the vmlinux "
                  f"({original.asm}) in a way kp-sim does not know; not stepping into it")
