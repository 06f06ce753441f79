"""kp-locals: the parameters and locals at a probe point, by DWARF and by stack slots."""
from __future__ import annotations

import argparse
import dataclasses

import gdb

from gdb_kprobe import guards, jsonout, location, prologue, render, scope, sim
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import anatomy, decode

# gdb's x86-64 register names → the pt_regs names kprobe_events fetch args use
FETCH_REG = {"rax": "ax", "rbx": "bx", "rcx": "cx", "rdx": "dx", "rsi": "si", "rdi": "di",
             "rbp": "bp", "rsp": "sp", **{f"r{n}": f"r{n}" for n in range(8, 16)}}


@dataclasses.dataclass
class LocalsReport:
    place: location.Place
    function_line: str
    facts: prologue.Prologue
    variables: list[scope.Variable]
    placement: dict[str, str]              # name → where it is at this PC
    values: dict[str, str] | None          # when stopped there
    frame_level: int | None
    cfa: int | None                        # when stopped there
    slots: list[tuple[prologue.Slot, str, str | None]]   # slot, owner name, current value
    fetch_line: str
    not_expressible: list[str]


class KpLocals(KpCommand):
    name = "kp-locals"
    summary = ("Show the parameters and locals in scope at a probe point, where each lives at "
               "that exact PC (register, %rbp/%rsp slot, optimized out), their values when "
               "stopped there, the stack slots the code touches, and a kprobe_events line that "
               "records the same values.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("place", help="symbol+offset (inet_accept+20 or inet_accept+0x14) "
                                          "or a 0x address")
        parser.add_argument("--frame", type=int, metavar="N",
                            help="read values in frame N of the current stop (its PC is used)")
        parser.add_argument("--break", dest="stop", action="store_true",
                            help="set a breakpoint at the place, resume until it is hit, then "
                                 "print with values")
        self.add_json_option(parser)
        return parser

    def run(self, args: argparse.Namespace) -> None:
        guards.require_kernel()
        place = location.resolve(args.place)
        insn = decode.require_boundary(place)
        if args.stop:
            covering = anatomy.optimized_region_covering(place.address)
            if covering is not None:
                raise KpError(f"{place} lies inside the {covering[1]} bytes that the optimized "
                              f"kprobe at {covering[0]:#x} moved into its detour buffer: it is "
                              "never executed there while that probe is optimized; pick a place "
                              "outside it")
            sim.run_until(place.address)
        frame, level = _frame_at(place.address, args.frame)
        if args.frame is not None:
            place = location.resolve(f"{frame.pc():#x}")
        report = build(place, frame, level)
        if args.json:
            gdb.write(jsonout.dumps(jsonout.locals_report(report)))
        else:
            gdb.write(render.locals_report(report))

    def complete_argument(self, text, word):
        return gdb.COMPLETE_SYMBOL


def _frame_at(address: int, wanted: int | None) -> tuple[gdb.Frame | None, int | None]:
    frame = gdb.newest_frame()
    level = 0
    while frame is not None and level < 64:
        if (wanted is None and frame.pc() == address) or level == wanted:
            return frame, level
        frame = frame.older()
        level += 1
    if wanted is not None:
        raise KpError(f"no frame {wanted} in the current backtrace")
    return None, None


def build(place: location.Place, frame: gdb.Frame | None, level: int | None) -> LocalsReport:
    start = place.address - place.offset
    boundary = decode.check(place)
    facts, slots = prologue.analyse(boundary.function_insns, place.address)
    variables = scope.variables_at(place.address)
    placement = {v.name: _placement(v, facts) for v in variables}
    values = scope.values(frame, [v.name for v in variables]) if frame is not None else None
    cfa = None
    if frame is not None:
        registers = sim.frame_registers(frame, ["rsp", "rbp"])
        cfa = registers["rbp"] + 16 if facts.frame_pointer else registers["rsp"] + facts.cfa_from_rsp
    owners = {v.offset: v.name for v in variables if v.where == "cfa"}
    seen = set()
    slot_rows = []
    for slot in slots:
        key = slot.cfa_offset
        if key is None or key in seen:
            continue
        seen.add(key)
        current = sim.read_slot(cfa + key) if cfa is not None else None
        slot_rows.append((slot, owners.get(key), current))
    fetch, missing = _fetch_line(place, variables, facts)
    line = gdb.find_pc_line(place.address)
    where = f"{line.symtab.filename}:{line.line}" if line.symtab else "no line info"
    return LocalsReport(place, where, facts, variables, placement, values, level, cfa, slot_rows,
                        fetch, missing)


def _placement(variable: scope.Variable, facts: prologue.Prologue) -> str:
    if variable.where == "register":
        return f"%{variable.register}"
    if variable.where == "cfa":
        cfa_text = f"CFA{variable.offset:+#x}"
        if facts.frame_pointer:
            return f"{variable.offset + 16:+#x}(%rbp)  [{cfa_text}]"
        from_rsp = facts.cfa_from_rsp + variable.offset
        if from_rsp < 0:
            return f"{cfa_text}: below %rsp, not allocated yet at this PC"
        return f"{from_rsp:+#x}(%rsp)  [{cfa_text}]"
    if variable.where == "regoffset":
        return f"{variable.offset:+#x}(%{variable.register})"
    if variable.where == "static":
        return f"static at {variable.address:#x}"
    if variable.where == "entry":
        return f"entry value of %{variable.register}: not recoverable at this PC"
    return variable.detail or "optimized out"


def _type_suffix(variable: scope.Variable) -> str | None:
    if variable.is_pointer:
        return "x64"
    if variable.is_struct or variable.size not in (1, 2, 4, 8):
        return None
    return f"{'s' if variable.signed else 'u'}{variable.size * 8}"


def _fetch_line(place: location.Place, variables: list[scope.Variable],
                facts: prologue.Prologue) -> tuple[str, list[str]]:
    """A kprobe_events line (Documentation/trace/kprobetrace.rst fetch args)."""
    args, missing = [], []
    for variable in variables:
        suffix = _type_suffix(variable)
        fetch = None
        if suffix is None:
            missing.append(f"{variable.name} ({variable.type_name}: a struct is not a fetch "
                           "type)")
            continue
        if variable.where == "register" and variable.register in FETCH_REG:
            fetch = f"%{FETCH_REG[variable.register]}"
        elif variable.where == "cfa":
            if facts.frame_pointer:
                fetch = f"{variable.offset + 16:+d}(%bp)"
            elif facts.cfa_from_rsp + variable.offset >= 0:
                fetch = f"{facts.cfa_from_rsp + variable.offset:+d}(%sp)"
        elif variable.where == "regoffset" and variable.register in FETCH_REG:
            fetch = f"{variable.offset:+d}(%{FETCH_REG[variable.register]})"
        elif variable.where == "static" and variable.address is not None:
            fetch = f"@{variable.address:#x}"
        if fetch is None:
            missing.append(f"{variable.name} ({_placement(variable, facts)})")
            continue
        args.append(f"{variable.name}={fetch}:{suffix}")
    where = f"{place.symbol}+{place.offset}" if place.symbol else f"{place.address:#x}"
    return " ".join([f"p:kp_locals {where}", *args]), missing
