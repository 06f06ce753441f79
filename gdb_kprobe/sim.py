"""The kp-sim engine: replay a kprobe's pre-handler → single-step → post-handler with
gdb breakpoints, on the running target.

This module drives execution (breakpoints, continue, stepi) and reads registers;
it never leaves a breakpoint behind: every breakpoint it places is deleted in a
`finally`, whatever ends the run (Ctrl-C, a gdb error, the target going away).
"""
from __future__ import annotations

import dataclasses
import time

import gdb

from gdb_kprobe import code, symbols, target, types
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import percpu

# struct pt_regs names (what handlers print) → gdb's x86-64 register names
PT_REGS = {"ip": "rip", "ax": "rax", "bx": "rbx", "cx": "rcx", "dx": "rdx", "si": "rsi",
           "di": "rdi", "bp": "rbp", "sp": "rsp", "r8": "r8", "r9": "r9", "r10": "r10",
           "r11": "r11", "r12": "r12", "r13": "r13", "r14": "r14", "r15": "r15",
           "flags": "eflags"}
DEFAULT_REGS = ["ip", "ax", "di", "si", "dx", "cx", "sp", "flags"]   # as the lab module prints


def parse_regs(text: str | None) -> list[str]:
    if not text:
        return list(DEFAULT_REGS)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    reverse = {v: k for k, v in PT_REGS.items()}
    chosen = []
    for name in names:
        name = reverse.get(name, name)
        if name not in PT_REGS:
            raise KpError(f"unknown register `{name}`; use pt_regs names: "
                          f"{', '.join(PT_REGS)}")
        chosen.append(name)
    if "ip" not in chosen:
        chosen.insert(0, "ip")
    return chosen


def read_regs(names: list[str]) -> dict[str, int]:
    frame = gdb.newest_frame()
    return {name: int(frame.read_register(PT_REGS[name])) & ((1 << 64) - 1) for name in names}


@dataclasses.dataclass
class Hit:
    number: int
    cpu: int
    task: str | None
    pre: dict[str, int]
    post: dict[str, int] | None
    executed: list[code.Insn]          # what ran between pre and post (original code)
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


def current_task(cpu: int) -> int | None:
    """task_struct * running on `cpu` (per-CPU current_task, or pcpu_hot on 6.2+)."""
    table = symbols.kernel()
    offsets = percpu.offsets()
    if table.address_of("pcpu_hot") is not None:
        hot = types.layout("struct pcpu_hot")
        slot = table.address_of("pcpu_hot") + hot.offset("current_task") + offsets[cpu]
    elif table.address_of("current_task") is not None:
        slot = table.address_of("current_task") + offsets[cpu]
    else:
        return None
    return target.read_u64(slot)


def current_task_comm() -> str | None:
    """comm[pid] of the task on the stopped CPU."""
    try:
        cpu = gdb.selected_thread().num - 1          # QEMU's gdbstub: one thread per vCPU
        task = current_task(cpu)
        if task is None:
            return None
        task_layout = types.layout("struct task_struct")
        # a task names itself (prctl PR_SET_NAME): escape what it may put there
        comm = types.printable(target.read_cstring(task + task_layout.offset("comm"), 16))
        return f"{comm}[{_pid(task, task_layout)}]"
    except (KpError, gdb.error, IndexError):
        return None


def _pid(task: int, layout: types.Layout) -> int:
    field = layout.field("pid")
    return int.from_bytes(target.read(task + field.offset, 4), "little", signed=True)


def guest_clock_ns() -> int | None:
    """The guest's own clock, read from kernel memory: the newest scheduler timestamp of
    any CPU (max of per-CPU runqueues' rq->clock, sched_clock ns since boot). It is
    updated at every scheduler event, so it is fresh even on an idle NOHZ guest where
    timekeeping (tk_core) may be a second behind; host time spent in gdb never counts."""
    try:
        rq = types.layout("struct rq")
        offset = rq.offset("clock")
        return max(target.read_u64(base + offset) for base in percpu.addresses("runqueues"))
    except (KpError, gdb.error, ValueError):
        return None


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
            previous = gdb.parameter("trust-readonly-sections")
            gdb.execute("set trust-readonly-sections on", to_string=True)
            try:
                bp = gdb.Breakpoint(f"*{address:#x}", internal=True)
            finally:
                if not previous:
                    gdb.execute("set trust-readonly-sections off", to_string=True)
        else:
            bp = gdb.Breakpoint(f"*{address:#x}", internal=True)
        bp.silent = True
        self.placed.append(bp)
        return bp

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
    try:
        return target.read(address, 1) == b"\xcc"
    except KpError:
        return False


def refuse_live_int3(address: int) -> None:
    """A gdb breakpoint must not sit on an int3 the kernel wrote (a kprobe's): resuming
    from it, gdb takes the int3 for a permanent breakpoint and steps over it, so neither
    the kprobe nor the instruction it replaced would run, and the guest goes wrong."""
    try:
        live = target.read(address, 1)
    except KpError:
        return
    if live == b"\xcc":
        raise KpError(f"a kprobe's int3 is live at {address:#x}: gdb would step over it as a "
                      "permanent breakpoint, skipping the probe and the instruction it "
                      "replaced; use a neighbouring instruction, or disable the probe")


def _resume() -> None:
    gdb.execute("continue", to_string=True)


def _step_this_cpu_only() -> None:
    """stepi with the other vCPUs held, so none of them runs into our breakpoint."""
    previous = gdb.parameter("scheduler-locking")
    gdb.execute("set scheduler-locking step", to_string=True)
    try:
        gdb.execute("stepi", to_string=True)
    finally:
        gdb.execute(f"set scheduler-locking {previous}", to_string=True)


def _stopped_at() -> int | None:
    if gdb.selected_thread() is None:
        raise KpError("the target went away during kp-sim")
    return int(gdb.newest_frame().pc())


def run_probe(address: int, original: code.Insn, continuation: int | None, count: int,
              regs: list[str], report) -> int:
    """Stop at `address` `count` times; call report(Hit) for each. Returns the hits done.

    `continuation` is where to take the post view when the live instruction is not the
    original (a real kprobe is armed): a breakpoint there instead of stepi.
    """
    hits = 0
    with Breakpoints() as bps:
        entry = bps.add(address)
        while hits < count:
            _resume()
            pc = _stopped_at()
            if pc != address:
                raise KpError(f"kp-sim: stopped at {pc:#x} (interrupted?) after {hits} of "
                              f"{count} hits; breakpoints removed")
            cpu = gdb.selected_thread().num - 1
            pre = read_regs(regs)
            task = current_task_comm()
            if continuation is None:
                _step_this_cpu_only()
                how = "stepi"
            else:
                entry.enabled = False
                after = bps.add(continuation)
                after.thread = gdb.selected_thread().num
                _resume()
                after.delete()
                bps.placed.remove(after)
                entry.enabled = True
                how = "continuation breakpoint"
                if _stopped_at() != continuation:
                    raise KpError(f"kp-sim: expected to stop at {continuation:#x} but stopped "
                                  f"at {_stopped_at():#x}; breakpoints removed")
            post = read_regs(regs)
            hits += 1
            report(Hit(hits, cpu, task, pre, post, [original], how))
    return hits


def run_until(address: int) -> None:
    """Resume until `address` is hit once (for kp-locals --break)."""
    with Breakpoints() as bps:
        bps.add(address)
        _resume()
        pc = _stopped_at()
        if pc != address:
            raise KpError(f"stopped at {pc:#x} before reaching {address:#x} (interrupted?); "
                          "breakpoint removed")


def frame_registers(frame: gdb.Frame, names: list[str]) -> dict[str, int]:
    return {name: int(frame.read_register(name)) & ((1 << 64) - 1) for name in names}


def read_slot(address: int) -> str:
    try:
        return f"{target.read_u64(address):#018x}"
    except KpError:
        return "<unreadable>"


ARG_REGS = ["di", "si", "dx", "cx", "r8", "r9"]


def run_return(entry_address: int, count: int, report) -> int:
    """kretprobe flow: at entry note sp, return address, arguments and the guest clock;
    a breakpoint on the return address reports the return value when *that* frame
    returns (sp = entry sp + 8), so recursion and other tasks are not confused."""
    done = 0
    pending: dict[int, tuple[int, dict[str, int], int | None, int]] = {}   # sp after ret → …
    returns: dict[int, gdb.Breakpoint] = {}
    with Breakpoints() as bps:
        bps.add(entry_address)
        while done < count:
            _resume()
            pc = _stopped_at()
            regs = read_regs(["ip", "sp", *ARG_REGS, "ax"])
            if pc == entry_address:
                sp = regs["sp"]
                return_address = target.read_u64(sp)
                pending[sp + 8] = (return_address, {r: regs[r] for r in ARG_REGS},
                                   guest_clock_ns(), sp)
                if return_address not in returns:
                    returns[return_address] = bps.add(return_address)
                continue
            if pc in returns and regs["sp"] in pending:
                return_address, args, started, entry_sp = pending.pop(regs["sp"])
                now = guest_clock_ns()
                elapsed = now - started if now is not None and started is not None else None
                done += 1
                report(ReturnHit(gdb.selected_thread().num - 1, current_task_comm(), entry_sp,
                                 return_address, args, regs["ax"], elapsed))
                continue
            if pc in returns:
                continue        # another call returning to the same place: not ours
            raise KpError(f"kp-sim: stopped at {pc:#x} (interrupted?) after {done} of {count} "
                          "returns; breakpoints removed")
    return done
