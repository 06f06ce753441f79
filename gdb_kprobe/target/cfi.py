"""Where the CFA is at any PC of the kernel image, from the vmlinux's `.debug_frame`.

The compiler describes every instruction of a C function in its call-frame information
(CFI): after each push, `sub $N,%rsp`, `mov %rsp,%rbp`, pop, `add $N,%rsp` or `leave`, and
across `ret` into code that still has the full frame (remember/restore_state). A walk over
the instructions (analysis/prologue.py) gets the prologue right but not an epilogue, nor
code laid out after a `ret`; the CFI gets all of them. Only the CFA rule is evaluated:
`CFA = %reg + offset`. A CFA given by a DWARF expression, a PC without an FDE (asm code,
modules) or a vmlinux without `.debug_frame` gives None, and callers keep their walk.

The Debian cloud vmlinux and the lab's 6.1-fp build both carry `.debug_frame` (gcc -g with
-fno-asynchronous-unwind-tables puts the CFI there instead of `.eh_frame`).
"""
from __future__ import annotations

import bisect
import struct
from typing import NamedTuple

from gdb_kprobe import arch
from gdb_kprobe.target import cache, symbols

__all__ = ["CfaRule", "facts_at", "FrameRules", "frame_rules_at"]


class CfaRule(NamedTuple):
    register: str      # "rsp" or "rbp" (or another register)
    offset: int        # CFA = register + offset


class _Frames:
    """The FDEs of one ELF file's .debug_frame, sorted by start address."""

    def __init__(self, table: symbols.ElfSymbols) -> None:
        self.bias = table.bias
        self.data = b""
        self.starts: list[int] = []
        self.fdes: list[tuple[int, int, int, int]] = []   # (start, end, offset, cie offset)
        section = table.file_ranges.get(".debug_frame")
        if section is not None:
            with open(table.path, "rb") as handle:
                handle.seek(section[0])
                self.data = handle.read(section[1])
        self._index()
        self._cies: dict[int, tuple[int, int, bytes]] = {}

    def _index(self) -> None:
        data, offset, found = self.data, 0, []
        while offset + 4 <= len(data):
            length, = struct.unpack_from("<I", data, offset)
            if length == 0xFFFFFFFF or length == 0:      # 64-bit DWARF or a terminator
                break
            cie_id, = struct.unpack_from("<I", data, offset + 4)
            if cie_id != 0xFFFFFFFF and offset + 24 <= len(data):
                start, size = struct.unpack_from("<QQ", data, offset + 8)
                if start:
                    found.append((start, start + size, offset, cie_id))
            offset += 4 + length
        found.sort()
        self.fdes = found
        self.starts = [entry[0] for entry in found]

    def rule_at(self, pc: int) -> CfaRule | None:
        return self.row_at(pc)[0]

    def row_at(self, pc: int) -> tuple[CfaRule | None, dict[str, int] | None]:
        """The CFA rule at `pc` and the registers saved there (name → CFA offset)."""
        pc -= self.bias
        index = bisect.bisect_right(self.starts, pc) - 1
        if index < 0 or not self.fdes[index][0] <= pc < self.fdes[index][1]:
            return None, None
        start, _end, offset, cie_offset = self.fdes[index]
        code_align, data_align, initial = self._cie(cie_offset)
        length, = struct.unpack_from("<I", self.data, offset)
        program = self.data[offset + 24: offset + 4 + length]
        return _facts(initial, program, code_align, data_align, start, pc)

    def _cie(self, offset: int) -> tuple[int, int, bytes]:
        if offset not in self._cies:
            data = self.data
            length, = struct.unpack_from("<I", data, offset)
            end = offset + 4 + length
            version = data[offset + 8]
            cursor = data.index(b"\0", offset + 9) + 1         # augmentation string
            if version >= 4:
                cursor += 2                                     # address and segment size
            code_align, cursor = _uleb(data, cursor)
            data_align, cursor = _sleb(data, cursor)
            if version == 1:
                cursor += 1
            else:
                _, cursor = _uleb(data, cursor)                 # return address register
            self._cies[offset] = (code_align, data_align, data[cursor:end])
        return self._cies[offset]


def _facts(initial: bytes, program: bytes, code_align: int, data_align: int, start: int,
           pc: int) -> tuple[CfaRule | None, dict[str, int] | None]:
    """The CIE's `initial` then the FDE's `program` up to `pc`, leniently (kp-locals): the
    CFA rule and the saved registers by gdb name, or (None, None)."""
    row = _execute(initial, None, code_align, data_align, start, pc, strict=False)
    row = row and _execute(program, row, code_align, data_align, start, pc, initial=row,
                           strict=False)
    if row is None or row[0] is None:
        return None, None
    (register, offset), saved, _signed = row
    return CfaRule(_name(register), offset), {_name(n): slot for n, slot in saved.items()}


def _skip_operands(op: int, program: bytes, cursor: int) -> int | None:
    if op in (0x00, 0x0A, 0x0B):
        return cursor
    if op in (0x06, 0x07, 0x08, 0x2E):                          # one uleb
        return _uleb(program, cursor)[1]
    if op in (0x05, 0x09, 0x11, 0x14, 0x15, 0x2F):              # two numbers
        return _uleb(program, _uleb(program, cursor)[1])[1]
    if op in (0x10, 0x16):                                      # register, block
        cursor = _uleb(program, cursor)[1]
    if op in (0x0F, 0x10, 0x16):                                # (register,) block
        size, cursor = _uleb(program, cursor)
        return cursor + size
    return None


def _name(register: int) -> str:
    names = arch.DWARF_REGS
    return names[register] if register < len(names) else f"dwarf{register}"


def _uleb(data: bytes, cursor: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[cursor]
        cursor += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, cursor


def _sleb(data: bytes, cursor: int) -> tuple[int, int]:
    value, end = _uleb(data, cursor)
    bits = 7 * (end - cursor)
    if value & (1 << (bits - 1)):
        value -= 1 << bits
    return value, end


@cache.cache_until(*cache.OBJFILE, "relocate")
def _kernel_frames() -> _Frames | None:
    table = symbols.kernel()
    try:
        return _Frames(table)
    except (OSError, ValueError, struct.error, IndexError):
        return None


def facts_at(pc: int) -> tuple[CfaRule | None, dict[str, int] | None]:
    """The CFA rule at `pc` in the kernel image and the registers saved there (gdb name →
    CFA offset of the slot); (None, None) without CFI for it (keep the walk)."""
    if not symbols.in_kernel_image(pc):
        return None, None
    frames = _kernel_frames()
    if frames is None:
        return None, None
    try:
        return frames.row_at(pc)
    except (IndexError, ValueError, struct.error):      # damaged CFI: as if there were none
        return None, None


# -- every rule of a row, for an unwinder (arm64: issue #18) ------------------------------
class FrameRules(NamedTuple):
    """A CFI row: CFA = DWARF register cfa_register + cfa_offset, each saved register's slot
    at CFA + offset (by DWARF number), the return address signed (negate_ra_state)."""
    function: int                   # the FDE's start (the frame's code address)
    cfa_register: int
    cfa_offset: int
    saved: dict[int, int]
    ra_signed: bool


def frame_rules_at(pc: int, entry_padding: int = 0,
                   stack_pointer: int = -1) -> FrameRules | None:
    """The whole row at `pc` in the kernel image, or None (no FDE, a CFA or register rule
    given by an expression, an opcode we do not know). A pc in the `entry_padding` bytes
    before an FDE (arm64's patchable-entry nops, which the FDE leaves out) has the entry
    state: CFA = the DWARF register `stack_pointer`, nothing saved."""
    if not symbols.in_kernel_image(pc):
        return None
    frames = _kernel_frames()
    if frames is None:
        return None
    try:
        found = _rows(frames, pc - frames.bias)
        if found is None and entry_padding:
            following = bisect.bisect_right(frames.starts, pc - frames.bias)
            if (following < len(frames.starts)
                    and frames.starts[following] - (pc - frames.bias) <= entry_padding):
                return FrameRules(frames.starts[following] + frames.bias, stack_pointer, 0, {},
                                  False)
        return found
    except (IndexError, ValueError, struct.error):      # damaged CFI: as if there were none
        return None


def _rows(frames: _Frames, pc: int) -> FrameRules | None:
    index = bisect.bisect_right(frames.starts, pc) - 1
    if index < 0 or not frames.fdes[index][0] <= pc < frames.fdes[index][1]:
        return None
    start, _end, offset, cie_offset = frames.fdes[index]
    code_align, data_align, initial = frames._cie(cie_offset)
    length, = struct.unpack_from("<I", frames.data, offset)
    program = frames.data[offset + 24: offset + 4 + length]
    state = _execute(initial, None, code_align, data_align, start, pc)     # the CIE's rules
    state = state and _execute(program, state, code_align, data_align, start, pc, initial=state)
    if state is None or state[0] is None:
        return None
    (register, cfa_offset), saved, signed = state
    return FrameRules(start + frames.bias, register, cfa_offset, saved, signed)


def _execute(program: bytes, state, code_align: int, data_align: int, location: int, pc: int,
             initial=None, strict: bool = True):
    """The row covering `pc`: ((CFA register, offset) or None, {DWARF register: slot's CFA
    offset}, RA signed), from `state` (an FDE's: the CIE's row, `initial`). A rule we do not
    follow: None when `strict` (an unwinder), else skipped (an expression CFA: None)."""
    cfa, saved, signed = (state[0], dict(state[1]), state[2]) if state else (None, {}, False)
    stack: list = []
    cursor = 0
    while cursor < len(program):
        op = program[cursor]
        cursor += 1
        high, low = op & 0xC0, op & 0x3F
        if high == 0x40:                                        # advance_loc
            location += low * code_align
        elif high == 0x80:                                      # offset
            value, cursor = _uleb(program, cursor)
            saved[low] = value * data_align
        elif high == 0xC0:                                      # restore
            saved.pop(low, None)
            if initial and low in initial[1]:
                saved[low] = initial[1][low]
        elif op in (0x02, 0x03, 0x04):
            size = {0x02: 1, 0x03: 2, 0x04: 4}[op]
            location += int.from_bytes(program[cursor: cursor + size], "little") * code_align
            cursor += size
        elif op == 0x01:
            location = struct.unpack_from("<Q", program, cursor)[0]
            cursor += 8
        elif op == 0x0A:                                        # remember_state
            stack.append((cfa, dict(saved), signed))
        elif op == 0x0B:                                        # restore_state
            if stack:
                cfa, saved, signed = stack.pop()
        elif op in (0x0C, 0x12):
            register, cursor = _uleb(program, cursor)
            value, cursor = (_uleb if op == 0x0C else _sleb)(program, cursor)
            cfa = (register, value * (1 if op == 0x0C else data_align))
        elif op == 0x0D:
            register, cursor = _uleb(program, cursor)
            cfa = (register, cfa[1] if cfa else 0)
        elif op in (0x0E, 0x13):
            value, cursor = (_uleb if op == 0x0E else _sleb)(program, cursor)
            cfa = (cfa[0], value * (1 if op == 0x0E else data_align)) if cfa else None
        elif op in (0x05, 0x11):                                # offset_extended(_sf)
            register, cursor = _uleb(program, cursor)
            value, cursor = (_uleb if op == 0x05 else _sleb)(program, cursor)
            saved[register] = value * data_align
        elif op in (0x06, 0x07, 0x08):      # restore_extended, undefined, same_value
            register, cursor = _uleb(program, cursor)
            saved.pop(register, None)
        elif op == 0x2D:
            signed = not signed                                 # AARCH64_negate_ra_state
        elif op != 0x00:            # expressions, register rules: not something we follow
            cfa = None if op == 0x0F else cfa                   # def_cfa_expression
            cursor = None if strict else _skip_operands(op, program, cursor)
            if cursor is None:                  # strict, or an opcode we do not know
                return None
        if location > pc:
            break
    return cfa, saved, signed
