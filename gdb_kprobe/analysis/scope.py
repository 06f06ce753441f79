"""Parameters and locals in scope at a PC, each with where it lives at exactly that PC.

gdb resolves DWARF lexical blocks and location lists; `info scope *PC` prints every
symbol of the blocks around PC with its location (lists with their ranges). This
module picks the location whose range holds PC and classifies it: a register, a
frame-base (CFA) offset, a register+offset, an entry value, a constant, static
storage, or nothing (optimized out here). Types and argument-ness come from the
block API.
"""
from __future__ import annotations

import dataclasses
import re

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError

__all__ = ["Variable", "variables_at", "values", "types_at"]


@dataclasses.dataclass
class Variable:
    """A parameter or local (a DWARF variable) and where it lives at one PC."""

    name: str
    is_argument: bool
    type_name: str
    size: int
    signed: bool
    is_pointer: bool
    is_struct: bool
    where: str                 # register | cfa | regoffset | entry | static | const | none
    register: str | None = None
    offset: int = 0
    address: int | None = None
    detail: str = ""           # what gdb said, for the odd cases


_RANGE = re.compile(r"Range (0x[0-9a-f]+)-(0x[0-9a-f]+): (.*)")


def _split_symbols(text: str) -> list[tuple[str, str]]:
    """(name, description) per `Symbol NAME is ...` entry of `info scope`."""
    entries = []
    for chunk in re.split(r"^Symbol ", text, flags=re.M)[1:]:
        name, _, rest = chunk.partition(" is ")
        entries.append((name.strip(), rest))
    return entries


def _at_pc(description: str, pc: int) -> str | None:
    """The location text that holds at pc (None if no range covers it)."""
    if not description.startswith("multi-location"):
        return description
    lines = description.splitlines()[1:]
    current = None
    found = None
    for line in lines:
        match = _RANGE.search(line)
        if match:
            if current and found is None and current[0] <= pc < current[1]:
                found = current[2]
            current = [int(match.group(1), 16), int(match.group(2), 16), match.group(3)]
        elif current is not None:
            current[2] += "\n" + line
    if current and found is None and current[0] <= pc < current[1]:
        found = current[2]
    return found


def _classify(text: str | None) -> dict:
    if text is None:
        return {"where": "none", "detail": "no location at this PC (optimized out here)"}
    flat = " ".join(text.split())
    if "optimized out" in flat:
        return {"where": "none", "detail": "optimized out"}
    match = re.match(r"a variable in \$(\w+)", flat)
    if match:
        return {"where": "register", "register": match.group(1)}
    # GCC's frame base for x86-64 kernel code is DW_OP_call_frame_cfa: fbreg is CFA-relative
    match = re.search(r"DW_OP_fbreg (-?\d+)", flat)
    if match and "entry_value" not in flat and "stack_value" not in flat:
        return {"where": "cfa", "offset": int(match.group(1))}
    match = re.search(r"DW_OP_breg\d+ \[\$(\w+)\] (-?\d+)", flat)
    if match and "stack_value" not in flat:
        return {"where": "regoffset", "register": match.group(1), "offset": int(match.group(2))}
    match = re.search(r"a variable at frame base reg \$(\w+) offset (-?\d+)\+(-?\d+)", flat)
    if match:
        return {"where": "regoffset", "register": match.group(1),
                "offset": int(match.group(2)) + int(match.group(3))}
    match = re.search(r"DW_OP_entry_value.*DW_OP_reg\d+ \[\$(\w+)\]", flat)
    if match:
        return {"where": "entry", "register": match.group(1),
                "detail": f"the value %{match.group(1)} had at function entry"}
    match = re.search(r"static storage at address (0x[0-9a-f]+)", flat)
    if match:
        return {"where": "static", "address": int(match.group(1), 16)}
    if "constant" in flat:
        return {"where": "const", "detail": flat.split(", length")[0]}
    return {"where": "none", "detail": flat.split(", length")[0]}


def _block_symbols(pc: int) -> dict[str, gdb.Symbol]:
    try:
        block = gdb.block_for_pc(pc)
    except RuntimeError:
        block = None
    if block is None:
        raise KpError(f"no debug info (DWARF block) for {pc:#x}; load the DWARF vmlinux")
    found: dict[str, gdb.Symbol] = {}
    while block is not None:
        for symbol in block:
            if symbol.is_variable or symbol.is_argument:
                found.setdefault(symbol.name, symbol)
        if block.function is not None:
            break
        block = block.superblock
    return found


def types_at(pc: int) -> dict[str, gdb.Type]:
    """The declared (unstripped) type of each parameter and local in scope at `pc`."""
    return {name: symbol.type for name, symbol in _block_symbols(pc).items()}


def variables_at(pc: int) -> list[Variable]:
    """Parameters and locals in scope at `pc`, parameters first, each placed at that PC."""
    text = gdb.execute(f"info scope *{pc:#x}", to_string=True)
    symbols = _block_symbols(pc)
    found = []
    for name, description in _split_symbols(text):
        symbol = symbols.get(name)
        if symbol is None:
            continue
        gdb_type = symbol.type.strip_typedefs()
        pointer = gdb_type.code == gdb.TYPE_CODE_PTR
        scalar = gdb_type.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_BOOL,
                                   gdb.TYPE_CODE_CHAR)
        found.append(Variable(
            name=name, is_argument=symbol.is_argument, type_name=str(symbol.type),
            size=gdb_type.sizeof, signed=scalar and gdb_type.is_signed, is_pointer=pointer,
            is_struct=gdb_type.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION),
            **_classify(_at_pc(description, pc))))
    found.sort(key=lambda v: not v.is_argument)       # parameters first, as C declares them
    return found


def values(frame: gdb.Frame, names: list[str]) -> dict[str, str]:
    """Values as gdb reads them in `frame` (structs one level deep)."""
    result = {}
    for name in names:
        try:
            value = frame.read_var(name)
            result[name] = _format(value)
        except (gdb.error, ValueError) as exc:
            result[name] = f"<{' '.join(str(exc).split())}>"
    return result


def _format(value: gdb.Value) -> str:
    if value.is_optimized_out:
        return "<optimized out>"
    value_type = value.type.strip_typedefs()
    if value_type.code == gdb.TYPE_CODE_PTR:
        return f"{arch.u64(int(value)):#x}"
    if value_type.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        parts = []
        for field in value_type.fields():
            if not field.name:
                continue
            inner = value[field.name]
            inner_type = inner.type.strip_typedefs()
            if inner_type.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION,
                                   gdb.TYPE_CODE_ARRAY):
                parts.append(f"{field.name}={{...}}")
            else:
                parts.append(f"{field.name}={_format(inner)}")
        return "{" + ", ".join(parts) + "}"
    return str(value)
