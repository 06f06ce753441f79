"""Instruction boundaries, decoded from the function start as register_kprobe() does.

can_probe() in arch/x86/kernel/kprobes/core.c decodes the original instructions
from the start of the function and refuses (-EILSEQ) an address that falls
inside one. The original code comes from the vmlinux file (live text may carry
int3s and jumps); module code is read live.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel.places import Place
from gdb_kprobe.target import disasm

__all__ = ["Boundary", "check", "require_boundary", "EILSEQ"]

EILSEQ = 84


@dataclasses.dataclass
class Boundary:
    ok: bool
    insn: disasm.Insn | None           # the instruction at (or containing) the place
    function_insns: list[disasm.Insn]


def check(place: Place) -> Boundary:
    """Decode the function from its start (the vmlinux file's bytes; module code live) and
    say whether `place` is an instruction boundary, as can_probe() does."""
    if place.symbol is None:
        raise KpError(f"{place.address:#x} is in no known function; cannot decode from a "
                      "function start")
    start = place.address - place.offset
    end = start + max(place.size, place.offset + 1)
    insns = disasm.original(start, count=None, end=end) if place.module is None else None
    if insns is None:
        insns = disasm.live(start, count=None, end=end)
    for insn in insns:
        if insn.address == place.address:
            return Boundary(True, insn, insns)
        if insn.address < place.address < insn.address + len(insn.raw):
            return Boundary(False, insn, insns)
    return Boundary(False, None, insns)


def require_boundary(place: Place) -> disasm.Insn:
    found = check(place)
    if found.ok:
        return found.insn
    if found.insn is None:
        raise KpError(f"{place} is past the decoded instructions of {place.symbol}")
    inside = found.insn
    start = place.address - place.offset
    raise KpError(f"{place} is not an instruction boundary: it falls inside `{inside.asm}` at "
                  f"{place.symbol}+{inside.address - start:#x} "
                  f"({len(inside.raw)} bytes); register_kprobe() refuses it with -EILSEQ")
