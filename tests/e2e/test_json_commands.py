"""--json of kp-where, kp-modules, kp-blacklist, kp-kaslr and kp-sim on a booted lab kernel:
every document validates against docs/schema/ and says what the guest and the text output
of the same command say (test_json.py has kp-list, kp-show, kp-locals and kp-check)."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest
from test_json import SCHEMAS, document
from test_kp_sim import assert_clean
from test_unwind import handler_bp, int3_offset, run

from qemu.lab import ACCEPT_TRAFFIC as TRAFFIC

BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"


def blacklist_line(entry: dict) -> str:
    """The line kprobe_blacklist_seq_show() prints for a kp-blacklist --json entry."""
    name = entry["start"] if entry["symbol"] is None else (
        f"{entry['symbol']} [{entry['module']}]" if entry["module"] else entry["symbol"])
    return f"0x{int(entry['start'], 16):016x}-0x{int(entry['end'], 16):016x}\t{name}\n"


def test_kp_blacklist_entries_are_the_debugfs_lines(session):
    debugfs = session.guest(f"cat {BLACKLIST}")
    found = document(session, "kp-blacklist --json", "kp-blacklist")
    assert "".join(map(blacklist_line, found["entries"])) == debugfs
    assert found["total"] == len(debugfs.splitlines()) and not found["damage"]
    some = found["entries"][0]["symbol"]
    picked = document(session, f"kp-blacklist --json {some}", "kp-blacklist")
    assert "".join(map(blacklist_line, picked["entries"])) == session.gdb_cmd(
        f"kp-blacklist {some}")
    none = document(session, "kp-blacklist --json no_such_symbol_kp", "kp-blacklist")
    assert none["entries"] == [] and none["total"] == found["total"]


def test_kp_modules_are_proc_modules(session):
    proc = [line.split() for line in session.guest("cat /proc/modules").splitlines()]
    found = document(session, "kp-modules --json", "kp-modules")
    assert [m["name"] for m in found["modules"]] == [fields[0] for fields in proc]
    for module, fields in zip(found["modules"], proc):
        # "name size refs deps state address [taints]": the address is the core text base
        # (0 when kptr_restrict hides it)
        if int(fields[5], 16):
            assert module["text"] == fields[5], module
    text = session.gdb_cmd("kp-modules").splitlines()[1:]
    assert len(text) == len(found["modules"])
    for line, module in zip(text, found["modules"]):
        assert line.split()[:4] == [module["name"], f"{int(module['module'], 16):#018x}",
                                    f"{int(module['text'] or '0', 16):#018x}",
                                    str(module["size"] or 0)]
        assert (module["ko"] or "no .ko in the search path") in line
    # the lab's gdb loaded the lab modules' .ko at start (kp-modules --load)
    (lab,) = [m for m in found["modules"] if m["name"] == "kp_lab_kprobe"]
    assert lab["ko"].endswith("kp_lab_kprobe.ko") and lab["symbols"] == "symbols loaded"
    only = document(session, "kp-modules --json kp_lab_kprobe", "kp-modules")
    assert only["modules"] == [lab]


def test_kp_kaslr_without_kaslr(session):
    found = document(session, "kp-kaslr --json", "kp-kaslr")
    assert (found["state"], found["slide"], found["symbols_offset"]) == ("matches", 0, 0)
    assert session.guest("cat /proc/version").startswith(found["banner"])
    assert session.gdb_cmd("kp-kaslr").strip() == ("kp-kaslr: the symbol file matches the "
                                                   f"running kernel (no KASLR slide): "
                                                   f"{found['banner']}")


def test_kp_where_in_a_pre_handler(session):
    offset = int3_offset(session)

    def on_stop(_number):
        found = document(session, "kp-where --json", "kp-where")
        text = session.gdb.execute("kp-where")
        assert found["handling"] and found["stage"] == "pre-handler"
        assert found["kprobe_status"] == "KPROBE_HIT_ACTIVE"
        assert (found["probe"]["symbol"], found["probe"]["offset"]) == ("inet_csk_accept",
                                                                        offset)
        assert f"cpu{found['cpu']} is handling a kprobe: inet_csk_accept+{offset:#x} " \
               f"(current_kprobe {found['current_kprobe']}, " in text
        probed = [f for f in found["frames"] if f["kind"] == "unwound"
                  and f["function"] == "inet_csk_accept" and f["note"].startswith("[probed at")]
        assert probed, found["frames"]
        assert [int(m) for m in re.findall(r"^  frame #(\d+): ", text, re.M)] == \
            [f["level"] for f in found["frames"]]
        bt = session.gdb.execute(f"frame {probed[0]['level']}")
        assert "inet_csk_accept" in bt

    run(session, [handler_bp(session, f"inet_csk_accept+{offset}")], on_stop)


def test_kp_where_outside_kprobe_handling(session):
    def on_stop(_number):
        found = document(session, "kp-where --json", "kp-where")
        assert not found["handling"] and found["probe"] is found["current_kprobe"] is None
        assert f"cpu{found['cpu']} is not handling a kprobe" in session.gdb.execute("kp-where")

    run(session, ["inet_accept"], on_stop)


def sim_json(session, command: str) -> dict:
    """A kp-sim --json run while the guest accepts a connection: one document, nothing
    else printed (no "waiting" line), valid against the schema."""
    session.stop()
    session.gdb.child.sendline(command)
    token = session.lab.guest.send(TRAFFIC)
    out = session.gdb.wait_prompt(timeout=120)
    session.running = False
    session.resume()
    session.lab.guest.wait(token)
    lines = [line for line in out.splitlines()[1:] if line.strip()]     # [0]: the echo
    assert len(lines) == 1 and lines[0].startswith("{") and "\x1b" not in out, out
    found = json.loads(lines[0])
    jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / "kp-sim.json").read_text())).validate(found)
    assert_clean(session)
    return found


def test_kp_sim_json_matches_the_module(session):
    found = sim_json(session, "kp-sim --json inet_csk_accept")
    assert found["mode"] == "probe" and found["symbol"] == "inet_csk_accept"
    assert found["registers"][0] == "ip" and len(found["hits"]) == 1
    (hit,) = found["hits"]
    pre = re.findall(r"I am Handler Pre: <inet_csk_accept\+0x0> p->addr=0x(\w+) ip=0x(\w+) "
                     r"ax=0x(\w+) di=0x(\w+) si=0x(\w+) dx=0x(\w+) cx=0x(\w+) sp=0x(\w+)",
                     session.guest("dmesg"))[-1]
    module = dict(zip(("addr", "ip", "ax", "di", "si", "dx", "cx", "sp"),
                      (int(v, 16) for v in pre)))
    for name in ("ip", "di", "si", "dx", "cx", "sp", "ax"):
        assert int(hit["pre"][name], 16) == module[name], name
    assert int(found["address"], 16) == module["addr"]
    assert hit["post_ip_is_next"] and hit["post"]["ip"] == hit["next_insn"]
    assert hit["executed"] == [found["original"]]


def test_kp_sim_json_return_matches_the_kretprobe(session):
    found = sim_json(session, "kp-sim --json --ret inet_csk_accept")
    (hit,) = found["hits"]
    module = re.findall(r"kp_lab_kretprobe: inet_csk_accept returned 0x(\w+) and took (\d+) ns",
                        session.guest("dmesg"))[-1]
    assert found["mode"] == "return" and int(hit["retval"], 16) == int(module[0], 16)
    assert hit["elapsed_ns"] > 0 and set(hit["args"]) >= {"di", "si"}


@pytest.mark.parametrize("command, expected", [
    ("kp-where --json extra", "kp-where: unrecognized arguments: extra; see `help kp-where`"),
    ("kp-modules --json nosuch_module", "not loaded in the target: nosuch_module"),
    ("kp-sim --json --ret inet_accept+0x14", "kp-sim --ret takes a function (a return probe "
                                             "is always at the function's entry)"),
    ("kp-blacklist --json a b", "kp-blacklist: unrecognized arguments: b; see "
                                "`help kp-blacklist`"),
])
def test_bad_json_input_is_one_line(session, command, expected):
    out = session.gdb_cmd(command).strip()
    assert out == expected
