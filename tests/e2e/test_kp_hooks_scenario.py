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
import re

import jsonschema
import pytest

from conftest import LIST, Session
from qemu import build
from qemu import hooks_oracle as oracle
from qemu.lab import GDBINIT, Gdb, Lab

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema" / "kp-hooks.json"
HOLDER = "kp_hookload"          # qemu/guest/kp_hookload.c: the task holding the perf and BPF fds
KPROBE_KINDS = {"trace_kprobe": "k", "trace_kretprobe": "r", "module_kprobe": "k",
                "module_kretprobe": "r", "perf_kprobe": "k", "perf_kretprobe": "r"}


@pytest.fixture(scope="module")
def hooks(kernel, gdb_binary):
    if not (build.SCENARIOS / f"hooks-{kernel}").is_file():
        pytest.skip(f"no hooks scenario for {kernel}")
    lab = Lab(kernel, "hooks")
    lab.start()
    try:
        yield Session(lab, lab.gdb(gdb_binary=gdb_binary))
    finally:                       # also when attaching gdb failed
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
            # the task holding the perf fd (kp_hookload) and the CPU it asked for (-1: any,
            # the task-bound event)
            assert all((e["owner_pid"], e["owner_comm"]) == (facts["holder_pid"], HOLDER)
                       for e in probe["owner"]["perf_events"]), probe["owner"]
            # and for the task-bound one (pid=N in kp_hookload's line) the task it counts
            bound = (None, None) if facts["pid"] == -1 else (facts["pid"], HOLDER)
            assert [(e["cpu"], e["task_pid"], e["task_comm"])
                    for e in probe["owner"]["perf_events"]
                    if e["bpf_prog"] and e["bpf_prog"]["id"] == facts["prog_id"]] == \
                [(facts["cpu"], *bound)], probe["owner"]
        return bool(found)
    ops = function["ftrace_ops"]
    if kind == "fprobe_event":
        return any(o["kind"] == "fprobe" and o["details"].get("event") == facts["event"]
                   for o in ops)
    if kind == "kprobe_multi":
        return any(o["kind"] == "fprobe" and o["details"].get("link_id") == facts["link_id"]
                   and o["details"].get("prog_id") == facts["prog_id"] for o in ops)
    if kind in ("fentry", "fexit"):
        # the program on the trampoline, with the link fdinfo names (link_id, prog_id)
        return any(o["kind"] == "bpf_trampoline" and f"prog {facts['prog_id']} " in o["owner"]
                   and {"kind": kind, "link_id": facts["link_id"], "prog_id": facts["prog_id"]}
                   .items() <= next((p for p in o["details"]["progs"]
                                     if p["prog_id"] == facts["prog_id"]), {}).items()
                   for o in ops)
    if kind == "function_tracer":
        return any(o["kind"] == "function_tracer" for o in ops)
    if kind == "kprobes_ftrace_ops":
        return any(o["kind"] == "kprobes" for o in ops)
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


# -- nothing invented: each entry kp-hooks prints is one hook the guest shows ---------------

OPS_KINDS = {"function_tracer": "function_tracer", "kprobes": "kprobes_ftrace_ops",
             "fprobe": ("fprobe_event", "kprobe_multi"), "bpf_trampoline": ("fentry", "fexit"),
             "module": "module_ftrace_ops", "livepatch": "livepatch"}


def ops_units(expected) -> list[list]:
    """The guest's hooks on a function grouped into the ftrace_ops each is: one per hook,
    but one per kprobe_multi link and one BPF trampoline for every fentry/fexit program
    (oracle.ftrace_ops_expected() counts the same way)."""
    units: dict[object, list] = {}
    for hook in expected.hooks:
        if hook.kind in KPROBE_KINDS:
            continue
        key = ("multi", hook.facts["link_id"]) if hook.kind == "kprobe_multi" else \
            "trampoline" if hook.kind in ("fentry", "fexit") else id(hook)
        units.setdefault(key, []).append(hook)
    return list(units.values())


def one_to_one(ours: list, theirs: list, fits) -> dict[int, int] | None:
    """A matching of every entry of `ours` to a different entry of `theirs` with
    fits(our, their) (augmenting paths: a few entries a side), or None if none exists."""
    owner: dict[int, int] = {}

    def place(index: int, seen: set[int]) -> bool:
        for other, candidate in enumerate(theirs):
            if other in seen or not fits(ours[index], candidate):
                continue
            seen.add(other)
            if other not in owner or place(owner[other], seen):
                owner[other] = index
                return True
        return False

    if len(ours) != len(theirs) or not all(place(i, set()) for i in range(len(ours))):
        return None
    return {mine: other for other, mine in owner.items()}


def test_each_entry_is_a_different_hook_of_the_guest(seen):
    """Both ways at once: kp-hooks' kprobes and ftrace_ops on each function pair off with the
    guest's hooks there, each with one, each matching its owner facts."""
    view, _, functions = seen
    for name, ours in functions.items():
        expected = view.function(name)
        hooks = [h for h in expected.hooks if h.kind in KPROBE_KINDS]
        pairs = one_to_one(ours["kprobes"], hooks, lambda probe, hook: matches(
            hook, {"kprobes": [probe], "ftrace_ops": []}))
        assert pairs is not None, (name, [p["owner"] for p in ours["kprobes"]], hooks)
        units = ops_units(expected)
        pairs = one_to_one(ours["ftrace_ops"], units, lambda ops, unit: all(
            hook.kind in (OPS_KINDS.get(ops["kind"]) or ()) and
            matches(hook, {"kprobes": [], "ftrace_ops": [ops]}) for hook in unit))
        assert pairs is not None, (name, [(o["kind"], o["owner"]) for o in ours["ftrace_ops"]],
                                   units)


def ps_name(text: str) -> str:
    """A %pS of a symbol's start (`sym+0x0/0x1d0`, `sym+0x0/0x10 [mod]`) the way kp-hooks
    names code (`sym`, `sym [mod]`)."""
    found = re.fullmatch(r"(\S+?)\+0x0/0x[0-9a-f]+(?: \[(\S+)\])?", text.strip())
    assert found, text
    return found.group(1) + (f" [{found.group(2)}]" if found.group(2) else "")


def test_kprobes_are_their_list_rows_and_sites_are_enabled_functions(hooks, seen):
    """Per function (kp-hooks FUNCTION reads the code too): each kprobe is its kprobes/list
    row (address, type, flag words) with the mechanism those rows mean at its address, and
    the fentry site holds the call enabled_functions implies (ftrace_get_addr_new(): the
    direct trampoline when it is alone, the one ops' trampoline of `tramp: T (F)` with F
    its callback, else ftrace_regs_caller / ftrace_caller by the R flag); a direct call's
    BPF trampoline is the `direct-->bpf_trampoline_KEY` line's."""
    view, _, _ = seen
    for name, expected in view.functions.items():
        document = json.loads(hooks.gdb_cmd(f"kp-hooks --json {name}"))
        (ours,) = document["functions"]
        rows = sorted((r.address, r.kind, f"{r.function}+{r.offset:#x}", r.flags)
                      for r in expected.kprobe_rows)
        assert sorted((int(p["address"], 16), p["type"], f"{p['symbol']}+{p['offset']:#x}",
                       tuple(p["flags"])) for p in ours["kprobes"]) == rows, name
        for probe in ours["kprobes"]:
            here = [set(r.flags) for r in expected.kprobe_rows
                    if r.address == int(probe["address"], 16)]
            armed = [flags for flags in here if not flags & {"DISABLED", "GONE"}]
            want = "not patched" if not armed else "ftrace call" if "FTRACE" in armed[0] \
                else "optprobe jmp" if "OPTIMIZED" in armed[0] else "int3"
            assert probe["mechanism"] == want, (name, probe)
        site = expected.ftrace
        if site is None:
            assert not ours["ftrace_ops"], (name, ours)
            assert ours["site"] is None or ours["site"]["kind"] == "nop", (name, ours)
            continue
        assert ours["site"]["kind"] == "call" and len(ours["ftrace_ops"]) == site.count, \
            (name, ours["site"], site)
        target = ours["site"]["target_name"]
        if "D" in site.flags and site.count == 1:
            assert target.startswith(f"bpf_trampoline_{site.direct_key}"), (name, target)
        elif site.trampolines:
            (tramp,) = site.trampolines
            (only,) = ours["ftrace_ops"]
            assert only["func_name"] == ps_name(tramp.func), (name, only, tramp)
            assert ours["site"]["target"] == only["trampoline"], (name, ours["site"], only)
            if tramp.trampoline.startswith("0x"):
                assert int(only["trampoline"], 16) == int(tramp.trampoline, 16), name
            assert target == "ftrace_trampoline", (name, target)
        else:
            want = "ftrace_regs_caller" if "R" in site.flags else "ftrace_caller"
            assert target == want, (name, target, site)
        if site.ops is not None:        # 6.12 `ops: OPS (FUNC)`: the one ops' call ops
            (only,) = ours["ftrace_ops"]
            assert only["func_name"] == ps_name(site.ops[1]), (name, only, site.ops)
        if site.direct_key is not None:
            (tramp_ops,) = [o for o in ours["ftrace_ops"] if o["kind"] == "bpf_trampoline"]
            key = tramp_ops["details"]["key"]
            key = int(key, 16) if isinstance(key, str) else key        # hex past 2**48
            assert key == site.direct_key, (name, tramp_ops, site)
            assert tramp_ops["details"]["image_name"] == f"bpf_trampoline_{site.direct_key}"


def test_only_the_hidden_module_is_flagged(seen):
    """kp_hidden's probe (its module took itself off the list) is flagged; nothing else on
    the scenario's functions is: the listed modules' probes and ftrace_ops, the trace and
    perf events, the BPF trampolines and fprobes (run-time code named as kallsyms does)."""
    view, document, _ = seen
    flagged = [(f["function"]["symbol"], p["owner"]["text"]) for f in document["functions"]
               for p in f["kprobes"] if p["owner"]["flagged"]]
    assert [name for name, _text in flagged] == ["vfs_statx"], flagged
    assert flagged[0][1].startswith("UNLISTED MODULE CODE at "), flagged
    ops_warnings = [(o["owner"], o["warnings"]) for f in document["functions"]
                    for o in f["ftrace_ops"] if o["warnings"]]
    assert ops_warnings == [], ops_warnings
    assert "kp_hidden" not in view.modules


def test_kp_hooks_on_a_dump_equals_live(hooks, seen, tmp_path, gdb_binary):
    """dump-guest-memory of this moment, opened with core-file: kp-hooks (all functions,
    one function, --json) prints byte for byte what it printed on the live guest."""
    commands = ["kp-hooks", "kp-hooks --json", "kp-hooks vfs_read", "kp-hooks inet_csk_accept",
                "kp-hooks --json vfs_read"]
    live = {command: hooks.gdb_cmd(command) for command in commands}
    core = hooks.lab.dump(tmp_path / "hooks.core")
    gdb = Gdb(["-ex", "set style enabled off", "-ex", f"file {hooks.lab.files.vmlinux}",
               "-ex", f"core-file {core}", "-ex", f"source {GDBINIT}"], gdb_binary=gdb_binary)
    try:
        for command in commands:
            assert gdb.execute(command) == live[command], command
    finally:
        gdb.close()
        core.unlink()
