"""Prologue analysis on the real instruction sequences of inet_accept (as gdb prints them)."""
from __future__ import annotations

import dataclasses

import pytest


@pytest.fixture
def prologue(fake_gdb):
    from gdb_kprobe.analysis import prologue
    return prologue


@dataclasses.dataclass
class Insn:
    address: int
    raw: bytes
    asm: str


def insns(listing: str) -> list[Insn]:
    found = []
    for line in listing.strip().splitlines():
        offset, length, asm = line.split(None, 2)
        found.append(Insn(int(offset, 16), b"\0" * int(length), asm))
    return found


DEBIAN_61 = insns("""
0x00 5 call   0xffffffff8106b730 <__fentry__>
0x05 2 push   %r12
0x07 3 movzbl %cl,%ecx
0x0a 3 mov    %rsi,%r12
0x0d 2 mov    %edx,%esi
0x0f 1 push   %rbp
0x10 3 mov    %rdi,%rbp
0x13 1 push   %rbx
0x14 4 sub    $0x10,%rsp
0x18 4 mov    0x18(%rdi),%rdi
0x1c 9 mov    %gs:0x28,%rax
0x25 5 mov    %rax,0x8(%rsp)
0x2a 2 xor    %eax,%eax
0x2c 5 lea    0x4(%rsp),%rdx
0x31 8 movl   $0xffffffea,0x4(%rsp)
""")

FRAME_POINTER = insns("""
0x00 5 call   0xffffffff8106b730 <__fentry__>
0x05 1 push   %rbp
0x06 3 mov    %rsp,%rbp
0x09 2 push   %r12
0x0b 4 sub    $0x18,%rsp
0x0f 7 movl   $0xffffffea,-0x1c(%rbp)
0x16 4 mov    %rdi,-0x28(%rbp)
""")


def test_debian_prologue_without_frame_pointer(prologue):
    facts, slots = prologue.analyse(DEBIAN_61, 0x31)
    assert facts.pushes == ["r12", "rbp", "rbx"] and facts.allocated == 0x10
    assert not facts.frame_pointer
    assert facts.end == 0x18 and facts.cfa_from_rsp == 8 + 24 + 16
    err = [s for s in slots if s.offset == 4]
    assert err and all(s.cfa_offset == 4 - 48 for s in err), "0x4(%rsp) is CFA-44 (fbreg -44)"


def test_before_the_allocation(prologue):
    facts, _ = prologue.analyse(DEBIAN_61, 0x14)
    assert facts.allocated == 0 and facts.cfa_from_rsp == 32


def test_frame_pointer_prologue(prologue):
    facts, slots = prologue.analyse(FRAME_POINTER, 0x16 + 4)
    assert facts.frame_pointer and facts.end == 0x0f
    assert [(s.offset, s.cfa_offset) for s in slots] == [(-0x1c, -0x2c), (-0x28, -0x38)]
    assert facts.cfa_relative("rbp", -0x1c) == -0x2c
