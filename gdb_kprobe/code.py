"""Instructions: disassembled from live target memory or from the vmlinux file.

Live kernel text differs from the file (int3, optprobe jumps, ftrace calls), so
both views are offered. The file view asks gdb with `trust-readonly-sections`
on, which makes it read read-only sections from the symbol file, not the target.
"""
from __future__ import annotations

import dataclasses
import importlib

import gdb

from gdb_kprobe import symbols, target
from gdb_kprobe.errors import KpError


@dataclasses.dataclass(frozen=True)
class Insn:
    address: int
    raw: bytes
    asm: str


def _architecture() -> gdb.Architecture:
    frame = gdb.selected_frame() if gdb.selected_thread() is not None else None
    return frame.architecture() if frame is not None else \
        gdb.selected_inferior().architecture()


def _disassemble(start: int, count: int | None, end: int | None, from_file: bool) -> list[Insn]:
    arch = _architecture()
    inferior = gdb.selected_inferior()
    previous = gdb.parameter("trust-readonly-sections")
    # a dump without virtual addresses: gdb itself would read the vmlinux file there
    translated = not from_file and target.reads_through_page_tables()
    if from_file:
        gdb.execute("set trust-readonly-sections on", to_string=True)
    elif translated:
        disassembler, ours = _target_memory_disassembler()
        replaced = disassembler.register_disassembler(ours, arch.name())
    try:
        kwargs = {"count": count} if end is None else {"end_pc": end - 1}
        if end is not None and count is not None:
            kwargs["count"] = count
        found = []
        for entry in arch.disassemble(start, **kwargs):
            raw = target.read(entry["addr"], entry["length"]) if translated else \
                bytes(inferior.read_memory(entry["addr"], entry["length"]))
            found.append(Insn(entry["addr"], raw, entry["asm"]))
        return found
    except gdb.MemoryError as exc:
        raise KpError(f"cannot read code at {start:#x}: {exc}") from None
    finally:
        if from_file and not previous:
            gdb.execute("set trust-readonly-sections off", to_string=True)
        elif translated:
            disassembler.register_disassembler(replaced, arch.name())


def _target_memory_disassembler():
    """gdb's own disassembler fed from target.read(), registered only around one call.
    (gdb 13's builtin_disassemble ignores its memory_source argument; a DisassembleInfo
    whose read_memory is overridden works on gdb 13 and later alike.)"""
    disassembler = importlib.import_module("gdb.disassembler")   # gdb.disassembler is the C one

    class TargetMemoryInfo(disassembler.DisassembleInfo):
        def read_memory(self, length: int, offset: int) -> bytes:
            address = (self.address + offset) & ((1 << 64) - 1)     # gdb passes it signed
            try:
                return target.read(address, length)
            except KpError as exc:
                raise gdb.MemoryError(str(exc)) from None

    class TargetMemory(disassembler.Disassembler):
        def __call__(self, info):
            return disassembler.builtin_disassemble(TargetMemoryInfo(info))

    return disassembler, TargetMemory("gdb-kprobe dump memory")


def live(address: int, count: int = 1, end: int | None = None) -> list[Insn]:
    """Instructions as the target has them now."""
    if not target.is_canonical(address):
        raise KpError(f"non-canonical address {address:#x}")
    return _disassemble(address, count, end, from_file=False)


def original(address: int, count: int | None = 1, end: int | None = None) -> list[Insn] | None:
    """Instructions as the vmlinux file has them; None outside the kernel image."""
    if not symbols.in_kernel_image(address):
        return None
    return _disassemble(address, count, end, from_file=True)
