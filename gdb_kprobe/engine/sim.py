"""The kp-sim engine: replay a kprobe's pre-handler → single-step → post-handler with
gdb breakpoints, on the running target; and a kretprobe's entry → return.

This module drives execution (breakpoints, continue, stepi) and reads registers; the
breakpoints it places never stay behind (engine/breakpoints.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import gdb

from gdb_kprobe import arch
from gdb_kprobe.engine.breakpoints import (Breakpoints, resume, step_this_cpu_only,
                                           stopped_at)
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import anatomy, decode, sched
from gdb_kprobe.kernel.anatomy import Continuation
from gdb_kprobe.kernel.places import Place
from gdb_kprobe.target import context, disasm, memory

__all__ = ["Plan", "Hit", "ReturnHit", "parse_regs", "plan", "run_probe", "run_return"]


@dataclasses.dataclass
class Plan:
    """What a kp-sim run at a place will do, before any hit: the instruction there in the
    vmlinux and live, and where the post view is taken when a real probe is armed."""

    place: Place
    original: disasm.Insn
    live: disasm.Insn
    after: Continuation | None        # None: the live code is the original, stepi it
    regs: list[str]


def plan(place: Place, regs: list[str]) -> Plan:
    """Refuse a place that is no instruction boundary; see what is live there."""
    original = decode.require_boundary(place)
    live = disasm.live(place.address, 1)[0]
    return Plan(place, original, live, anatomy.continuation(place, original, live), regs)


def parse_regs(text: str | None) -> list[str]:
    """--regs: pt_regs names (gdb's names are taken too), the pc (ip) always first."""
    if not text:
        return list(arch.DEFAULT_SIM_REGS)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    reverse = {v: k for k, v in arch.PT_REGS.items()}
    chosen = []
    for name in names:
        name = reverse.get(name, name)
        if name not in arch.PT_REGS:
            raise KpError(f"unknown register `{name}`; use pt_regs names: "
                          f"{', '.join(arch.PT_REGS)}")
        chosen.append(name)
    if arch.PT_REGS_PC not in chosen:
        chosen.insert(0, arch.PT_REGS_PC)
    return chosen


@dataclasses.dataclass
class Hit:
    number: int
    cpu: int
    task: str | None
    pre: dict[str, int]
    post: dict[str, int] | None
    executed: list[disasm.Insn]          # what ran between pre and post (original code)
    how: str                           # "stepi" or "continuation breakpoint"


@dataclasses.dataclass
class ReturnHit:
    cpu: int
    task: str | None
    entry_sp: int
    return_address: int
    args: dict[str, int]
    retval: int
    elapsed_ns: int | None


def run_probe(address: int, original: disasm.Insn, after: Continuation | None, count: int,
              regs: list[str], report: Callable[[Hit], None]) -> int:
    """Stop at `address` `count` times; call report(Hit) for each. Returns the hits done.

    `after` is where to take the post view when the live instruction is not the original
    (a real kprobe is armed): a breakpoint there instead of stepi.
    """
    hits = 0
    with Breakpoints() as bps:
        entry = bps.add(address)
        while hits < count:
            resume()
            pc = stopped_at()
            if pc != address:
                raise KpError(f"kp-sim: stopped at {pc:#x} (interrupted?) after {hits} of "
                              f"{count} hits; breakpoints removed")
            cpu = context.current_cpu()
            pre = context.newest_registers(regs)
            # what the pre_handler gets: x86's regs->ip past the int3 (or made to look so),
            # arm64's regs->pc at the brk
            pre[arch.PT_REGS_PC] = address + arch.PRE_HANDLER_PC_DELTA
            task = sched.current_task_name()
            how = "stepi" if after is None else "continuation breakpoint"
            if after is None:
                step_this_cpu_only()
            else:
                _run_to_continuation(bps, entry, after.address)
            hits += 1
            report(Hit(hits, cpu, task, pre, context.newest_registers(regs), [original], how))
    return hits


def _run_to_continuation(bps: Breakpoints, entry: gdb.Breakpoint, address: int) -> None:
    """Past the kernel's own probe: a breakpoint where execution continues, on this CPU."""
    entry.enabled = False
    after = bps.add(address)
    after.thread = gdb.selected_thread().num
    resume()
    bps.remove(after)
    entry.enabled = True
    if stopped_at() != address:
        raise KpError(f"kp-sim: expected to stop at {address:#x} but stopped "
                      f"at {stopped_at():#x}; breakpoints removed")


def run_return(entry_address: int, count: int,
               report: Callable[[ReturnHit], None]) -> int:
    """kretprobe flow: at entry note sp, return address, arguments and the guest clock;
    a breakpoint on the return address reports the return value when *that* frame
    returns (sp as arch.entry_return() says: x86's entry sp + 8, arm64's entry sp), so
    recursion and other tasks are not confused."""
    done = 0
    pending: dict[int, tuple[int, dict[str, int], int | None, int]] = {}   # sp after ret → …
    returns: dict[int, gdb.Breakpoint] = {}
    with Breakpoints() as bps:
        bps.add(entry_address)
        while done < count:
            resume()
            pc = stopped_at()
            regs = context.newest_registers([arch.PT_REGS_PC, "sp", *arch.ARG_REGS,
                                             *arch.ENTRY_RETURN_REGS, arch.PT_REGS_RETVAL])
            if pc == entry_address:
                sp = regs["sp"]
                return_address, sp_after = arch.entry_return(regs, memory.read_u64)
                pending[sp_after] = (return_address, {r: regs[r] for r in arch.ARG_REGS},
                                     sched.guest_clock_ns(), sp)
                if return_address not in returns:
                    returns[return_address] = bps.add(return_address)
                continue
            if pc in returns and regs["sp"] in pending:
                return_address, args, started, entry_sp = pending.pop(regs["sp"])
                now = sched.guest_clock_ns()
                elapsed = now - started if now is not None and started is not None else None
                done += 1
                report(ReturnHit(context.current_cpu(), sched.current_task_name(), entry_sp,
                                 return_address, args, regs[arch.PT_REGS_RETVAL], elapsed))
                continue
            if pc in returns:
                continue        # another call returning to the same place: not ours
            raise KpError(f"kp-sim: stopped at {pc:#x} (interrupted?) after {done} of {count} "
                          "returns; breakpoints removed")
    return done
