"""kernel/kaslr.py's slides to try and kernel/sched.py's current task, per architecture seam
(x86-64 and arm64), on a stand-in gdb: arm64's KASLR range is too wide to try each slide,
and its `current` is a register in the kernel."""
from __future__ import annotations

import types

import pytest

ARM64_TEXT, ARM64_END = 0xFFFF800008000000, 0xFFFF800009AB0000
ARM64_VECTORS = 0xFFFF800008010800
SLIDE = 0x317DBDC00000                      # one seen on a 6.1-arm64 boot


class Table:
    def __init__(self, symbols: dict[str, int]) -> None:
        self.symbols = symbols
        self.bias = 0

    def address_of(self, name: str) -> int | None:
        return self.symbols.get(name)


def _frame(fake_gdb, pc: int, registers: dict[str, int]) -> None:
    def read_register(name: str) -> int:
        if name not in registers:
            raise fake_gdb.error(f"Invalid register `{name}'")
        return registers[name]
    fake_gdb.newest_frame = lambda: types.SimpleNamespace(pc=lambda: pc,
                                                          read_register=read_register)


@pytest.fixture
def arm64(fake_gdb):
    from gdb_kprobe import arch
    arch.select("aarch64")
    yield fake_gdb
    arch.select("i386:x86-64")


def test_arm64_slide_comes_from_vbar_first(arm64):
    from gdb_kprobe.kernel import kaslr
    table = Table({"_text": ARM64_TEXT, "_end": ARM64_END, "vectors": ARM64_VECTORS})
    _frame(arm64, ARM64_TEXT + SLIDE + 0x123450, {"VBAR": ARM64_VECTORS + SLIDE})
    slides = kaslr._candidate_slides(table)
    assert slides[0] == SLIDE and slides.count(SLIDE) == 1
    # then the pc's: a handful, not arm64's 2**26 granules
    assert len(slides) <= (ARM64_END - ARM64_TEXT) // 0x200000 + 1


def test_arm64_without_the_register_the_pc_tells(arm64):
    from gdb_kprobe.kernel import kaslr
    table = Table({"_text": ARM64_TEXT, "_end": ARM64_END, "vectors": ARM64_VECTORS})
    _frame(arm64, ARM64_TEXT + SLIDE + 0x1234560, {})
    slides = kaslr._candidate_slides(table)
    assert SLIDE in slides and all(s % 0x200000 == 0 and s for s in slides)
    # a pc in user space (a CPU at EL0) gives none, and nothing is tried blindly
    _frame(arm64, 0x0000AAAAD0001000, {})
    assert kaslr._candidate_slides(table) == []


def test_x86_still_tries_every_slide_pc_first(fake_gdb):
    from gdb_kprobe import arch
    from gdb_kprobe.kernel import kaslr
    arch.select("i386:x86-64")
    text, end = 0xFFFFFFFF81000000, 0xFFFFFFFF83000000
    table = Table({"_text": text, "_end": end})
    _frame(fake_gdb, text + 0x2600000 + 0x1000, {})
    slides = kaslr._candidate_slides(table)
    # start <= pc - slide < end: 0x800000 .. 0x2600000 first
    assert slides[:16] == list(range(0x800000, 0x2600001, 0x200000))
    assert len(slides) == 2 * arch.KASLR_RANGE // arch.KASLR_ALIGN - 1    # all but 0


def _sched(monkeypatch, cpu: int, per_cpu: dict[int, int], symbols: dict[str, int]):
    from gdb_kprobe.kernel import percpu, sched
    monkeypatch.setattr(sched.context, "current_cpu", lambda: cpu)
    monkeypatch.setattr(sched.symbols, "kernel", lambda: Table(symbols))
    monkeypatch.setattr(percpu, "offsets", lambda: [0x1000, 0x2000])
    monkeypatch.setattr(sched.memory, "read_u64", lambda address: per_cpu[address])
    return sched


def test_arm64_current_is_sp_el0_in_the_kernel_entry_task_at_el0(arm64, monkeypatch):
    entry = 0xFFFF8000094C92C8
    per_cpu = {entry + 0x1000: 0xFFFF000001111000, entry + 0x2000: 0xFFFF000002222000}
    sched = _sched(monkeypatch, 0, per_cpu, {"__entry_task": entry})
    el1 = {"cpsr": 0x3C5, "SP_EL0": 0xFFFF000003333000}
    assert sched.current_task(0, el1.__getitem__) == 0xFFFF000003333000
    assert sched.current_task(1, el1.__getitem__) == 0xFFFF000002222000   # another CPU
    el0 = {"cpsr": 0x80000000, "SP_EL0": 0x0000FFFFC0DE0000}
    assert sched.current_task(0, el0.__getitem__) == 0xFFFF000001111000
    _frame(arm64, 0, {})                          # a stub without SP_EL0 nor cpsr
    assert sched.current_task(0) == 0xFFFF000001111000


def test_x86_current_is_per_cpu(fake_gdb, monkeypatch):
    from gdb_kprobe import arch
    arch.select("i386:x86-64")
    per_cpu = {0xC000 + 0x2000: 0xFFFF888001234000}
    sched = _sched(monkeypatch, 1, per_cpu, {"current_task": 0xC000})
    assert sched.current_task(1) == 0xFFFF888001234000
    sched = _sched(monkeypatch, 1, per_cpu, {})
    assert sched.current_task(1) is None
