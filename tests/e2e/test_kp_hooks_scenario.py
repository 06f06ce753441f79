"""kp-hooks on the hooks scenario (qemu/scenarios/hooks-6.1, hooks-6.12: every kind of dynamic
hook the kernel has on vfs_read and inet_csk_accept, and more), against the guest's own view
(qemu/hooks_oracle.py: kprobes/list, enabled_functions, dynamic_events, kp_hookload's lines and
its /proc/<pid>/fdinfo, the lab modules' dmesg lines, /sys/kernel/livepatch).

Both ways round: every hook the guest reports is in kp-hooks with the same owner facts (event
name, module, BPF program id/name/tag, link id, task), and kp-hooks prints no more kprobes than
kprobes/list has and no more ftrace_ops than enabled_functions counts, per function."""
from __future__ import annotations

import json
import pathlib

import jsonschema
import pytest

from conftest import LIST, Session
from qemu import build
from qemu import hooks_oracle as oracle
from qemu.lab import Lab

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema" / "kp-hooks.json"
KPROBE_KINDS = {"trace_kprobe": "k", "trace_kretprobe": "r", "module_kprobe": "k",
                "module_kretprobe": "r", "perf_kprobe": "k", "perf_kretprobe": "r"}


@pytest.fixture(scope="module")
def hooks(kernel, gdb_binary):
    if not (build.SCENARIOS / f"hooks-{kernel}").is_file():
        pytest.skip(f"no hooks scenario for {kernel}")
    lab = Lab(kernel, "hooks")
    lab.start()
    yield Session(lab, lab.gdb(gdb_binary=gdb_binary))
    lab.stop()


@pytest.fixture(scope="module")
def seen(hooks):
    """The guest's view and kp-hooks --json of every function, at one stop (the guest's files
    read first, then gdb stops it: nothing attaches or detaches meanwhile)."""
    hooks.resume()
    hooks.lab.guest.settled(f"cat {LIST}")
    view = oracle.view_of(hooks.lab.guest)
    out = hooks.gdb_cmd("kp-hooks --json")
    document = json.loads(out)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(document)
    functions = {f["function"]["symbol"]: f for f in document["functions"] if f["function"]}
    return view, document, functions


def prog_ids(probe: dict) -> set[int]:
    owner = probe["owner"]
    return {p["id"] for p in owner["bpf_progs"]} | {
        e["bpf_prog"]["id"] for e in owner["perf_events"] if e["bpf_prog"]}


def matches(hook, function: dict) -> bool:
    """Does kp-hooks' entry for the function hold this hook the guest reports?"""
    kind, facts = hook.kind, hook.facts
    if kind in KPROBE_KINDS:
        probes = [p for p in function["kprobes"] if p["type"] == KPROBE_KINDS[kind]]
        if kind.startswith("trace_"):
            return any(p["owner"]["kind"] == "trace_event"
                       and p["details"]["owner"]["name"] == facts["event"] for p in probes)
        if kind.startswith("module_"):
            if not facts["listed"]:         # kp_hidden: flagged, never "kernel"
                return any(p["owner"]["kind"] == "unlisted_module" and p["owner"]["flagged"]
                           for p in probes)
            return any(p["owner"]["text"] == f"module {facts['module']}"
                       and not p["owner"]["flagged"] for p in probes)
        found = [p for p in probes if p["owner"]["kind"] == "perf_kprobe"
                 and facts["prog_id"] in prog_ids(p)]
        for probe in found:
            progs = probe["owner"]["bpf_progs"] + [e["bpf_prog"] for e in
                                                   probe["owner"]["perf_events"] if e["bpf_prog"]]
            prog = next(p for p in progs if p["id"] == facts["prog_id"])
            assert (prog["name"], prog["tag"]) == (facts["prog_name"], facts["prog_tag"])
            assert all(e["owner_pid"] == facts["holder_pid"]
                       for e in probe["owner"]["perf_events"])
        return bool(found)
    ops = function["ftrace_ops"]
    if kind == "fprobe_event":
        return any(o["kind"] == "fprobe" and o["details"].get("event") == facts["event"]
                   for o in ops)
    if kind == "kprobe_multi":
        return any(o["kind"] == "fprobe" and o["details"].get("link_id") == facts["link_id"]
                   and o["details"].get("prog_id") == facts["prog_id"] for o in ops)
    if kind in ("fentry", "fexit"):
        return any(o["kind"] == "bpf_trampoline" and f"prog {facts['prog_id']} " in o["owner"]
                   for o in ops)
    if kind == "function_tracer":
        return any(o["kind"] == "function_tracer" for o in ops)
    if kind == "module_ftrace_ops":
        return any(o["kind"] == "module" and o["owner"] == f"module {facts['module']}"
                   for o in ops)
    if kind == "livepatch":
        return any(o["kind"] == "livepatch" and facts["patch"] in o["owner"] for o in ops)
    raise AssertionError(f"a kind this test does not know: {kind}")


def test_every_hook_the_guest_reports_is_in_kp_hooks(seen):
    view, _, functions = seen
    for name, expected in view.functions.items():
        for hook in expected.hooks:
            assert name in functions, (name, oracle.render(view))
            assert matches(hook, functions[name]), (hook, json.dumps(functions[name]))


def test_no_more_kprobes_and_ftrace_ops_than_the_guest_counts(seen):
    view, document, functions = seen
    for name, expected in view.functions.items():
        if name not in functions:
            assert not expected.kprobe_rows and expected.ftrace is None, name
            continue
        ours = functions[name]
        assert sorted(p["type"] for p in ours["kprobes"]) == \
            sorted(row.kind for row in expected.kprobe_rows), name
        count = expected.ftrace.count if expected.ftrace else 0
        assert len(ours["ftrace_ops"]) == count, (name, expected.ftrace)
    listed = {name for name, f in functions.items() if f["kprobes"] or f["ftrace_ops"]}
    assert listed <= set(view.functions), listed - set(view.functions)
    assert document["damage"] == []


def test_kp_hooks_vfs_read_text(hooks, seen):
    view, _, functions = seen
    text = hooks.gdb_cmd("kp-hooks vfs_read")
    first = text.splitlines()[0]
    vfs_read = functions["vfs_read"]
    assert first.startswith(f"vfs_read ({vfs_read['address']}): {len(vfs_read['kprobes'])} "
                            f"kprobe"), first
    assert sum(line.startswith("  kprobe ") for line in text.splitlines()) == \
        len(vfs_read["kprobes"])
    assert sum(line.startswith("  ftrace_ops ") for line in text.splitlines()) == \
        len(vfs_read["ftrace_ops"])
    assert "owner: kernel" not in text and "Traceback" not in text


def test_kp_list_v_names_each_owner_as_kp_hooks_does(hooks, seen):
    """One attribution (issue #16): kp-list -v calls each struct kprobe's owner what kp-hooks
    calls it, a perf kprobe PMU probe included (in neither kprobe_events nor dynamic_events,
    so never "trace event")."""
    _, _, functions = seen
    listed = json.loads(hooks.gdb_cmd("kp-list -v --json"))["probes"]
    by_kprobe = {p["kprobe"]: p["details"]["owner"] for p in listed}
    perf = 0
    for function in functions.values():
        for probe in function["kprobes"]:
            owner = by_kprobe[probe["kprobe"]]
            assert owner["kind"] == probe["owner"]["kind"], (probe, owner)
            perf += owner["kind"] == "perf_kprobe"
    assert perf > 0                          # the scenario's perf kprobes (kp_hookload)
    text = hooks.gdb_cmd("kp-list -v")
    assert text.count("owner: perf kprobe PMU event ") == perf
