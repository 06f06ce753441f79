"""arm64's frame at a PC, for kp-locals (analysis/prologue.py asks through the seam,
arm64.py frame_walk): GCC's frame-record prologue walked, corrected by the CFI.
Pure logic, no gdb."""
from __future__ import annotations

import re

__all__ = ["frame_walk", "frame_facts"]

INSN_SIZE = 4
STACK_POINTER, FRAME_POINTER = "sp", "x29"
# x19..x29 and the link register x30: what a prologue saves in its frame
_SAVED = frozenset(f"x{n}" for n in range(19, 31))


def _number(text: str) -> int:
    text = text.strip().lstrip("#")
    return int(text, 16) if "0x" in text else int(text)


_SP_STORE = re.compile(r"^(stp|str) (x\d+)(?:, (x\d+))?, \[sp(?:, #(-?\w+))?\](!?)$")
_SP_SUB = re.compile(r"^sub sp, sp, #(\w+)$")
_FP_SET = re.compile(r"^(?:mov x29, sp|add x29, sp, #(\w+))$")
_BRANCH = re.compile(r"^(b|bl|br|blr|ret|retaa|retab|cbz|cbnz|tbz|tbnz|b\.\w+|eret)\b")


def frame_facts(insns, pc: int, cfa, saves: dict[str, int] | None) -> dict | None:
    """The frame at `pc` of a GCC arm64 function, for kp-locals (analysis/prologue.py):
    `sub sp, sp, #N` and `stp x29, x30, [sp, #-N]!` allocate, stp/str to [sp] save
    callee-saved registers, and `mov x29, sp` / `add x29, sp, #K` make x29 the frame record's
    address, so CFA = x29 + (depth - K): the "locals through the frame pointer" of a
    frame-record kernel. The compiler's CFI (`cfa`, `saves`: register -> CFA offset at `pc`)
    corrects the walk in epilogues: past `ldp x29, x30` the CFI no longer saves x29."""
    depth, saved, end = 0, {}, None
    frame_offset = None                    # CFA = x29 + this, once x29 is set before pc
    for insn in insns:
        asm = " ".join(insn.asm.split()).split(" //")[0].strip()
        if _BRANCH.match(asm):
            break
        store, sub, fp = _SP_STORE.match(asm), _SP_SUB.match(asm), _FP_SET.match(asm)
        before = insn.address < pc
        if sub:
            depth += _number(sub.group(1)) if before else 0
            end = insn.address + INSN_SIZE
        elif store and (store.group(2) in _SAVED):
            offset = _number(store.group(4)) if store.group(4) else 0
            if store.group(5):                               # pre-index: allocates
                if before:
                    depth -= offset
                offset = 0
            if before:
                for n, register in enumerate(r for r in (store.group(2), store.group(3)) if r):
                    saved[register] = offset + 8 * n - depth
            end = insn.address + INSN_SIZE
        elif fp:
            if before:
                frame_offset = depth - (_number(fp.group(1)) if fp.group(1) else 0)
            end = insn.address + INSN_SIZE
    cfa_from_sp, epilogue = depth, False
    if cfa is not None and cfa[0] == "sp":
        epilogue = end is not None and pc >= end and cfa[1] < depth
        cfa_from_sp = cfa[1]
    if saves is not None:
        saved = saves
        if FRAME_POINTER not in saves:                      # restored: the epilogue
            frame_offset = None
        elif frame_offset is not None:
            frame_offset = -saves[FRAME_POINTER]            # x29 = the frame record's address
    pushes = sorted(saved, key=lambda r: saved[r])
    return {"pushes": pushes, "allocated": cfa_from_sp, "frame_pointer": frame_offset is not None,
            "cfa_from_rsp": cfa_from_sp, "end": end, "epilogue": epilogue,
            "frame_register": FRAME_POINTER, "frame_offset": frame_offset or 0,
            "stack_register": STACK_POINTER, "size": cfa_from_sp}


def frame_walk(insns, pc: int, cfa, saves: dict[str, int] | None) -> tuple[dict, list]:
    """The seam's frame_walk: frame_facts(), and no list of the stack slots the
    instructions touch (x86_64_frame.py's; not written for arm64)."""
    return frame_facts(insns, pc, cfa, saves), []
