"""kernel/owners.py: one attribution of addresses and probes (issue #16). A handler in module
space that no listed module holds is flagged (a module that took itself off the list), a
normal module's probe is not, and "kernel" is said only for the kernel image."""
from __future__ import annotations

import pytest

KERNEL_START, KERNEL_END = 0xFFFFFFFF81000000, 0xFFFFFFFF83000000
LISTED = 0xFFFFFFFFC0209000          # kp_lab_kprobe's memory
HIDDEN_CODE, HIDDEN_DATA = 0xFFFFFFFFC0201000, 0xFFFFFFFFC0203000
HEAP = 0xFF11000004599818


@pytest.fixture
def owners(fake_gdb, monkeypatch):
    from gdb_kprobe.kernel import modules, owners
    from gdb_kprobe.target import symbols
    monkeypatch.setattr(symbols, "in_kernel_image",
                        lambda address: KERNEL_START <= address < KERNEL_END)
    layout = owners.MemoryMap(modules=(0xFFFFFFFFC0000000, 0xFFFFFFFFFF000000),
                              vmalloc=(0xFFFFC90000000000, 0xFFFFE90000000000),
                              direct_map=(0xFF11000000000000, 0xFF11400000000000))
    monkeypatch.setattr(owners, "memory_map", lambda: layout)
    listed = modules.Module(0xFFFFFFFFC020B000, "kp_lab_kprobe", 0, [(LISTED, 0x2000)],
                            [(LISTED, 0x1000)], 0)
    return owners, [listed]


def test_regions(owners):
    owners, listed = owners
    assert owners.region_of(0xFFFFFFFF81354500, listed).kind == "kernel_image"
    assert owners.region_of(LISTED + 0x10, listed) == owners.Region("module", "kp_lab_kprobe")
    assert owners.region_of(HIDDEN_CODE, listed).kind == "module_space"
    assert owners.region_of(0xFFFFC90000001000, listed).kind == "vmalloc"
    assert owners.region_of(HEAP, listed).kind == "direct_map"
    assert owners.region_of(0x1000, listed).kind == "unknown"


def test_hidden_module_probe_is_flagged(owners):
    owners, listed = owners
    found = owners.attribute(HIDDEN_DATA, [("pre_handler", HIDDEN_CODE), ("post_handler", 0)],
                             listed)
    assert found.owner.kind == "unlisted_module" and found.owner.flagged
    assert str(found.owner) == (
        "UNLISTED MODULE CODE at 0xffffffffc0201000 (in module space, in no module of the "
        "module list: a module that hid itself?)")
    assert [(w.pointer, w.address, w.region) for w in found.warnings] == [
        ("pre_handler", HIDDEN_CODE, "module_space"),
        ("struct kprobe", HIDDEN_DATA, "module_space")]
    assert "kernel" not in str(found.owner)


def test_normal_module_and_trace_event_are_not_flagged(owners):
    owners, listed = owners
    found = owners.attribute(LISTED, [("pre_handler", LISTED + 0x100),
                                      ("post_handler", LISTED + 0x200)], listed)
    assert found == owners.Attribution(owners.Owner("module", "kp_lab_kprobe"))
    assert str(found.owner) == "module kp_lab_kprobe"
    # a kretprobe of a module: kernel pre_handler_kretprobe, the module's ret handler
    found = owners.attribute(LISTED, [("pre_handler", 0xFFFFFFFF81190000),
                                      ("kretprobe handler", LISTED + 0x10)], listed)
    assert str(found.owner) == "module kp_lab_kprobe" and not found.warnings
    # kprobe_events: kprobe_dispatcher in the kernel, struct trace_kprobe kmalloc'ed
    found = owners.attribute(HEAP, [("pre_handler", 0xFFFFFFFF811E5910)], listed,
                             "kprobes/kp_entry")
    assert str(found.owner) == "trace event kprobes/kp_entry" and not found.warnings


def test_kernel_only_for_the_kernel_image(owners):
    owners, listed = owners
    # kernel handlers and a kmalloc'ed struct kprobe: the kernel's
    assert str(owners.attribute(HEAP, [("pre_handler", 0xFFFFFFFF811E5910)], listed).owner) \
        == "kernel"
    # only the struct kprobe says something: in unlisted module memory
    found = owners.attribute(HIDDEN_DATA, [("pre_handler", 0xFFFFFFFF811E5910)], listed)
    assert str(found.owner).startswith("UNLISTED MODULE MEMORY at 0xffffffffc0203000 ")
    # a handler on the heap: code of no one known
    found = owners.attribute(HEAP, [("pre_handler", 0xFF11000001000000)], listed)
    assert found.owner.kind == "foreign_code" and str(found.owner).startswith(
        "CODE OUTSIDE THE KERNEL AND ITS MODULES at 0xff11000001000000 (in the direct map")
    # nothing at all known: never "kernel"
    found = owners.attribute(HEAP, [], listed)
    assert found.owner.kind == "unknown" and str(found.owner) != "kernel"


def test_a_damaged_module_list_is_said(owners):
    owners, listed = owners
    found = owners.attribute(HIDDEN_DATA, [("pre_handler", HIDDEN_CODE)], listed,
                             list_damage="a cycle")
    assert all("module list is damaged: a cycle" in w.note for w in found.warnings)
