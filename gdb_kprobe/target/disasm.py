"""Instructions: disassembled from live target memory or from the vmlinux file.

Live kernel text differs from the file (int3, optprobe jumps, ftrace calls), so
both views are offered. The file view asks gdb with `trust-readonly-sections`
on, which makes it read read-only sections from the symbol file, not the target.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
from typing import Callable, Iterator

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import context, dump, memory, symbols

__all__ = ["Insn", "live", "original", "from_bytes"]


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
    # trust-readonly-sections makes gdb read read-only sections from the symbol file
    with context.setting("trust-readonly-sections", "on") if from_file else \
            _from_target_memory() as translated:
        kwargs = {"count": count} if end is None else {"end_pc": end - 1}
        if end is not None and count is not None:
            kwargs["count"] = count
        inferior = gdb.selected_inferior()
        try:
            return [Insn(entry["addr"], memory.read(entry["addr"], entry["length"]) if translated
                         else bytes(inferior.read_memory(entry["addr"], entry["length"])),
                         entry["asm"])
                    for entry in _architecture().disassemble(start, **kwargs)]
        except gdb.MemoryError as exc:
            raise KpError(f"cannot read code at {start:#x}: {exc}") from None


@contextlib.contextmanager
def _from_target_memory() -> Iterator[bool]:
    """Around a disassembly of live memory: True (and gdb's disassembler fed from
    memory.read()) when reads go through a dump's page tables, where gdb itself would
    read the vmlinux file."""
    if not dump.reads_through_page_tables():
        yield False
        return
    with _reading_from(memory.read):
        yield True


@contextlib.contextmanager
def _reading_from(reader: Callable[[int, int], bytes]) -> Iterator[None]:
    """gdb's own disassembler fed from `reader(address, length)`, registered only around
    one call. (gdb 13's builtin_disassemble ignores its memory_source argument; a
    DisassembleInfo whose read_memory is overridden works on gdb 13 and later alike.)"""
    disassembler = importlib.import_module("gdb.disassembler")   # gdb.disassembler is the C one

    class ReaderInfo(disassembler.DisassembleInfo):
        def read_memory(self, length: int, offset: int) -> bytes:
            address = arch.u64(self.address + offset)     # gdb passes it signed
            try:
                return reader(address, length)
            except KpError as exc:
                raise gdb.MemoryError(str(exc)) from None

    class ReaderDisassembler(disassembler.Disassembler):
        def __call__(self, info):
            return disassembler.builtin_disassemble(ReaderInfo(info))

    name = _architecture().name()
    replaced = disassembler.register_disassembler(ReaderDisassembler("gdb-kprobe"), name)
    try:
        yield
    finally:
        disassembler.register_disassembler(replaced, name)


def from_bytes(start: int, data: bytes, end: int) -> list[Insn]:
    """The instructions starting in [start, end] of code whose bytes from `start` are
    `data` (which must reach an instruction's length past `end`): code as the kernel
    decodes it, e.g. live text with the bytes kprobes replaced put back."""
    def reader(address: int, length: int) -> bytes:
        at = address - start
        if at < 0 or at + length > len(data):
            raise KpError(f"cannot read {length} bytes at {address:#x}: past the code given")
        return data[at: at + length]

    with _reading_from(reader):
        try:
            found = _architecture().disassemble(start, end_pc=end)
        except gdb.MemoryError as exc:
            raise KpError(f"cannot decode the code at {start:#x}: {exc}") from None
    return [Insn(entry["addr"], reader(entry["addr"], entry["length"]), entry["asm"])
            for entry in found]


def live(address: int, count: int = 1, end: int | None = None) -> list[Insn]:
    """Instructions as the target has them now."""
    if not arch.is_canonical(address):
        raise KpError(f"non-canonical address {address:#x}")
    return _disassemble(address, count, end, from_file=False)


def original(address: int, count: int | None = 1, end: int | None = None) -> list[Insn] | None:
    """Instructions as the vmlinux file has them; None outside the kernel image."""
    if not symbols.in_kernel_image(address):
        return None
    return _disassemble(address, count, end, from_file=True)
