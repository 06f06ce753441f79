"""What the prologue has done by a given PC: pushes, stack allocation, frame pointer.

Pure logic over disassembled instructions, so the CFA at a PC can be expressed from the
stack or frame register without stopping there (kp-locals, kp-check's offsets table). The
walk itself is the architecture's (arch/x86_64_frame.py, arch/arm64_frame.py); here are the
facts it gives, in one shape for both.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from gdb_kprobe import arch

if TYPE_CHECKING:          # pure logic: the instructions only need .address, .raw, .asm
    from gdb_kprobe.target.disasm import Insn

__all__ = ["Prologue", "Slot", "analyse"]


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


def analyse(insns: Sequence["Insn"], pc: int, cfa: tuple[str, int] | None = None,
            saves: dict[str, int] | None = None) -> tuple[Prologue, list[Slot]]:
    """What the prologue has done by `pc`, walked from the function's first instruction by
    the architecture's seam (arch frame_walk: x86-64's push/sub/mov, arm64's stp/sub/x29),
    and the stack slots touched before it. `cfa` (and arm64's `saves`), the compiler's CFI at
    `pc` (target/cfi.py), correct the walk where it cannot be right: epilogues and code laid
    out after a `ret`."""
    facts, slots = arch.frame_walk(insns, pc, cfa, saves)
    return Prologue(**facts), [Slot(*slot) for slot in slots]
