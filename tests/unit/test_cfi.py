"""The CFA rule from .debug_frame call-frame instructions (target/cfi.py), on programs the
way gcc writes them for a frame-pointer function with an early return."""
from __future__ import annotations

import pytest


@pytest.fixture
def cfi(fake_gdb):
    from gdb_kprobe.target import cfi
    return cfi


# CIE initial instructions: def_cfa rsp+8
INITIAL = bytes([0x0C, 7, 8])
# push %rbp (1 byte): CFA rsp+16; mov %rsp,%rbp (3): CFA rbp+16; 0x20 bytes of body;
# remember_state, pop %rbp: CFA rsp+8; ret (1); restore_state: the code after ret has rbp+16
PROGRAM = bytes([0x41, 0x0E, 16,        # advance 1, def_cfa_offset 16
                 0x43, 0x0D, 6,         # advance 3, def_cfa_register rbp
                 0x60, 0x0A,            # advance 0x20, remember_state
                 0x0C, 7, 8,            # def_cfa rsp+8 (after pop %rbp at +0x24)
                 0x41, 0x0B])           # advance 1 (past ret), restore_state


@pytest.mark.parametrize("offset, rule", [
    (0x0, ("rsp", 8)), (0x1, ("rsp", 16)), (0x3, ("rsp", 16)), (0x4, ("rbp", 16)),
    (0x23, ("rbp", 16)), (0x24, ("rsp", 8)), (0x25, ("rbp", 16)), (0x40, ("rbp", 16)),
])
def test_rule_at_each_offset(cfi, offset, rule):
    start = 0xFFFFFFFF81000000
    found, _ = cfi._facts(INITIAL, PROGRAM, 1, -8, start, start + offset)
    assert tuple(found) == rule


def test_an_expression_or_unknown_opcode_gives_no_rule(cfi):
    rsp_8 = bytes([0x0C, 7, 8])                         # def_cfa rsp+8
    assert cfi._facts(rsp_8, bytes([0x0F, 1, 0x77]), 1, -8, 0, 4) == (None, None)
    assert cfi._facts(rsp_8, bytes([0x3F]), 1, -8, 0, 4) == (None, None)


def test_leb128(cfi):
    assert cfi._uleb(bytes([0xE5, 0x8E, 0x26]), 0) == (624485, 3)
    assert cfi._sleb(bytes([0x7F]), 0) == (-1, 1)
    assert cfi._sleb(bytes([0x80, 0x7F]), 0) == (-128, 2)
