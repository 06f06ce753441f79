"""Breakpoints that never stay behind, and the moves that run the target to one.

Every breakpoint placed here is deleted in a `finally`, whatever ends the run (Ctrl-C, a
gdb error, the target going away). A breakpoint on a kprobe's live int3 is made an
ordinary one (see `Breakpoints.add`).
"""
from __future__ import annotations

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import anatomy, decode
from gdb_kprobe.kernel.places import Place
from gdb_kprobe.target import context, memory, symbols

__all__ = ["Breakpoints", "refuse_live_int3", "resume", "step_this_cpu_only", "stopped_at",
           "run_until", "run_to"]


class Breakpoints:
    """Breakpoints placed by one run; all deleted on exit, whatever happened."""

    def __init__(self) -> None:
        self.placed: list[gdb.Breakpoint] = []

    def add(self, address: int) -> gdb.Breakpoint:
        if _live_int3(address):
            if not symbols.in_kernel_image(address):
                refuse_live_int3(address)
            # gdb marks a breakpoint on an int3 it finds in memory as "permanent" and would
            # step over that int3 on resume, so the kprobe would never run. Created while gdb
            # reads the vmlinux's original byte instead, the breakpoint is an ordinary one:
            # on resume gdb single-steps the CPU into the int3 and the kprobe fires.
            with context.setting("trust-readonly-sections", "on"):
                bp = gdb.Breakpoint(f"*{address:#x}", internal=True)
        else:
            bp = gdb.Breakpoint(f"*{address:#x}", internal=True)
        bp.silent = True
        self.placed.append(bp)
        return bp

    def remove(self, bp: gdb.Breakpoint) -> None:
        bp.delete()
        self.placed.remove(bp)

    def __enter__(self) -> "Breakpoints":
        return self

    def __exit__(self, *exc) -> None:
        for bp in self.placed:
            try:
                if bp.is_valid():
                    bp.delete()
            except (gdb.error, RuntimeError):
                pass
        self.placed.clear()


def _live_int3(address: int) -> bool:
    """Is a kprobe's trap live at `address` (x86's int3, arm64's brk #0x4)? gdb takes
    either for a permanent breakpoint."""
    try:
        return arch.probe_trap(memory.read(address, arch.SITE_BYTES)) == arch.TRAP_MECHANISM
    except KpError:
        return False


def refuse_live_int3(address: int) -> None:
    """A gdb breakpoint must not sit on an int3 the kernel wrote (a kprobe's): resuming
    from it, gdb takes the int3 for a permanent breakpoint and steps over it, so neither
    the kprobe nor the instruction it replaced would run, and the guest goes wrong."""
    if _live_int3(address):
        raise KpError(f"a kprobe's {arch.TRAP_MECHANISM} is live at {address:#x}: gdb would "
                      "step over it as a "
                      "permanent breakpoint, skipping the probe and the instruction it "
                      "replaced; use a neighbouring instruction, or disable the probe")


def resume() -> None:
    gdb.execute("continue", to_string=True)


def step_this_cpu_only() -> None:
    """stepi with the other vCPUs held, so none of them runs into our breakpoint."""
    with context.setting("scheduler-locking", "step"):
        gdb.execute("stepi", to_string=True)


def stopped_at() -> int:
    """The PC the target stopped at; KpError when it went away meanwhile."""
    if gdb.selected_thread() is None:
        raise KpError("the target went away during kp-sim")
    return int(gdb.newest_frame().pc())


def run_until(address: int) -> None:
    """Resume until `address` is hit once."""
    with Breakpoints() as bps:
        bps.add(address)
        resume()
        pc = stopped_at()
        if pc != address:
            raise KpError(f"stopped at {pc:#x} before reaching {address:#x} (interrupted?); "
                          "breakpoint removed")


def run_to(place: Place) -> None:
    """kp-locals --break: resume until `place` runs, refusing a place that never will (inside
    an instruction, or inside the bytes an optimized kprobe moved away)."""
    decode.require_boundary(place)
    anatomy.refuse_inside_optimized(place, "pick a place outside it")
    run_until(place.address)
