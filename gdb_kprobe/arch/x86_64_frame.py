"""x86-64's frame at a PC, for kp-locals (analysis/prologue.py asks through the seam,
x86_64.py frame_walk): what the prologue has done by the PC, walked from the function's
instructions in AT&T syntax (as gdb prints them), corrected by the CFA rule.

CFA = %rsp + 8 (return address) + 8 per push + the `sub $N,%rsp` allocation, or
CFA = %rbp + 16 once `push %rbp; mov %rsp,%rbp` has run. Pure logic, no gdb.
"""
from __future__ import annotations

import re

from gdb_kprobe.errors import KpError

__all__ = ["frame_walk"]

_SLOT = re.compile(r"(-?0x[0-9a-f]+|-?\d+)?\(%(rbp|rsp)\)")

# (register, offset as written, CFA offset or None, instruction address, its asm): a stack
# slot an instruction before the PC touches (analysis/prologue.py's Slot)
SlotFacts = tuple[str, int, "int | None", int, str]


def _imm(text: str) -> int:
    try:
        return int(text, 16) if "0x" in text else int(text)
    except ValueError:
        # not gdb's AT&T output (another disassembly-flavor?): say so, not a traceback
        raise KpError(f"cannot read the number `{text}` in the disassembly") from None


def frame_walk(insns, pc: int, cfa: tuple[str, int] | None,
               saves: dict[str, int] | None = None) -> tuple[dict, list[SlotFacts]]:
    """The frame at `pc` (prologue.Prologue's fields: push, sub $N,%rsp, mov %rsp,%rbp from
    the start) and the stack slots touched before it; `cfa`, the compiler's rule at `pc`
    (target/cfi.py), corrects epilogues and code after a `ret`. `saves`: arm64's only."""
    pushes: list[str] = []
    allocated = 0
    saw_push_rbp = False
    frame_pointer = False
    depth = 8                         # bytes from %rsp to the CFA: the return address
    end = None
    in_prologue = True
    depth_at: dict[int, int] = {}
    depth_max = depth                 # the frame the prologue built (CFA - %rsp in the body)
    touched: list[tuple[str, int, int, str]] = []
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
                touched.append((match.group(2), offset, insn.address, asm))
    facts = _with_cfi({"pushes": pushes, "allocated": allocated, "frame_pointer": frame_pointer,
                       "cfa_from_rsp": 8 + 8 * len(pushes) + allocated, "end": end,
                       "epilogue": False, "frame_register": "rbp", "frame_offset": 16,
                       "stack_register": "rsp", "size": None}, cfa, pc, depth_max)
    return facts, _placed(touched, insns, depth_at, frame_pointer)


def _placed(touched: list[tuple[str, int, int, str]], insns, depth_at: dict[int, int],
            frame_pointer: bool) -> list[SlotFacts]:
    """Each touched slot with its CFA offset, %rbp or %rsp as they were at its instruction
    (%rsp: the depth before it executed)."""
    return [(register, offset,
             (offset - 16 if frame_pointer else None) if register == "rbp"
             else offset - _depth_before(insns, address, depth_at), address, asm)
            for register, offset, address, asm in touched]


def _with_cfi(walked: dict, cfa: tuple[str, int] | None, pc: int, depth_max: int) -> dict:
    """The walk's facts corrected by the compiler's CFA rule at the PC, when there is one."""
    if cfa is None or cfa[0] not in ("rsp", "rbp"):
        return walked
    # past the prologue, a frame smaller than the one it built is being torn down
    epilogue = walked["end"] is not None and pc >= walked["end"] and cfa[0] == "rsp" and (
        walked["frame_pointer"] or cfa[1] < depth_max)
    return {**walked, "frame_pointer": cfa == ("rbp", 16), "epilogue": epilogue,
            "cfa_from_rsp": cfa[1] if cfa[0] == "rsp" else walked["cfa_from_rsp"]}


def _depth_before(insns, address: int, depth_at: dict[int, int]) -> int:
    previous = 8
    for insn in insns:
        if insn.address == address:
            return previous
        previous = depth_at.get(insn.address, previous)
    return previous
