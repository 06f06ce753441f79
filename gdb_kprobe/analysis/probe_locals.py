"""kp-locals' model: the parameters and locals at a PC, where each lives there, their values
in a frame stopped there, the stack slots the code touches, and a kprobe_events line that
fetches the same values (Documentation/trace/kprobetrace.rst)."""
from __future__ import annotations

import dataclasses

import gdb

from gdb_kprobe import arch
from gdb_kprobe.analysis import prologue, scope
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import decode, places
from gdb_kprobe.target import cfi, context, memory

__all__ = ["LocalsReport", "report_at", "build", "fetch_line", "placement"]


@dataclasses.dataclass
class LocalsReport:
    """Everything kp-locals prints about one place."""

    place: places.Place
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


def report_at(place: places.Place, frame_wanted: int | None = None) -> LocalsReport:
    """kp-locals: the report on `place`, with values from the frame stopped there (or from
    frame `frame_wanted` of the current stop, whose PC is then the place)."""
    decode.require_boundary(place)
    frame, level = _frame_at(place.address, frame_wanted)
    if frame_wanted is not None:
        place = places.resolve(f"{frame.pc():#x}")
    return build(place, frame, level)


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


def build(place: places.Place, frame: gdb.Frame | None, level: int | None) -> LocalsReport:
    """The report on `place`, values read in `frame` (None: not stopped there)."""
    boundary = decode.check(place)
    facts, slots = prologue.analyse(boundary.function_insns, place.address,
                                    *cfi.facts_at(place.address))
    variables = scope.variables_at(place.address)
    where_now = {v.name: placement(v, facts) for v in variables}
    values = scope.values(frame, [v.name for v in variables]) if frame is not None else None
    cfa = None
    if frame is not None:
        registers = context.frame_registers(frame, [facts.stack_register, facts.frame_register])
        cfa = (registers[facts.frame_register] + facts.frame_offset if facts.frame_pointer
               else registers[facts.stack_register] + facts.cfa_from_rsp)
    owners = {v.offset: v.name for v in variables if v.where == "cfa"}
    seen = set()
    slot_rows = []
    for slot in slots:
        key = slot.cfa_offset
        if key is None or key in seen:
            continue
        seen.add(key)
        current = memory.read_slot(cfa + key) if cfa is not None else None
        slot_rows.append((slot, owners.get(key), current))
    fetch, missing = fetch_line(place, variables, facts)
    line = gdb.find_pc_line(place.address)
    where = f"{line.symtab.filename}:{line.line}" if line.symtab else "no line info"
    return LocalsReport(place, where, facts, variables, where_now, values, level, cfa, slot_rows,
                        fetch, missing)


def placement(variable: scope.Variable, facts: prologue.Prologue) -> str:
    if variable.where == "register":
        return f"%{variable.register}"
    if variable.where == "cfa":
        cfa_text = f"CFA{variable.offset:+#x}"
        if facts.frame_pointer:
            return (f"{variable.offset + facts.frame_offset:+#x}(%{facts.frame_register})  "
                    f"[{cfa_text}]")
        from_rsp = facts.cfa_from_rsp + variable.offset
        stack = facts.stack_register
        if from_rsp < 0:
            why = "freed by the epilogue" if facts.epilogue else "not allocated yet"
            return f"{cfa_text}: below %{stack}, {why} at this PC"
        return f"{from_rsp:+#x}(%{stack})  [{cfa_text}]"
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


def fetch_line(place: places.Place, variables: list[scope.Variable],
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
        if variable.where == "register" and variable.register in arch.GDB_TO_PT_REGS:
            fetch = f"%{arch.GDB_TO_PT_REGS[variable.register]}"
        elif variable.where == "cfa":
            if facts.frame_pointer:
                fetch = (f"{variable.offset + facts.frame_offset:+d}"
                         f"(%{arch.GDB_TO_PT_REGS[facts.frame_register]})")
            elif facts.cfa_from_rsp + variable.offset >= 0:
                fetch = (f"{facts.cfa_from_rsp + variable.offset:+d}"
                         f"(%{arch.GDB_TO_PT_REGS[facts.stack_register]})")
        elif variable.where == "regoffset" and variable.register in arch.GDB_TO_PT_REGS:
            fetch = f"{variable.offset:+d}(%{arch.GDB_TO_PT_REGS[variable.register]})"
        elif variable.where == "static" and variable.address is not None:
            fetch = f"@{variable.address:#x}"
        if fetch is None:
            missing.append(f"{variable.name} ({placement(variable, facts)})")
            continue
        args.append(f"{variable.name}={fetch}:{suffix}")
    where = f"{place.symbol}+{place.offset}" if place.symbol else f"{place.address:#x}"
    return " ".join([f"p:kp_locals {where}", *args]), missing
