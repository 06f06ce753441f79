"""Issue 16, the owner check: a module that registers a kprobe on vfs_statx and then takes
itself off the module list (qemu/modules/kp_hidden.c, the classic rootkit trick) must not
be reported as the kernel's. kp-list -v, kp-show and their --json flag its pre_handler and
its struct kprobe as module-space memory of no listed module; the lab's normal module probes
keep their plain owner; plain kp-list still equals debugfs kprobes/list byte for byte.

kp_hidden cannot be unloaded (off the list, delete_module() cannot find it): the lab of this
test module (the `session` fixture is per test module) keeps it until the guest stops."""
from __future__ import annotations

import json
import pathlib
import re

import jsonschema
import pytest

LIST = "/sys/kernel/debug/kprobes/list"
MODULE = "/lib/modules/kp-test/kp_hidden.ko"      # qemu/build.py module_folder()
SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema"
HIDDEN = "in module space, in no module of the module list: a module that hid itself?"


@pytest.fixture(scope="module")
def hidden(session) -> dict[str, int]:
    """Load kp_hidden once; its own printk says where its probe, struct and handler are."""
    session.guest(f"insmod {MODULE}")
    dmesg = session.guest("dmesg | grep 'kp_hidden: planted'")
    found = re.search(r"planted kprobe at ([0-9a-f]+), struct kprobe at ([0-9a-f]+), "
                      r"pre_handler at ([0-9a-f]+)", dmesg)
    assert found, dmesg
    addr, struct, handler = (int(value, 16) for value in found.groups())
    return {"addr": addr, "struct": struct, "handler": handler}


def document(session, command: str, name: str) -> dict:
    out = session.gdb_cmd(command)
    parsed = json.loads(out)
    jsonschema.validate(parsed, json.loads((SCHEMAS / f"{name}.json").read_text()))
    return parsed


def test_the_module_is_hidden_and_its_probe_live(session, hidden):
    modules = session.guest("cat /proc/modules")
    assert "kp_lab_kprobe" in modules and "kp_hidden" not in modules, modules
    assert "kp_hidden" not in session.gdb_cmd("kp-modules")
    # module space: above the kernel image, where the loader put the lab's modules too
    assert hidden["struct"] >= 0xFFFFFFFFA0000000 and hidden["handler"] >= 0xFFFFFFFFA0000000
    assert f"{hidden['addr']:016x}  k  vfs_statx+0x0" in session.guest(f"cat {LIST}")


def test_plain_kp_list_still_matches_debugfs(session, hidden):
    debugfs, ours = session.list_pair()
    assert ours == debugfs
    assert sum("vfs_statx+0x0" in line for line in debugfs.splitlines()) == 3


def verbose_block(out: str, struct: int) -> list[str]:
    """The -v lines of the probe whose struct kprobe is at `struct`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if f"struct kprobe: {struct:#x} " in line)
    block = [lines[start]]
    block += [line for line in lines[start + 1:start + 6] if line.startswith("    ")
              and not line.startswith("    owner: ")][:3]
    end = next((i for i, line in enumerate(block[1:], 1) if "_handler: " in line), len(block))
    return block[:end + 1]


def test_kp_list_verbose_flags_the_hidden_probe(session, hidden):
    out = session.gdb_cmd("kp-list -v")
    block = verbose_block(out, hidden["struct"])
    assert block[0].startswith(f"    owner: UNLISTED MODULE CODE at {hidden['handler']:#x} "
                               f"({HIDDEN})  struct kprobe: {hidden['struct']:#x}"), block
    assert f"    warning: pre_handler {hidden['handler']:#x} is {HIDDEN}" in block
    assert f"    warning: struct kprobe {hidden['struct']:#x} is {HIDDEN}" in block
    assert f"pre_handler: {hidden['handler']:#x}  post_handler: -" in block[-1]
    # never "kernel" for it; the lab's own module probes keep their plain owner, unflagged
    assert "owner: kernel" not in out
    assert out.count("owner: UNLISTED") == 1 and out.count("    warning: ") == 2
    assert "owner: module kp_lab_kprobe  struct kprobe: " in out
    assert "owner: module kp_lab_kretprobe  struct kprobe: " in out
    plain = "".join(line + "\n" for line in out.splitlines() if not line.startswith("    "))
    assert plain == session.gdb_cmd("kp-list")


def test_kp_list_json_flags_the_hidden_probe(session, hidden):
    listed = document(session, "kp-list --json -v", "kp-list")["probes"]
    (probe,) = [p for p in listed if p["kprobe"] == f"{hidden['struct']:#x}"]
    details = probe["details"]
    assert details["owner"]["kind"] == "unlisted_module"
    assert details["owner"]["address"] == f"{hidden['handler']:#x}"
    assert details["owner"]["region"] == "module_space"
    assert [(w["pointer"], w["address"], w["region"]) for w in details["warnings"]] == [
        ("pre_handler", f"{hidden['handler']:#x}", "module_space"),
        ("struct kprobe", f"{hidden['struct']:#x}", "module_space")]
    assert details["pre_handler"]["symbol"] is None
    others = [p for p in listed if p is not probe]
    assert all(not p["details"]["warnings"] for p in others)
    assert {p["details"]["owner"]["kind"] for p in others} <= {"trace_event", "module"}
    assert sum(p["details"]["owner"] == {"kind": "module", "name": "kp_lab_kprobe"}
               for p in others) >= 1


def test_kp_show_flags_the_hidden_probe(session, hidden):
    out = session.gdb_cmd("kp-show vfs_statx")
    assert "Traceback" not in out, out
    assert (f"kprobe, owner: UNLISTED MODULE CODE at {hidden['handler']:#x} ({HIDDEN})"
            in out), out
    assert f"  warning: pre_handler {hidden['handler']:#x} is {HIDDEN}" in out
    assert f"  warning: struct kprobe {hidden['struct']:#x} is {HIDDEN}" in out
    assert out.count("owner: trace event kprobes/kp_aggr_") == 2
    assert "owner: kernel" not in out
    normal = session.gdb_cmd("kp-show inet_csk_accept")
    assert "owner: module kp_lab_kprobe" in normal and "warning: " not in normal
    assert "UNLISTED" not in normal


def test_kp_show_json_flags_the_hidden_probe(session, hidden):
    shown = document(session, "kp-show --json vfs_statx", "kp-show")
    probes = [p for place in shown["places"] for p in place["probes"]] \
        if "places" in shown else shown["probes"]
    owners = {p["details"]["owner"]["kind"] for p in probes}
    assert owners == {"trace_event", "unlisted_module"}, owners
    (flagged,) = [p for p in probes if p["details"]["warnings"]]
    assert flagged["details"]["owner"]["text"].startswith("UNLISTED MODULE CODE at ")
    assert {w["pointer"] for w in flagged["details"]["warnings"]} == {"pre_handler",
                                                                      "struct kprobe"}
