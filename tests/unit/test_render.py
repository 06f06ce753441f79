"""report_probe() formatting, byte for byte, on hand-made probes (no target)."""
from __future__ import annotations

import pytest


@pytest.fixture
def mods(fake_gdb):
    from gdb_kprobe.kernel import kprobes
    from gdb_kprobe.kernel import kprobes_list as report
    from gdb_kprobe.ui import render
    from gdb_kprobe.kernel.kallsyms import Location
    return render, kprobes, report, Location


def probe(kprobes, addr=0xFFFFFFFF8189AD74, flags=0):
    return kprobes.Kprobe(address=0xFF11000004599818, addr=addr, flags=flags, pre_handler=1,
                          post_handler=0, nmissed=0, symbol_name=0, offset=0, opcode=0x48)


def test_kernel_symbol_line_has_blank_module_column(mods):
    render, kprobes, report, Location = mods
    row = report.ProbeRow(probe(kprobes), None, "k", Location("inet_accept", 0x14, 160, None))
    assert render.debugfs_line(row) == "ffffffff8189ad74  k  inet_accept+0x14    "


def test_module_symbol_and_flags(mods):
    render, kprobes, report, Location = mods
    p = probe(kprobes, 0xFFFFFFFFC0209010, kprobes.KPROBE_FLAG_DISABLED | kprobes.KPROBE_FLAG_FTRACE)
    row = report.ProbeRow(p, None, "r", Location("kp_lab_target", 0, 16, "kp_lab_kprobe"))
    assert render.debugfs_line(row) == \
        "ffffffffc0209010  r  kp_lab_target+0x0  kp_lab_kprobe [DISABLED][FTRACE]"


def test_gone_hides_disabled_and_unknown_symbol_uses_address(mods):
    render, kprobes, report, _ = mods
    p = probe(kprobes, 0xFFFFFFFFC0209010, kprobes.KPROBE_FLAG_GONE | kprobes.KPROBE_FLAG_DISABLED)
    row = report.ProbeRow(p, None, "k", None)
    assert render.debugfs_line(row) == "ffffffffc0209010  k  0xffffffffc0209010 [GONE]"


def test_optimized_and_ftrace_come_from_the_aggregate(mods):
    render, kprobes, report, Location = mods
    aggregate = probe(kprobes, flags=kprobes.KPROBE_FLAG_OPTIMIZED)
    child = probe(kprobes, flags=kprobes.KPROBE_FLAG_DISABLED)
    row = report.ProbeRow(child, aggregate, "k", Location("inet_accept", 0x14, 160, None))
    assert render.debugfs_line(row).endswith("    [DISABLED][OPTIMIZED]")


def test_flag_names_decode_unknown_bits(mods):
    _, kprobes, _, _ = mods
    p = probe(kprobes, flags=kprobes.KPROBE_FLAG_FTRACE | kprobes.KPROBE_FLAG_ON_FUNC_ENTRY | 0x100)
    assert p.flag_names() == ["FTRACE", "ON_FUNC_ENTRY", "0x100?"]
