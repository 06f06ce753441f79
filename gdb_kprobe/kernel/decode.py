"""Instruction boundaries, decoded from the function start as register_kprobe() does.

can_probe() in arch/x86/kernel/kprobes/core.c decodes the original instructions
from the start of the function and refuses (-EILSEQ) an address that falls
inside one. The original code comes from the vmlinux file (live text may carry
int3s and jumps); module code is read live.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import ftrace, kprobes
from gdb_kprobe.kernel.places import Place
from gdb_kprobe.target import disasm, layouts, memory

__all__ = ["Boundary", "check", "check_live", "recovered_code", "require_boundary",
           "function_code", "EILSEQ"]

MAX_INSN_SIZE = 16

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
    return _boundary_at(place.address, insns)


def _boundary_at(address: int, insns: list[disasm.Insn]) -> Boundary:
    """Is `address` where one of `insns` starts, or inside one?"""
    for insn in insns:
        if insn.address == address:
            return Boundary(True, insn, insns)
        if insn.address < address < insn.address + len(insn.raw):
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


def recovered_code(start: int, end: int) -> bytes:
    """Live bytes of [start, end) with what kprobes and ftrace wrote put back, as the kernel
    decodes them (recover_probed_instruction()): the ftrace call site as a 5-byte nop, a
    probe's first byte from kprobe.opcode, the four bytes after it under an optimized
    probe's jmp from optinsn.copied_insn. The code that boot-time patching changed (return
    thunks, alternatives, static calls) stays as it runs."""
    data = bytearray(memory.read(start, end - start))
    site = ftrace.location_range(start, end - 1)
    if site is not None and start <= site and site + len(arch.NOP5) <= end:
        # the ftrace call site reads as the nop it was built as (__recover_probed_insn())
        data[site - start: site - start + len(arch.NOP5)] = arch.NOP5
    optimized = layouts.try_layout("struct optimized_kprobe")
    for bucket in kprobes.read_table().buckets:
        for entry in bucket.probes:
            offset = entry.addr - start
            if entry.ftrace or not -arch.REL32_SIZE < offset < len(data):
                continue
            restored = bytes([entry.opcode])
            if entry.optimized and optimized is not None:
                address = entry.address - optimized.offset("kp")
                view = optimized.view(memory.read(address, optimized.size), address)
                restored += view.bytes("optinsn.copied_insn")
            for index, byte in enumerate(restored):
                if 0 <= offset + index < len(data):
                    data[offset + index] = byte
    return bytes(data)


def check_live(place: Place) -> Boundary:
    """can_probe() as the kernel runs it: the function decoded from its start in live memory
    with the probes' bytes recovered, up to the place. An ftrace call site decodes as the
    5-byte nop it is recovered to (same length)."""
    if place.symbol is None:
        raise KpError(f"{place.address:#x} is in no known function; cannot decode from a "
                      "function start")
    start = place.address - place.offset
    end = place.address + MAX_INSN_SIZE
    try:
        data = recovered_code(start, end)
    except KpError:                        # the function ends a mapped page: stop there
        end = (place.address | 0xFFF) + 1
        data = recovered_code(start, end)
    insns = disasm.from_bytes(start, data, place.address)
    return _boundary_at(place.address, insns)


def function_code(start: int, size: int, in_module: bool) -> list[disasm.Insn]:
    """Every instruction of the function [start, start + size) at rest: the vmlinux file's
    code, or a module's live code with the probes' bytes put back (module text has no file
    copy here). Its boundaries are the places a kprobe may go."""
    end = start + size
    if not in_module:
        return disasm.original(start, None, end) or []
    # the size runs to the next symbol: its last instruction may end past it
    return disasm.from_bytes(start, recovered_code(start, end + arch.MAX_INSN_SIZE), end)
