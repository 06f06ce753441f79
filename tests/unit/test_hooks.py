"""kp-hooks (issue #16): kernel/hooks.py merges kprobes and ftrace_ops per function, each
owner through kernel/owners.py; ui/render_hooks.py and ui/jsonout_hooks.py print the same
report; the JSON validates against docs/schema/kp-hooks.json. The ftrace_ops model is a
fake of kernel/ftrace_ops.py's interface, the kprobe table a hand-made one."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import types

import jsonschema
import pytest

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema" / "kp-hooks.json"
KERNEL_START, KERNEL_END = 0xFFFFFFFF81000000, 0xFFFFFFFF83000000
VFS_READ, VFS_READ_SIZE = 0xFFFFFFFF8134CC50, 0x1A0
INET_ACCEPT = 0xFFFFFFFF8189AD60
LISTED = 0xFFFFFFFFC0209000           # kp_lab_kprobe's memory
HIDDEN_CODE = 0xFFFFFFFFC0301000      # module space, no listed module
HEAP = 0xFF11000004599818
DISPATCHER = 0xFFFFFFFF811E5910


@dataclasses.dataclass(frozen=True)
class FtraceOps:                      # kernel/ftrace_ops.py's interface
    address: int
    func: int
    flags: int
    trampoline: int | None
    kind: str
    owner: str
    details: dict
    filter_all: bool


@dataclasses.dataclass(frozen=True)
class SiteContents:
    ip: int
    kind: str
    target: int | None
    target_name: str
    words: str


SYMBOLS = {VFS_READ: ("vfs_read", VFS_READ_SIZE, None), INET_ACCEPT: ("inet_accept", 0xA0, None),
           LISTED + 0x58: ("handler_pre", 0x20, "kp_lab_kprobe"),
           0xFFFFFFFF81190000: ("kprobe_ftrace_handler", 0x100, None),
           DISPATCHER: ("kprobe_dispatcher", 0x90, None)}


@pytest.fixture
def model(fake_gdb, monkeypatch):
    from gdb_kprobe.kernel import hooks, kprobes, modules, owners, probe_owners
    from gdb_kprobe.kernel.kallsyms import Location
    from gdb_kprobe.target import symbols
    monkeypatch.setattr(symbols, "in_kernel_image",
                        lambda address: KERNEL_START <= address < KERNEL_END)
    monkeypatch.setattr(owners, "memory_map", lambda: owners.MemoryMap(
        modules=(0xFFFFFFFFC0000000, 0xFFFFFFFFFF000000),
        vmalloc=(0xFFFFC90000000000, 0xFFFFE90000000000),
        direct_map=(0xFF11000000000000, 0xFF11400000000000)))
    listed = modules.Module(0xFFFFFFFFC020B000, "kp_lab_kprobe", 0, [(LISTED, 0x2000)],
                            [(LISTED, 0x1000)], 0)

    class Symbolizer:
        damage = None
        modules = [listed]

        def lookup(self, address):
            for start, (name, size, module) in SYMBOLS.items():
                if start <= address < start + size:
                    return Location(name, address - start, size, module)
            return None

    def probe(addr, address, pre, flags=kprobes.KPROBE_FLAG_FTRACE):
        return kprobes.Kprobe(address=address, addr=addr, flags=flags, pre_handler=pre,
                              post_handler=0, nmissed=0, symbol_name=0, offset=0, opcode=0)

    traced = probe(VFS_READ, 0xFF1100001FEA8220, DISPATCHER)
    perf = probe(VFS_READ, 0xFF1100001FEA9220, DISPATCHER)
    hidden = probe(VFS_READ + 0x10, HIDDEN_CODE + 0x1000, HIDDEN_CODE, flags=0)
    moduled = probe(INET_ACCEPT + 0x14, LISTED, LISTED + 0x58, flags=kprobes.KPROBE_FLAG_OPTIMIZED)
    table = types.SimpleNamespace(damage=[], reported=lambda: [
        (moduled, None), (traced, None), (perf, None), (hidden, None)],
        is_return_probe=lambda p: False)
    monkeypatch.setattr(kprobes, "read_table", lambda: table)
    monkeypatch.setattr(hooks, "Symbolizer", Symbolizer)
    monkeypatch.setattr(hooks.anatomy, "mechanism",
                        lambda entry: {VFS_READ: "ftrace call", VFS_READ + 0x10: "int3"}.get(
                            entry.addr, "optprobe jmp"))
    monkeypatch.setattr(hooks.ftrace, "location_range",
                        lambda start, end: VFS_READ if start <= VFS_READ <= end else None)
    prog = probe_owners.BpfProg(0xFFFFC90000123000, 12, "kp_prog", "0123456789abcdef", 2)
    event = probe_owners.PerfEvent(0xFF11000007000000, 7, -1, 123, "kp_hookload", prog)

    def owner_of(row, table, symbolizer, details=None):
        from gdb_kprobe.kernel.kprobes_list import Details
        from gdb_kprobe.kernel.owners import attribute
        handlers = [("pre_handler", row.probe.pre_handler)]
        name = {traced.address: "kprobes/p_vfs_read_0", perf.address: "kprobes/vfs_read"}.get(
            row.probe.address)
        found = attribute(row.probe.address, handlers, symbolizer.modules, name)
        details = Details(found.owner, None, symbolizer.lookup(row.probe.pre_handler), None,
                          None, None, None, found.warnings)
        if row.probe is perf:
            return probe_owners.ProbeOwner(
                "perf_kprobe", "perf kprobe PMU event vfs_read (perf_event_open, not in "
                "kprobe_events)", details, 1, (event,), (prog,))
        if name:
            return probe_owners.ProbeOwner("trace_event", f"trace event {name}", details, 0)
        return probe_owners.ProbeOwner(found.owner.kind, str(found.owner), details)

    monkeypatch.setattr(hooks, "owner_of", owner_of)
    ops = (FtraceOps(0xFFFFFFFF82E4A0C0, 0xFFFFFFFF81190000, 0x1, None, "kprobes",
                     "kprobes (kprobe_ftrace_ops)", {}, False),
           FtraceOps(0xFFFFFFFFC0302000, HIDDEN_CODE + 0x40, 0x1, None, "unlisted",
                     "code in no listed module", {"hits": 3}, False),
           FtraceOps(0xFF11000008000000, 0xFFFFFFFFA0001000, 0x1, 0xFFFFFFFFA0001000,
                     "bpf_trampoline", "BPF trampoline: bpf prog 13 kp_fentry",
                     {"programs": ["13 kp_fentry"], "image": 0xFFFFFFFFA0001000,
                      "progs": [{"kind": "fentry", "prog_id": 13}]}, False))
    site = SiteContents(VFS_READ, "call", 0xFFFFFFFFA0002000, "ftrace_regs_caller trampoline",
                        "call 0xffffffffa0002000")
    fake = types.SimpleNamespace(
        ops_on=lambda ip: ops if ip == VFS_READ else (),
        hooked_ips=lambda: {VFS_READ: ops},
        site_at=lambda ip: site,
        runtime_code_name=lambda address: "bpf trampoline" if address >> 28 == 0xFFFFFFFFA else None)
    monkeypatch.setattr(hooks, "ftrace_model", lambda: fake)
    monkeypatch.setattr(hooks.places, "resolve", lambda spec, symbolizer=None, kprobe_entry=True:
                        hooks.places.Place(VFS_READ, "vfs_read", 0, VFS_READ_SIZE, None))
    return hooks


def test_one_function_merges_kprobes_and_ftrace_ops(model):
    report = model.hooks_on("vfs_read")
    (found,) = report.functions
    assert found.function.symbol == "vfs_read" and found.ftrace_ip == VFS_READ
    assert [hook.row.probe.addr for hook in found.kprobes] == [VFS_READ, VFS_READ, VFS_READ + 0x10]
    assert [hook.mechanism for hook in found.kprobes] == ["ftrace call", "ftrace call", "int3"]
    assert [hook.ops.kind for hook in found.ftrace_ops] == ["kprobes", "unlisted",
                                                            "bpf_trampoline"]
    assert found.site.kind == "call" and report.damage == [] and report.notes == []


def test_owner_check_flags_code_in_no_listed_module(model):
    (found,) = model.hooks_on("vfs_read").functions
    hidden = found.kprobes[2]
    assert hidden.owner.kind == "unlisted_module" and hidden.owner.flagged
    assert "kernel" not in hidden.owner.text
    kprobes_ops, unlisted, trampoline = found.ftrace_ops
    assert kprobes_ops.warnings == () and kprobes_ops.func_name == "kprobe_ftrace_handler"
    assert [(w.pointer, w.region) for w in unlisted.warnings] == [
        ("ftrace_ops func", "module_space"), ("struct ftrace_ops", "module_space")]
    assert "struct ftrace_ops 0xffffffffc0302000 is in module space" in unlisted.warnings[1].note
    # a BPF trampoline's image is run-time code with a name, not flagged
    assert trampoline.func_name == "bpf trampoline" and trampoline.warnings == ()


def test_every_function_in_address_order(model):
    report = model.hooks_on(None)
    assert all(hook.mechanism is None for f in report.functions for hook in f.kprobes)
    assert all(f.site is None for f in report.functions)
    assert [(f.function.symbol, len(f.kprobes), len(f.ftrace_ops)) for f in report.functions] \
        == [("vfs_read", 3, 3), ("inet_accept", 1, 0)]
    assert report.functions[1].kprobes[0].owner.text == "module kp_lab_kprobe"


def test_text(model):
    from gdb_kprobe.ui import render_hooks
    text = render_hooks.hooks_report(model.hooks_on("vfs_read"))
    assert text.splitlines()[:4] == [
        "vfs_read (0xffffffff8134cc50): 3 kprobes, 3 ftrace_ops; fentry site +0x0: call "
        "ftrace_regs_caller trampoline",
        "  kprobe k  vfs_read+0x0  [FTRACE]  ftrace call  owner: trace event kprobes/p_vfs_read_0",
        "  kprobe k  vfs_read+0x0  [FTRACE]  ftrace call  owner: perf kprobe PMU event vfs_read "
        "(perf_event_open, not in kprobe_events)",
        "      perf event 7 of pid 123 (kp_hookload), any CPU; bpf prog 12 kp_prog tag "
        "0123456789abcdef"]
    assert "  kprobe k  vfs_read+0x10  int3  owner: UNLISTED MODULE CODE at 0xffffffffc0301000" \
        in text
    assert "  ftrace_ops bpf_trampoline  owner: BPF trampoline: bpf prog 13 kp_fentry  ops: " \
           "0xff11000008000000  func: bpf trampoline" in text
    assert "      programs: 13 kp_fentry  image: 0xffffffffa0001000  progs: kind=fentry " \
           "prog_id=13" in text
    assert "\x1b" not in text and "owner: kernel" not in text
    # the every-function listing reads no code: no mechanism, no site contents
    listing = render_hooks.hooks_report(model.hooks_on(None))
    assert listing.splitlines()[:2] == [
        "vfs_read (0xffffffff8134cc50): 3 kprobes, 3 ftrace_ops; fentry site +0x0",
        "  kprobe k  vfs_read+0x0  [FTRACE]  owner: trace event kprobes/p_vfs_read_0"]
    assert "\ninet_accept (0xffffffff8189ad60): 1 kprobe, 0 ftrace_ops\n" in listing


def test_json_validates_and_follows_the_text(model):
    from gdb_kprobe.ui import jsonout, jsonout_hooks
    document = json.loads(jsonout.dumps(jsonout_hooks.hooks_report(model.hooks_on(None))))
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(document)
    first, second = document["functions"]
    assert [k["index"] for k in first["kprobes"] + second["kprobes"]] == [1, 2, 3, 4]
    assert first["kprobes"][1]["owner"]["perf_events"][0]["owner_pid"] == 123
    assert first["kprobes"][1]["owner"]["bpf_progs"][0] == {
        "address": "0xffffc90000123000", "id": 12, "name": "kp_prog",
        "tag": "0123456789abcdef", "type": 2}
    assert first["kprobes"][2]["owner"]["flagged"] is True
    assert first["ftrace_ops"][2]["details"] == {
        "programs": ["13 kp_fentry"], "image": "0xffffffffa0001000",
        "progs": [{"kind": "fentry", "prog_id": 13}]}
    assert first["site"] is None and first["kprobes"][0]["mechanism"] is None
    one = json.loads(jsonout.dumps(jsonout_hooks.hooks_report(model.hooks_on("vfs_read"))))
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(one)
    assert one["functions"][0]["site"]["target_name"] == "ftrace_regs_caller trampoline"
    assert one["functions"][0]["kprobes"][2]["mechanism"] == "int3"


def test_nothing_hooked(model, monkeypatch):
    from gdb_kprobe.kernel import kprobes
    from gdb_kprobe.ui import render_hooks
    monkeypatch.setattr(kprobes, "read_table", lambda: types.SimpleNamespace(
        damage=[], reported=lambda: [], is_return_probe=lambda p: False))
    monkeypatch.setattr(model, "ftrace_model", lambda: types.SimpleNamespace(
        hooked_ips=lambda: {}))
    assert render_hooks.hooks_report(model.hooks_on(None)).startswith("no function is hooked")


def test_ops_details_in_kp_list_v_words(fake_gdb):
    from gdb_kprobe.ui import render_hooks
    assert render_hooks._detail_words("flag_names", ["ENABLED", "SAVE_REGS"]) == \
        "flags: ENABLED|SAVE_REGS"
    assert render_hooks._detail_words("ops_symbol", "kprobe_ftrace_ops") == \
        "ops symbol: kprobe_ftrace_ops"
    assert render_hooks._detail_words("link_id", 4) == "link id: 4"
