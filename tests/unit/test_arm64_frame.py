"""arm64's frame at a PC for kp-locals (arch/arm64_frame.py) on Debian 6.1's inet_accept, and
the saved registers target/cfi.py reads from AArch64 CFI (x29's slot, negate_ra_state)."""
from __future__ import annotations

import dataclasses

import pytest

from gdb_kprobe.arch import arm64_frame

START = 0xFFFF800008A52CA8


@dataclasses.dataclass
class Insn:
    address: int
    asm: str
    raw: bytes = b"\0" * 4


# Debian 6.1.0 cloud-arm64 inet_accept, from its DWARF low_pc (the two patchable nops before)
LISTING = ["paciasp", "sub\tsp, sp, #0x40", "mrs\tx4, sp_el0", "stp\tx29, x30, [sp, #16]",
           "add\tx29, sp, #0x10", "stp\tx19, x20, [sp, #32]", "mov\tx20, x0",
           "str\tx21, [sp, #48]", "mov\tx21, x1", "mov\tw1, w2", "add\tx2, sp, #0x4",
           "ldr\tx0, [x4, #1360]", "str\tx0, [sp, #8]", "mov\tx0, #0x0",
           "mov\tw0, #0xffffffea            \t// #-22", "str\tw0, [sp, #4]",
           "ldr\tx0, [x20, #24]", "ldr\tx0, [x0, #40]", "ldr\tx4, [x4, #32]", "blr\tx4"]
CODE = [Insn(START + 4 * n, asm) for n, asm in enumerate(LISTING)]


def at(offset: int, cfa=None, saves=None) -> dict:
    return arm64_frame.frame_facts(CODE, START + offset, cfa, saves)


def test_at_the_entry_nothing_is_allocated():
    facts = at(0)
    assert facts["cfa_from_rsp"] == 0 and not facts["frame_pointer"] and facts["pushes"] == []
    assert facts["end"] == START + 0x20            # after `str x21, [sp, #48]`


def test_allocated_but_x29_not_yet_set():
    facts = at(0x10)                               # `add x29, sp, #0x10` not yet run
    assert facts["cfa_from_rsp"] == 0x40 and not facts["frame_pointer"]
    assert facts["pushes"] == ["x29", "x30"]


def test_after_the_frame_record_cfa_is_x29_plus_its_depth():
    facts = at(0x40)
    assert facts["frame_pointer"] and facts["frame_register"] == "x29"
    assert facts["frame_offset"] == 0x30           # x29 = sp + 0x10 = CFA - 0x30
    assert facts["pushes"] == ["x29", "x30", "x19", "x20", "x21"]
    # the CFI agrees and wins where it speaks: x29 saved at CFA-0x30
    cfi = at(0x40, ("sp", 0x40), {"x29": -0x30, "x30": -0x28, "x19": -0x20, "x20": -0x18,
                                   "x21": -0x10})
    assert cfi["frame_offset"] == 0x30 and cfi["cfa_from_rsp"] == 0x40


def test_past_ldp_x29_the_cfi_takes_the_frame_pointer_back():
    facts = at(0x40, ("sp", 0x40), {"x19": -0x20})
    assert not facts["frame_pointer"] and facts["cfa_from_rsp"] == 0x40


@pytest.fixture
def aarch64_cfi(fake_gdb):
    from gdb_kprobe import arch
    from gdb_kprobe.target import cfi
    arch.select("aarch64")
    yield cfi
    arch.select("i386:x86-64")


def test_cfi_keeps_saved_registers(aarch64_cfi):
    cfi = aarch64_cfi
    initial = bytes([0x0C, 31, 0])                 # def_cfa sp+0
    program = bytes([0x41, 0x2D,                   # advance 1 (paciasp), negate_ra_state
                     0x41, 0x0E, 0x40,             # advance 1, def_cfa_offset 0x40
                     0x42, 0x80 | 29, 6, 0x80 | 30, 5,   # advance 2: x29 at CFA-48, x30 -40
                     0x4A, 0xC0 | 29, 0xC0 | 30])  # advance 10: restore x29, x30
    for offset, expected in ((0, {}), (8, {}), (16, {"x29": -48, "x30": -40}), (56, {})):
        rule, saves = cfi._facts(initial, program, 4, -8, START, START + offset)
        assert rule is not None and rule.register == "sp"
        assert saves == expected, (offset, saves)
