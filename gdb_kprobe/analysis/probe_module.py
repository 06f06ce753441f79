"""kp-locals --module's model: a kprobe module that prints the variables at a place.

The facts are kp-locals' own (scope: where each variable lives at the PC; prologue: the CFA
from %rsp or %rbp there), spelled as C reads of `struct pt_regs`: a register is
`regs->di`, a stack slot `*(T *)(regs->bp + N)` on a frame-pointer frame or
`*(T *)(regs->sp + N)` from the CFA offset otherwise. In a pre_handler regs->sp is the
stack pointer at the probed instruction on every path: int3 saves the interrupted %rsp,
optimized_callback() corrects the template's push to the same value, and
ftrace_regs_caller stores the %rsp of the fentry call site (the return address skipped).
"""
from __future__ import annotations

import dataclasses
import re

import gdb

from gdb_kprobe import arch
from gdb_kprobe.analysis import prologue, scope
from gdb_kprobe.target import cfi
from gdb_kprobe.analysis.probe_locals import placement
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import decode, places

__all__ = ["CType", "Read", "ModuleModel", "VISIBLE_TYPEDEF_FILES", "c_type", "conversion",
           "read_of", "module_name", "build"]

# Headers every generated file sees through <linux/types.h> (included by <linux/kprobes.h>):
# a typedef declared in one of them keeps its name, any other is spelled as its base type.
VISIBLE_TYPEDEF_FILES = ("include/linux/types.h", "include/uapi/linux/types.h",
                         "include/asm-generic/int-ll64.h", "include/uapi/asm-generic/int-ll64.h",
                         "include/uapi/asm-generic/posix_types.h",
                         "arch/x86/include/uapi/asm/posix_types_64.h")
_RESERVED = {"p", "regs", "kp"}       # the handler's own names


@dataclasses.dataclass(frozen=True)
class CType:
    """A variable's type as the generated C declares and prints it."""

    kind: str                 # int | bool | enum | pointer | array | struct | other
    spelling: str | None      # the C declaration's type (None: not expressible in C here)
    size: int
    signed: bool
    base: str                 # int kinds: the base type's name, which picks the length modifier
    label: str                # the type as the DWARF names it (for comments)


@dataclasses.dataclass(frozen=True)
class Read:
    """One variable: how the pre_handler reads and prints it, or why it cannot."""

    name: str
    c_name: str
    ctype: CType
    where: str                       # kp-locals' placement text at this PC
    expression: str | None = None    # C expression over `regs`
    conversion: str | None = None    # printk conversion for the value printed
    label: str = ""                  # printed as label=value (`&name` for an address)
    why_not: str | None = None


@dataclasses.dataclass(frozen=True)
class ModuleModel:
    place: str                 # symbol+0xoff
    symbol_name: str           # for struct kprobe .symbol_name (module:symbol in a module)
    offset: int
    address: int
    source_line: str
    kernel: str                # utsname release
    banner: str                # linux_banner's first line
    module_name: str
    frame: str                 # how the CFA is reached at the PC
    reads: list[Read]


def _visible_typedef(gdb_type: gdb.Type) -> bool:
    symbol = gdb.lookup_static_symbol(gdb_type.name) or gdb.lookup_global_symbol(gdb_type.name)
    return symbol is not None and symbol.symtab is not None and \
        symbol.symtab.filename.endswith(VISIBLE_TYPEDEF_FILES)


def _spell(gdb_type: gdb.Type) -> str | None:
    """C spelling of a type for a declaration in the generated file (None: cannot be)."""
    code = gdb_type.code
    if code == gdb.TYPE_CODE_TYPEDEF:
        return gdb_type.name if _visible_typedef(gdb_type) else _spell(gdb_type.target())
    if code == gdb.TYPE_CODE_BOOL:
        return "bool"
    if code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_CHAR):
        return gdb_type.unqualified().name
    if code == gdb.TYPE_CODE_VOID:
        return "void"
    if code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION) and gdb_type.tag:
        # an incomplete `struct socket *` needs no header: only the pointer is stored
        return f"{'struct' if code == gdb.TYPE_CODE_STRUCT else 'union'} {gdb_type.tag}"
    if code == gdb.TYPE_CODE_PTR:
        inner = _spell(gdb_type.target())
        if inner is None:
            return None
        const = "const " if str(gdb_type.target()).startswith("const ") else ""
        return f"{const}{inner}{'*' if inner.endswith('*') else ' *'}"
    return None                      # enums (header not included), functions, anonymous types


def c_type(gdb_type: gdb.Type) -> CType:
    """The C facts of a declared (unstripped) type."""
    base = gdb_type.strip_typedefs()
    code = base.code
    label = str(gdb_type)
    if code == gdb.TYPE_CODE_PTR:
        return CType("pointer", _spell(gdb_type) or "void *", 8, False, "", label)
    if code == gdb.TYPE_CODE_ENUM:
        # the enum's header is not included: its values are read as the int it is stored in
        signed = any(field.enumval < 0 for field in base.fields())
        return CType("enum", "int" if signed else "unsigned int", base.sizeof, signed, "int",
                     label)
    if code == gdb.TYPE_CODE_BOOL:
        return CType("bool", "bool", base.sizeof, False, "_Bool", label)
    if code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_CHAR):
        return CType("int", _spell(gdb_type), base.sizeof, base.is_signed, base.name or "",
                     label)
    if code == gdb.TYPE_CODE_ARRAY:
        return CType("array", None, base.sizeof, False, "", label)
    if code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        return CType("struct", None, base.sizeof, False, "", label)
    return CType("other", None, base.sizeof, False, "", label)


def conversion(ctype: CType) -> str | None:
    """The printk conversion that fits the C type exactly (no -Wformat complaint)."""
    if ctype.kind in ("pointer", "array", "struct"):
        return "%px"                 # the raw pointer or address: see ui/module_source.py
    if ctype.kind in ("bool", "enum"):
        return "%d" if ctype.kind == "bool" or ctype.signed else "%u"
    if ctype.kind != "int" or ctype.size not in (1, 2, 4, 8):
        return None
    words = ctype.base.split()
    if "char" in words:
        modifier = "hh"
    elif "short" in words:
        modifier = "h"
    elif words.count("long") == 2:
        modifier = "ll"
    elif "long" in words:
        modifier = "l"
    else:
        modifier = ""
    return f"%{modifier}{'d' if ctype.signed else 'u'}"


def _hex(offset: int) -> str:
    return f"+ {offset:#x}" if offset >= 0 else f"- {-offset:#x}"


def _address(variable: scope.Variable, facts: prologue.Prologue) -> str | None:
    """C expression of the variable's address at the PC, from regs (None: not from regs)."""
    if variable.where == "cfa":
        if facts.frame_pointer:
            return (f"{arch.pt_regs_c(facts.frame_register)} "
                    f"{_hex(variable.offset + facts.frame_offset)}")
        from_rsp = facts.cfa_from_rsp + variable.offset
        return (f"{arch.pt_regs_c(facts.stack_register)} {_hex(from_rsp)}" if from_rsp >= 0
                else None)
    if variable.where == "regoffset" and variable.register in arch.GDB_TO_PT_REGS:
        return f"{arch.pt_regs_c(variable.register)} {_hex(variable.offset)}"
    return None


def read_of(variable: scope.Variable, ctype: CType, facts: prologue.Prologue) -> Read:
    """How the pre_handler reads `variable` at the PC (pure: unit-tested with fakes)."""
    where = placement(variable, facts)
    c_name = f"v_{variable.name}" if variable.name in _RESERVED else variable.name
    plain = Read(variable.name, c_name, ctype, where)
    address = _address(variable, facts)
    if ctype.kind in ("array", "struct"):
        if address is None:
            why = "held in registers" if variable.where == "register" else where
            return dataclasses.replace(plain, why_not=f"{ctype.kind} by value, {why}: not "
                                                      "printed")
        return dataclasses.replace(plain, c_name=f"{c_name}_addr", conversion="%px",
                                   expression=f"(void *)({address})", label=f"&{variable.name}")
    fmt = conversion(ctype)
    if ctype.spelling is None or fmt is None:
        return dataclasses.replace(plain, why_not=f"a {ctype.size}-byte {ctype.label} has no "
                                                  "printk conversion")
    pointer = ctype.spelling + ("*" if ctype.spelling.endswith("*") else " *")
    if variable.where == "register" and variable.register in arch.GDB_TO_PT_REGS:
        register = arch.pt_regs_c(variable.register)
        # a bool is the register's low byte, as gdb reads it
        expression = f"(u8){register}" if ctype.kind == "bool" else f"({ctype.spelling}){register}"
    elif address is not None:
        expression = f"*({pointer})({address})"
    else:
        return dataclasses.replace(plain, why_not=where)
    return dataclasses.replace(plain, expression=expression, conversion=fmt, label=variable.name)


def module_name(place: places.Place) -> str:
    """A module name for the place: kp_locals_<symbol>_<offset>, within MODULE_NAME_LEN."""
    stem = f"{place.symbol}_{place.offset:x}" if place.symbol else f"{place.address:x}"
    return ("kp_locals_" + re.sub(r"[^A-Za-z0-9_]", "_", stem))[:55]


def _kernel_identity() -> tuple[str, str]:
    try:
        release = gdb.parse_and_eval("init_uts_ns.name.release").string()
        banner = gdb.parse_and_eval("(const char *)linux_banner").string()
    except (gdb.error, gdb.MemoryError) as exc:
        raise KpError(f"cannot read the kernel's release (init_uts_ns): {exc}") from None
    return release, banner.splitlines()[0].strip() if banner else ""


def build(place: places.Place) -> ModuleModel:
    """The module for `place`: every variable in scope there, read or explained."""
    boundary = decode.check(place)
    if not boundary.ok:
        decode.require_boundary(place)          # raises with the instruction it falls in
    facts, _slots = prologue.analyse(boundary.function_insns, place.address,
                                     *cfi.facts_at(place.address))
    types = scope.types_at(place.address)
    reads = [read_of(v, c_type(types[v.name]), facts)
             for v in scope.variables_at(place.address) if v.name in types]
    if not any(read.expression for read in reads):
        raise KpError(f"nothing readable at {place}: no parameter or local has a register or "
                      "stack slot there")
    line = gdb.find_pc_line(place.address)
    source = f"{line.symtab.filename}:{line.line}" if line.symtab else "no line info"
    release, banner = _kernel_identity()
    frame = (f"CFA = {arch.pt_regs_c(facts.frame_register)} + {facts.frame_offset:#x} (frame "
             "pointer)" if facts.frame_pointer else
             f"CFA = {arch.pt_regs_c(facts.stack_register)} + {facts.cfa_from_rsp:#x} (no frame "
             "pointer at this PC)")
    symbol_name = f"{place.module}:{place.symbol}" if place.module else place.symbol
    if symbol_name is None:
        raise KpError(f"{place} is in no known function")
    return ModuleModel(str(place), symbol_name, place.offset, place.address, source, release,
                       banner, module_name(place), frame, reads)
