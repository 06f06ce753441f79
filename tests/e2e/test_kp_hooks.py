"""kp-hooks (issue #16) against the guest's own files: every kprobe it prints is a line of
debugfs kprobes/list (same address, type, flag words), every trace event it names is a line of
kprobe_events and dynamic_events, every module it names is loaded, every function with
ftrace_ops is a line of enabled_functions; the self-unlinked kp_hidden module's probe is
flagged, a normal module's probe is not; the JSON validates against docs/schema/kp-hooks.json.

Besides the default scenario, a few trace events on functions drawn with a fixed seed from the
guest's available_filter_functions, and the function tracer filtered to one more of them."""
from __future__ import annotations

import json
import pathlib
import random
import re

import jsonschema
import pytest

LIST = "/sys/kernel/debug/kprobes/list"
TRACING = "/sys/kernel/tracing"
HIDDEN_KO = "/lib/modules/kp-test/kp_hidden.ko"      # qemu/build.py module_folder()
SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema" / "kp-hooks.json"
SEED = 16
GROUP = "kphooks"
HIDDEN = "in module space, in no module of the module list: a module that hid itself?"
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def document(session, command: str) -> dict:
    out = session.gdb_cmd(command)
    assert "Traceback" not in out and "internal error" not in out, out
    parsed = json.loads(out)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(parsed)
    return parsed


def candidates(session, kernel: str) -> list[str]:
    """Function names from the guest's available_filter_functions, a seeded stride of them
    (the whole file is ~50k lines: too much for the console)."""
    rng = random.Random(f"{SEED}-{kernel}")
    step, first = 401, rng.randrange(401)
    out = session.guest(f"awk 'NR % {step} == {first} && NF == 1' "
                        f"{TRACING}/available_filter_functions")
    names = [name for name in out.split() if NAME.match(name)]
    rng.shuffle(names)
    return names


@pytest.fixture(scope="module")
def lab_hooks(session, kernel) -> dict:
    """Seeded trace events (an entry probe, a return probe, both on one function, a
    disabled one), the function tracer on one more function, and kp_hidden's probe."""
    picked: list[str] = []
    for name in candidates(session, kernel):
        if len(picked) == 4:
            break
        event = f"{GROUP}/e{len(picked)}"
        answer = session.guest(f"echo 'p:{event} {name}' >> {TRACING}/kprobe_events && "
                               f"echo ok", check=False)
        if answer.strip().endswith("ok"):
            picked.append(name)
    assert len(picked) == 4, picked
    session.guest(f"echo 'r:{GROUP}/r0 {picked[0]}' >> {TRACING}/kprobe_events")
    for index in (0, 1, 2):
        session.guest(f"echo 1 > {TRACING}/events/{GROUP}/e{index}/enable")
    session.guest(f"echo 1 > {TRACING}/events/{GROUP}/r0/enable")
    traced = next(name for name in candidates(session, kernel)[::-1] if name not in picked)
    session.guest(f"echo {traced} > {TRACING}/set_ftrace_filter && "
                  f"echo function > {TRACING}/current_tracer")
    session.guest(f"insmod {HIDDEN_KO}")
    dmesg = session.guest("dmesg | grep 'kp_hidden: planted'")
    found = re.search(r"planted kprobe at ([0-9a-f]+), struct kprobe at ([0-9a-f]+), "
                      r"pre_handler at ([0-9a-f]+)", dmesg)
    assert found, dmesg
    yield {"functions": picked, "traced": traced, "hidden": int(found.group(2), 16),
           "hidden_handler": int(found.group(3), 16)}
    session.guest(f"echo nop > {TRACING}/current_tracer; echo > {TRACING}/set_ftrace_filter")


def debugfs_rows(text: str) -> list[tuple[int, str, str, str]]:
    """(address, type, symbol+offset, flag words) of each kprobes/list line."""
    rows = []
    for line in text.splitlines():
        address, kind, place = line.split()[:3]
        rows.append((int(address, 16), kind, place, "".join(re.findall(r"\[\w+\]", line))))
    return rows


def hooked_kprobes(parsed: dict) -> list[dict]:
    return [probe for function in parsed["functions"] for probe in function["kprobes"]]


def test_every_kprobe_is_a_debugfs_line_and_every_line_is_there(session, lab_hooks):
    debugfs = session.stable_list()
    parsed = document(session, "kp-hooks --json")
    ours = [(int(p["address"], 16), p["type"], f"{p['symbol']}+{p['offset']:#x}",
             "".join(f"[{w}]" for w in p["flags"])) for p in hooked_kprobes(parsed)]
    assert sorted(ours) == sorted(debugfs_rows(debugfs))
    addresses = [int(f["address"], 16) for f in parsed["functions"]]
    assert addresses == sorted(addresses)


def test_trace_event_owners_are_kprobe_events_lines(session, lab_hooks):
    events = session.guest(f"cat {TRACING}/kprobe_events")
    dynamic = session.guest(f"cat {TRACING}/dynamic_events")
    named = set(re.findall(r"^[pr]\S*:(\S+) ", events, re.MULTILINE))
    parsed = document(session, "kp-hooks --json")
    owners = [p["owner"] for p in hooked_kprobes(parsed)]
    traced = {p["details"]["owner"]["name"] for p in hooked_kprobes(parsed)
              if p["owner"]["kind"] == "trace_event"}
    assert traced == named, (traced, named)
    assert all(f":{name} " in dynamic for name in traced)
    # each seeded function's probes are where kprobe_events put them
    for index, function in enumerate(lab_hooks["functions"]):
        assert re.search(rf"^p:{GROUP}/e{index} {function}(\+0)?$", events, re.MULTILINE), events
    modules = session.guest("cat /proc/modules")
    for owner in owners:
        if owner["kind"] == "module":
            assert owner["text"].split()[-1] in modules


def test_hidden_module_probe_is_flagged_and_no_other(session, lab_hooks):
    parsed = document(session, "kp-hooks --json")
    flagged = [p for p in hooked_kprobes(parsed) if p["owner"]["flagged"]]
    assert [p["kprobe"] for p in flagged] == [f"{lab_hooks['hidden']:#x}"]
    assert flagged[0]["owner"]["kind"] == "unlisted_module"
    text = session.gdb_cmd("kp-hooks vfs_statx")
    assert (f"owner: UNLISTED MODULE CODE at {lab_hooks['hidden_handler']:#x} ({HIDDEN})"
            in text), text
    assert "owner: kernel" not in session.gdb_cmd("kp-hooks")
    normal = session.gdb_cmd("kp-hooks inet_csk_accept")
    assert "owner: module kp_lab_kprobe" in normal and "owner: module kp_lab_kretprobe" in normal
    assert "UNLISTED" not in normal and "warning:" not in normal


def test_one_function_shows_exactly_its_lines(session, lab_hooks):
    debugfs = session.stable_list()
    for function in lab_hooks["functions"][:2]:
        text = session.gdb_cmd(f"kp-hooks {function}")
        mine = sorted(row for row in debugfs_rows(debugfs)
                      if row[2].split("+")[0] == function)
        assert mine, function
        lines = [line for line in text.splitlines() if line.startswith("  kprobe ")]
        assert len(lines) == len(mine), text
        assert text.splitlines()[0].startswith(f"{function} (0x"), text
        for (address, kind, place, flags), line in zip(mine, sorted(lines)):
            assert line.startswith(f"  kprobe {kind}  {place}  ") or \
                line.startswith(f"  kprobe {kind}  {place}  {flags}"), (line, place)
    # the first function has an entry probe and a return probe on it
    first = session.gdb_cmd(f"kp-hooks {lab_hooks['functions'][0]}")
    assert f"owner: trace event {GROUP}/e0" in first and f"owner: trace event {GROUP}/r0" in first


def test_address_and_module_symbol_forms(session, lab_hooks):
    line = next(line for line in session.stable_list().splitlines() if "inet_accept+0x" in line)
    address = int(line.split()[0], 16)
    place = line.split()[2]
    by_address = document(session, f"kp-hooks --json {address:#x}")
    (function,) = by_address["functions"]
    assert [p["address"] for p in function["kprobes"]] == [f"{address:#x}"]
    assert function["kprobes"][0]["mechanism"] == "optprobe jmp"
    assert session.gdb_cmd(f"kp-hooks {place}").splitlines()[0].startswith(f"{place} (")
    module = document(session, "kp-hooks --json kp_lab_kprobe:handler_pre")
    (function,) = module["functions"]
    assert function["function"]["module"] == "kp_lab_kprobe" and function["kprobes"] == []


def test_ftrace_ops_functions_are_enabled_functions_lines(session, lab_hooks):
    parsed = document(session, "kp-hooks --json")
    enabled = session.guest(f"cat {TRACING}/enabled_functions")
    # one line per patched site ("vfs_read (2) R ..."); tab-indented lines continue it
    names = {line.split()[0] for line in enabled.splitlines() if line.strip()
             and not line[0].isspace()}
    ours = {f["function"]["symbol"] for f in parsed["functions"]
            if f["ftrace_ops"] and f["function"]}
    assert ours == names
    traced = document(session, f"kp-hooks --json {lab_hooks['traced']}")["functions"][0]
    assert "function_tracer" in [ops["kind"] for ops in traced["ftrace_ops"]]


def test_text_and_json_agree(session, lab_hooks):
    text = session.gdb_cmd("kp-hooks")
    parsed = document(session, "kp-hooks --json")
    headings = [line for line in text.splitlines() if line and not line.startswith(" ")
                and not line.startswith(("note:", "!!"))]
    assert len(headings) == len(parsed["functions"])
    assert sum(line.startswith("  kprobe ") for line in text.splitlines()) == \
        len(hooked_kprobes(parsed))


@pytest.mark.parametrize("argument, message", [
    ("no_such_function_xyz", "no symbol `no_such_function_xyz` in the kernel"),
    ("nosuchmod:foo", "no module `nosuchmod` is loaded"),
    ("vfs_read+zz", "bad offset `zz`"),
])
def test_bad_places_are_one_line(session, argument, message):
    out = session.gdb_cmd(f"kp-hooks {argument}")
    assert message in out and "Traceback" not in out and out.count("\n") <= 1, out
