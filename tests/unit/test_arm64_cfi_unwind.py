"""The arm64 unwinder's pure parts (issue #18): a CFI row with every saved register and
the return-address signing state, the address bits a PAC sits above, PAC stripping of a
return address, pt_regs' regs[31] as registers; and the hooks the engine asks of the seam
exist in both architectures' modules."""
from __future__ import annotations

import struct
import types

from gdb_kprobe.arch import arm64, x86_64

# AADWARF64: x29 = 29, x30 = 30, sp = 31; code alignment 4, data alignment -8 (the Debian
# vmlinux's CIE)
CIE_INITIAL = bytes([0x0C, 31, 0])                      # def_cfa sp+0
FDE = bytes([0x41, 0x2D,                                # +4: paciasp (negate_ra_state)
             0x41, 0x0E, 48,                            # +8: stp x29, x30, [sp, #-48]!
             0x9D, 6, 0x9E, 5,                          #     x29 at cfa-48, x30 at cfa-40
             0x42, 0x93, 4,                             # +16: x19 at cfa-32
             0x44, 0x0A,                                # +32: remember_state (epilogue)
             0xDD, 0xDE, 0xD3, 0x0E, 0, 0x2D,           #     restore all, cfa sp+0, autiasp
             0x41, 0x0B])                               # +36: restore_state


def row(pc_offset: int):
    from gdb_kprobe.target import cfi
    start = 0x1000
    initial = cfi._execute(CIE_INITIAL, None, 4, -8, start, start + pc_offset)
    return cfi._execute(FDE, initial, 4, -8, start, start + pc_offset, initial=initial)


def test_cfi_rows_give_every_saved_register_and_the_signing_state(fake_gdb):
    assert row(0) == ((31, 0), {}, False)
    assert row(4) == ((31, 0), {}, True)
    assert row(8) == ((31, 48), {29: -48, 30: -40}, True)
    assert row(20) == ((31, 48), {29: -48, 30: -40, 19: -32}, True)
    assert row(32) == ((31, 0), {}, False)                 # after the epilogue's rows
    assert row(36) == ((31, 48), {29: -48, 30: -40, 19: -32}, True)   # code after the ret


def test_a_rule_we_do_not_follow_gives_none(fake_gdb):
    from gdb_kprobe.target import cfi
    expression = bytes([0x0F, 1, 0x70])                    # def_cfa_expression
    assert cfi._execute(expression, None, 4, -8, 0, 8) is None


def test_address_bits_come_from_tcr_el1_t1sz_before_va_bits():
    # Debian's 6.12 is built for 52-bit VA; on a CPU with 48 the kernel runs with T1SZ 16
    assert arm64.address_bits({"NUMBER(VA_BITS)": "52", "NUMBER(TCR_EL1_T1SZ)": "0x10"}) == 48
    assert arm64.address_bits({"NUMBER(VA_BITS)": "52"}) == 52
    assert arm64.address_bits({}) == arm64.VA_BITS_DEFAULT == 48
    assert x86_64.address_bits({}) == 64


def test_a_signed_return_address_is_stripped():
    signed = 0x98EB800008BC0020                          # seen as gdb's frame #2 on 6.1
    assert arm64.code_address(signed, 48) == 0xFFFF800008BC0020
    assert arm64.code_address(0xFFFF800008BC0020, 48) == 0xFFFF800008BC0020
    assert x86_64.code_address(0xFFFFFFFF81000000) == 0xFFFFFFFF81000000


def test_pt_regs_values_read_regs_array():
    raw = b"".join(struct.pack("<Q", 0x100 + n) for n in range(31))
    fields = {"sp": 0xFFFF80000A1D3890, "pc": 0xFFFF800008A08C04, "pstate": 0x3C5}
    view = types.SimpleNamespace(bytes=lambda name: raw, int=fields.__getitem__)
    values = arm64.pt_regs_values(view)
    assert values["x0"] == 0x100 and values["x30"] == 0x11E and values["pc"] == fields["pc"]
    assert set(values) == set(arm64.UNWIND_REGS)
    assert arm64.saved_in_kernel(view)                   # EL1h
    assert not arm64.saved_in_kernel(types.SimpleNamespace(
        int={**fields, "pstate": 0}.__getitem__))         # EL0t: a user's pt_regs


def test_the_engine_hooks_exist_in_both_architectures():
    hooks = {"ENTRY_SYMBOLS", "ENTRY_PREFIXES", "ENTRY_CALLEES", "CODE_SPACE_START",
             "TRAP_PC_ADVANCE", "PT_REGS_PC", "PT_REGS_SP", "UNWIND_REGS",
             "SIGNED_RETURN_ADDRESSES", "RETURN_ADDRESS_REGISTER", "DWARF_REGS",
             "KPROBE_STAGES", "saved_in_kernel", "code_address", "address_bits",
             "FRAME_POINTER_REGISTER", "pt_regs_values", "ENTRY_PADDING"}
    assert hooks <= set(arm64.__all__) and hooks <= set(x86_64.__all__)
    assert "bt" in arm64.COMMANDS and "kp-where" in arm64.COMMANDS
