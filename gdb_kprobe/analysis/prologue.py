"""What the prologue has done by a given PC: pushes, stack allocation, frame pointer.

Pure logic over disassembled instructions (AT&T syntax, as gdb prints them), so the
CFA at a PC can be expressed from %rsp or %rbp without stopping there:
CFA = %rsp + 8 (return address) + 8 per push + the `sub $N,%rsp` allocation, or
CFA = %rbp + 16 once `push %rbp; mov %rsp,%rbp` has run.
"""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Sequence

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError

if TYPE_CHECKING:          # pure logic: the instructions only need .address, .raw, .asm
    from gdb_kprobe.target.disasm import Insn

__all__ = ["Prologue", "Slot", "analyse"]

_SLOT = re.compile(r"(-?0x[0-9a-f]+|-?\d+)?\(%(rbp|rsp)\)")


@dataclasses.dataclass
class Prologue:
    pushes: list[str]                 # registers pushed before the PC, in order
    allocated: int                    # bytes from `sub $N,%rsp` before the PC
    frame_pointer: bool               # CFA = %rbp+16 at the PC (push %rbp; mov %rsp,%rbp done)
    cfa_from_rsp: int                 # CFA = %rsp + this, at the PC
    end: int | None                   # address right after the last prologue instruction
    epilogue: bool = False            # the CFI says the frame is being torn down at the PC
    # CFA = %frame_register + frame_offset with a frame pointer, else %stack_register +
    # cfa_from_rsp (x86-64's: rbp+16, rsp; arm64's: x29 + the frame record's depth, sp)
    frame_register: str = "rbp"
    frame_offset: int = 16
    stack_register: str = "rsp"
    size: int | None = None           # the frame's size when pushes are inside `allocated`

    @property
    def frame_size(self) -> int:
        return self.size if self.size is not None else 8 * len(self.pushes) + self.allocated

    def cfa_relative(self, register: str, offset: int, rsp_delta: int = 0) -> int | None:
        """CFA-relative offset of `offset(%register)` (rsp_delta: %rsp at that insn vs PC)."""
        if register == "rbp":
            return offset - 16 if self.frame_pointer else None
        return offset - self.cfa_from_rsp + rsp_delta


@dataclasses.dataclass
class Slot:
    register: str                     # rbp or rsp
    offset: int                       # as written in the instruction
    cfa_offset: int | None            # the same slot relative to the CFA
    insn_address: int
    asm: str


def _imm(text: str) -> int:
    try:
        return int(text, 16) if "0x" in text else int(text)
    except ValueError:
        # not gdb's AT&T output (another disassembly-flavor?): say so, not a traceback
        raise KpError(f"cannot read the number `{text}` in the disassembly") from None


def analyse(insns: Sequence["Insn"], pc: int, cfa: tuple[str, int] | None = None,
            saves: dict[str, int] | None = None) -> tuple[Prologue, list[Slot]]:
    """Walk instructions from the function start up to (not including) `pc`. `cfa`, the
    compiler's CFA rule at `pc` (target/cfi.py), corrects the walk where it cannot be right:
    epilogues and code laid out after a `ret`. An architecture whose seam answers
    frame_facts() (arm64: stp/sub/x29, `saves` from the CFI) is walked there instead."""
    facts = arch.frame_facts(insns, pc, cfa, saves)
    if facts is not None:
        return Prologue(**facts), []
    return _walk(insns, pc, cfa)


def _walk(insns: Sequence["Insn"], pc: int,
          cfa: tuple[str, int] | None) -> tuple[Prologue, list[Slot]]:
    """x86-64's walk: push, sub $N,%rsp, mov %rsp,%rbp, and the slots (%rbp/%rsp) touched."""
    pushes: list[str] = []
    allocated = 0
    saw_push_rbp = False
    frame_pointer = False
    depth = 8                         # bytes from %rsp to the CFA: the return address
    end = None
    in_prologue = True
    depth_at: dict[int, int] = {}
    depth_max = depth                 # the frame the prologue built (CFA - %rsp in the body)
    slots: list[Slot] = []
    for insn in insns:
        if insn.address >= pc and not in_prologue:
            break
        asm = " ".join(insn.asm.split())
        mnemonic, _, operands = asm.partition(" ")
        is_prologue = False
        if mnemonic in ("push", "pushq") and operands.startswith("%"):
            is_prologue = in_prologue
            depth += 8
            if insn.address < pc:
                pushes.append(operands[1:])
            if operands == "%rbp":
                saw_push_rbp = True
        elif mnemonic in ("mov", "movq") and operands == "%rsp,%rbp" and saw_push_rbp:
            is_prologue = in_prologue
            if insn.address < pc:
                frame_pointer = True
        elif mnemonic in ("sub", "subq") and operands.endswith(",%rsp") and operands.startswith("$"):
            is_prologue = in_prologue
            size = _imm(operands[1:].split(",")[0])
            depth += size
            if insn.address < pc:
                allocated += size
        elif mnemonic.startswith(("endbr", "nop")) or "__fentry__" in asm:
            pass
        elif mnemonic.startswith(("j", "call", "ret")):
            in_prologue = False      # the compiler interleaves moves; a branch ends it
        elif mnemonic in ("pop", "popq"):
            depth -= 8
        elif mnemonic in ("add", "addq") and operands.endswith(",%rsp") and operands.startswith("$"):
            depth -= _imm(operands[1:].split(",")[0])
        if is_prologue:
            end = insn.address + len(insn.raw)
        depth_at[insn.address] = depth
        if in_prologue or is_prologue:
            depth_max = max(depth_max, depth)
        if insn.address < pc:
            for match in _SLOT.finditer(asm):
                offset = _imm(match.group(1)) if match.group(1) else 0
                slots.append(Slot(match.group(2), offset, None, insn.address, asm))
    cfa_from_rsp = 8 + 8 * len(pushes) + allocated
    prologue = _with_cfi(Prologue(pushes, allocated, frame_pointer, cfa_from_rsp, end), cfa,
                         pc, depth_max)
    _place_slots(slots, insns, depth_at, frame_pointer)
    return prologue, slots


def _place_slots(slots: list[Slot], insns, depth_at: dict[int, int], frame_pointer: bool) -> None:
    """Each touched slot's CFA offset, with %rbp or %rsp as they were at its instruction."""
    for slot in slots:
        if slot.register == "rbp":
            slot.cfa_offset = slot.offset - 16 if frame_pointer else None
        else:
            # %rsp at that instruction: depth before it executed
            before = _depth_before(insns, slot.insn_address, depth_at)
            slot.cfa_offset = slot.offset - before


def _with_cfi(walked: Prologue, cfa: tuple[str, int] | None, pc: int,
              depth_max: int) -> Prologue:
    """The walk's facts corrected by the compiler's CFA rule at the PC, when there is one."""
    if cfa is None or cfa[0] not in ("rsp", "rbp"):
        return walked
    # past the prologue, a frame smaller than the one it built is being torn down
    epilogue = walked.end is not None and pc >= walked.end and cfa[0] == "rsp" and (
        walked.frame_pointer or cfa[1] < depth_max)
    return dataclasses.replace(walked, frame_pointer=cfa == ("rbp", 16), epilogue=epilogue,
                               cfa_from_rsp=cfa[1] if cfa[0] == "rsp" else walked.cfa_from_rsp)


def _depth_before(insns, address: int, depth_at: dict[int, int]) -> int:
    previous = 8
    for insn in insns:
        if insn.address == address:
            return previous
        previous = depth_at.get(insn.address, previous)
    return previous
