"""kp-locals --offsets: every instruction boundary of a function as a row, with where each
parameter and local lives there (kp-locals' own placement, analysis/probe_locals.py) and the
kernel's verdict on a `p FUNCTION+OFF` line there (kp-check's, kernel/checks.py).

The boundaries are the function's code at rest (the vmlinux file's; a module's live code
with the probes' bytes put back), so live int3s and jumps do not shift them. One checker
serves every row: the symbols, module list and blacklist are read once per table.
"""
from __future__ import annotations

import dataclasses
import errno

import gdb

from gdb_kprobe.analysis import probe_locals, prologue, scope
from gdb_kprobe.errors import KpError, KpUsageError
from gdb_kprobe.kernel import checks, decode, ftrace, places
from gdb_kprobe.kernel.register_checks import RegisterChecker
from gdb_kprobe.target import cfi, disasm, symbols

__all__ = ["Column", "Cell", "Row", "OffsetsTable", "build", "readable", "verdict_label"]


@dataclasses.dataclass(frozen=True)
class Column:
    """A parameter or local of the function: a column of the table."""

    name: str
    is_argument: bool
    type_name: str
    inlined: str | None = None        # a variable of this function inlined there, not ours


@dataclasses.dataclass(frozen=True)
class Cell:
    """Where one variable lives at one row's PC."""

    variable: scope.Variable
    placement: str          # kp-locals' words for it ("%rdi", "+0x4(%rsp)  [CFA-0x2c]", ...)
    readable: bool          # a register, an allocated stack slot, reg+offset or static storage


@dataclasses.dataclass
class Row:
    """One instruction boundary: the instruction, its cells, the kernel's verdict."""

    offset: int
    insn: disasm.Insn
    cells: dict[str, Cell]            # only the variables in scope here
    verdict: checks.Verdict
    label: str                        # verdict_label(): "ok", "ok (ftrace)", "mid-insn", ...
    inlined: str | None = None        # the PC is in this inlined function: its variables

    @property
    def address(self) -> int:
        return self.insn.address

    @property
    def probe_able(self) -> bool:
        """kprobe_events takes `p FUNCTION+OFF` here."""
        return self.verdict.kprobe_events.accepted


@dataclasses.dataclass
class OffsetsTable:
    function: places.Place            # offset 0, its size
    spec: str                         # FUNCTION or MODULE:FUNCTION, as kprobe_events takes it
    source: str | None                # file:line of the function's start
    columns: list[Column]
    rows: list[Row]
    notes: list[str]


def readable(variable: scope.Variable, facts: prologue.Prologue) -> bool:
    """Can a probe at this PC read the variable: a register, reg+offset, static storage, or
    a stack slot at or above %rsp (a slot below it is not allocated yet, or freed)."""
    if variable.where in ("register", "regoffset", "static"):
        return True
    if variable.where == "cfa":
        return facts.frame_pointer or facts.cfa_from_rsp + variable.offset >= 0
    return False


def verdict_label(verdict: checks.Verdict, address: int, start: int,
                  ftrace_site: int | None = None) -> str:
    """A few words for the kprobe_events verdict on one row: `ok`, `ok (ftrace)`,
    `mid-insn`, `blacklisted`, `unemulated`, `notrace`, or `-ERRNO reason`. Where the probe would land
    elsewhere (an IBT entry marker: +0 goes to +0x4) it says where, and `probed` where it
    would join a probe registered there (kp-check then says nothing of ftrace: the function's
    fentry call site, `ftrace_site`, says it)."""
    events = verdict.kprobe_events
    if events.accepted:
        extras = []
        if any(note.startswith("ftrace-based") for note in verdict.notes) or \
                (ftrace_site is not None and verdict.address == ftrace_site):
            extras.append("ftrace")
        if verdict.address is not None and verdict.address != address:
            extras.append(f"at +{verdict.address - start:#x}")
        if any(note.startswith("a probe is already registered") for note in verdict.notes):
            extras.append("probed")
        return "ok" + (f" ({', '.join(extras)})" if extras else "")
    reason = events.reason or ""
    if "not an instruction boundary" in reason:
        return "mid-insn"
    if "kprobe blacklist" in reason:
        return "blacklisted"
    if events.error == errno.EOPNOTSUPP:
        return "unemulated"               # prepare_emulation(): e.g. call *0x20(%rax)
    if "notrace" in reason:
        module = verdict.register_kprobe
        return "notrace (module ok)" if module is not None and module.accepted else "notrace"
    short = reason.split(" (")[0].split(":")[0].strip()
    return f"-{events.errno_name} {short[:40]}".strip()


def build(spec: str) -> OffsetsTable:
    """The table of `spec`, a function (`inet_accept`) or a module's (`mod:function`)."""
    checker = RegisterChecker()
    function = _function(spec, checker)
    start = function.address
    code = decode.function_code(start, function.size, function.module is not None)
    if not code:
        raise KpError(f"cannot decode {spec}: no instructions in {start:#x}+{function.size:#x}")
    site = ftrace.location_range(start, start + function.size - 1)
    notes: list[str] = []
    columns: dict[str, Column] = {}
    rows = []
    for insn in code:
        offset = insn.address - start
        facts, _ = prologue.analyse(code, insn.address, *cfi.facts_at(insn.address))
        variables = _variables(insn.address, notes)
        inlined = _inlined(insn.address, function.symbol)
        for variable in variables:
            columns.setdefault(variable.name, Column(variable.name, variable.is_argument,
                                                     variable.type_name, inlined))
        cells = {v.name: Cell(v, probe_locals.placement(v, facts), readable(v, facts))
                 for v in variables}
        verdict = checks.check(f"{spec}+{offset:#x}", checker)
        rows.append(Row(offset, insn, cells, verdict,
                        verdict_label(verdict, insn.address, start, site), inlined))
    # the function's parameters, its locals, then what inlined functions bring in
    ordered = sorted(columns.values(),
                     key=lambda column: (column.inlined is not None, not column.is_argument))
    return OffsetsTable(function, spec, _source(start), ordered, rows, notes)


def _function(spec: str, checker: RegisterChecker) -> places.Place:
    """A function of the kernel or of a loaded module, named without an offset."""
    spec = spec.strip()
    if not places.names_function(spec):
        raise KpUsageError(f"kp-locals --offsets takes a function (inet_accept, or "
                           f"module:function), not `{spec}`")
    function = places.resolve(spec, checker.symbolizer, kprobe_entry=False)
    if function.module is None:
        table = symbols.kernel()
        index = table.by_name.get(function.symbol)
        text = index is not None and table.section_of[index] in table.executable
    else:
        module = checker.symbolizer.module_for(function.address)
        text = module is not None and module.text_contains(function.address)
    if not text:
        raise KpError(f"`{spec}` is not a function: {function.symbol} is not in "
                      f"{'kernel' if function.module is None else 'module'} text")
    if not function.size:
        raise KpError(f"the size of {spec} is unknown: cannot tell where its code ends")
    return function


def _variables(pc: int, notes: list[str]) -> list[scope.Variable]:
    try:
        return scope.variables_at(pc)
    except KpError as exc:            # e.g. assembler code without DWARF: verdicts only
        if str(exc) not in notes:
            notes.append(str(exc))
        return []


def _inlined(pc: int, symbol: str) -> str | None:
    """The inlined function whose DWARF block holds `pc` (kp-locals then shows its
    variables, as gdb's innermost frame there does); None in the function's own blocks."""
    try:
        block = gdb.block_for_pc(pc)
    except RuntimeError:
        return None
    while block is not None and block.function is None:
        block = block.superblock
    if block is None:
        return None
    name = block.function.name
    # foo.isra.0, foo.cold: DWARF names the C function foo
    return None if name == symbol.split(".")[0] else name


def _source(start: int) -> str | None:
    line = gdb.find_pc_line(start)
    return f"{line.symtab.filename}:{line.line}" if line.symtab else None
