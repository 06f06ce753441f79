"""--json of kp-where, kp-modules, kp-blacklist, kp-kaslr and kp-sim (ui/jsonout_listings.py,
ui/jsonout_stop.py) on hand-made model objects: each validates against its published schema
in docs/schema/ and carries what the text of the same model object says."""
from __future__ import annotations

import json
import pathlib

import jsonschema
import pytest

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema"


def checked(jsonout, document: dict, name: str) -> dict:
    """One line, no colour, valid against docs/schema/NAME.json."""
    text = jsonout.dumps(document)
    assert text.endswith("\n") and "\n" not in text[:-1] and "\x1b" not in text
    found = json.loads(text)
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(found)
    assert list(found)[:2] == ["schema", "version"] and found["schema"] == name
    return found


@pytest.fixture
def ui(fake_gdb):
    from gdb_kprobe.ui import jsonout, jsonout_listings, jsonout_stop, render, render_stop
    return jsonout, jsonout_listings, jsonout_stop, render, render_stop


def test_kp_where_handling_and_not(ui):
    jsonout, _, jsonout_stop, _, render_stop = ui
    from gdb_kprobe.analysis.where import Where, WhereFrame
    from gdb_kprobe.kernel.kallsyms import Location
    frames = [WhereFrame(2, "handler_pre", "handler", "a handler of this probe"),
              WhereFrame(3, "kprobe_int3_handler", "stage", "int3 entry"),
              WhereFrame(6, "inet_csk_accept", "unwound", "[probed at inet_csk_accept+0x5]"),
              WhereFrame(7, None, "unwound", "<kretprobe: return address restored>")]
    found = Where(1, 0xFF11000004C7C900, 0xFFFFFFFF81855475,
                  Location("inet_csk_accept", 5, 0x300, None), "KPROBE_HIT_ACTIVE",
                  "pre-handler", frames)
    document = checked(jsonout, jsonout_stop.where(found), "kp-where")
    assert document["handling"] and document["probe"]["symbol"] == "inet_csk_accept"
    assert document["current_kprobe"] == "0xff11000004c7c900"
    text = render_stop.where(found)
    assert "stage: pre-handler" in text and "frame #2: handler_pre: a handler of this probe" in text
    assert "frame #6: inet_csk_accept [probed at inet_csk_accept+0x5]" in text
    assert "frame #7: ?? <kretprobe" in text
    assert [f["level"] for f in document["frames"]] == [2, 3, 6, 7]
    idle = Where(0, 0, None, None, "KPROBE_HIT_SSDONE", "not in kprobe handling", [])
    document = checked(jsonout, jsonout_stop.where(idle), "kp-where")
    assert not document["handling"] and document["probe"] is document["current_kprobe"] is None
    assert render_stop.where(idle) == "cpu0 is not handling a kprobe (current_kprobe is NULL)\n"
    # a rethook return handler runs with current_kprobe NULL and still counts
    rethook = Where(0, 0, None, None, "KPROBE_HIT_SSDONE", "kretprobe return handler (rethook)",
                    [WhereFrame(1, "arch_rethook_trampoline_callback", "stage",
                                "kretprobe return handler")])
    assert checked(jsonout, jsonout_stop.where(rethook), "kp-where")["handling"]
    assert render_stop.where(rethook).startswith("cpu0 is handling a kprobe: 0x0 ")


def test_kp_modules(ui):
    jsonout, jsonout_listings, _, render, _ = ui
    from gdb_kprobe.engine.symbol_files import ModuleListing, ModuleRow
    from gdb_kprobe.kernel.modules import Module
    loaded = Module(0xFFFFFFFFC0211040, "kp_lab_kprobe", 0, [(0xFFFFFFFFC020F000, 0x2000)],
                    [(0xFFFFFFFFC020F000, 0x1000)], 0)
    bare = Module(0xFFFFFFFFC0300000, "odd", 0, [], [], 0)
    listing = ModuleListing([ModuleRow(loaded, "/lab/kp_lab_kprobe.ko", "symbols loaded now"),
                             ModuleRow(bare, None, "")], ["modules list: a cycle"])
    document = checked(jsonout, jsonout_listings.modules(listing), "kp-modules")
    first, second = document["modules"]
    assert first == {"name": "kp_lab_kprobe", "module": "0xffffffffc0211040",
                     "text": "0xffffffffc020f000", "size": 0x2000,
                     "ko": "/lab/kp_lab_kprobe.ko", "symbols": "symbols loaded now"}
    assert second["text"] is None and second["ko"] is second["symbols"] is None
    text = render.module_list([(r.module, r.path, r.state) for r in listing.rows],
                              listing.damage)
    assert "0xffffffffc020f000     8192" in text and document["damage"] == listing.damage


def test_kp_blacklist(ui):
    jsonout, jsonout_listings, _, render, _ = ui
    from gdb_kprobe.kernel.blacklist import BlacklistEntry, Listing
    from gdb_kprobe.kernel.kallsyms import Location
    rows = [(BlacklistEntry(0xFFFFFFFF81001000, 0xFFFFFFFF81001040),
             Location("do_int3", 0, 0x40, None)),
            (BlacklistEntry(0xFFFFFFFFC0200000, 0xFFFFFFFFC0200010),
             Location("kp_fn", 0, 0x10, "kp_lab_kprobe")),
            (BlacklistEntry(0xFFFFFFFF82000000, 0xFFFFFFFF82000100), None)]
    listing = Listing(rows, [], 7)
    document = checked(jsonout, jsonout_listings.blacklist(listing), "kp-blacklist")
    assert document["total"] == 7 and len(document["entries"]) == 3
    # the debugfs line back from each entry: "0x%px-0x%px\t%ps"
    lines = []
    for entry in document["entries"]:
        name = entry["start"] if entry["symbol"] is None else (
            f"{entry['symbol']} [{entry['module']}]" if entry["module"] else entry["symbol"])
        lines.append(f"0x{int(entry['start'], 16):016x}-0x{int(entry['end'], 16):016x}\t{name}")
    assert "".join(line + "\n" for line in lines) == render.blacklist(rows, [])


@pytest.mark.parametrize("slide, bias, relocated, state, text", [
    (0, 0, False, "matches", "matches the running kernel (no KASLR slide): Linux version 6"),
    (0x1e00000, 0x1e00000, False, "matches", "(relocated by 0x1e00000): Linux version 6"),
    (0x1e00000, 0, False, "moved", "KASLR moved the kernel by 0x1e00000 from"),
    (0x1e00000, 0x1e00000, True, "relocated", "kp-kaslr: symbols relocated by 0x1e00000"),
])
def test_kp_kaslr(ui, slide, bias, relocated, state, text):
    jsonout, jsonout_listings, _, render, _ = ui
    from gdb_kprobe.engine.symbol_files import KaslrState
    found = KaslrState("Linux version 6.1.0-lab", slide, bias, relocated)
    document = checked(jsonout, jsonout_listings.kaslr(found), "kp-kaslr")
    assert (document["state"], document["slide"], document["symbols_offset"]) == \
        (state, slide, bias)
    assert text in render.kaslr(found)


def test_kp_sim_probe_and_return(ui):
    jsonout, _, jsonout_stop, _, render_stop = ui
    from gdb_kprobe.engine.sim import Hit, Plan, ReturnHit
    from gdb_kprobe.kernel.anatomy import Continuation
    from gdb_kprobe.kernel.places import Place
    from gdb_kprobe.target.disasm import Insn
    place = Place(0xFFFFFFFF8189AD74, "inet_accept", 0x14, 0xA0, None)
    original = Insn(place.address, bytes.fromhex("4883ec10"), "sub    $0x10,%rsp")
    live = Insn(place.address, bytes.fromhex("e9aabbccdd"), "jmp    0xffffffffc0000000")
    plan = Plan(place, original, live, Continuation(place.address + 5, "an optimized kprobe"),
                ["ip", "sp"])
    pre = {"ip": place.address + 1, "sp": 0xFFFFC90000103E00}
    post = {"ip": place.address + 4, "sp": 0xFFFFC90000103DF0}
    hit = Hit(1, 0, "kp_accept", pre, post, [original], "continuation breakpoint")
    document = checked(jsonout, jsonout_stop.sim_probe(plan, [hit]), "kp-sim")
    (shown,) = document["hits"]
    assert shown["changed"] == ["ip", "sp"] and shown["post_ip_is_next"] is True
    assert shown["pre"] == {"ip": "0xffffffff8189ad75", "sp": "0xffffc90000103e00"}
    assert document["post_view"]["address"] == "0xffffffff8189ad79"
    assert "post ip 0xffffffff8189ad78 is the next instruction" in render_stop.sim_hit(
        hit, place.address)
    entry = Place(0xFFFFFFFF81855470, "inet_csk_accept", 0, 0x300, None)
    ret = ReturnHit(1, "kp_accept", 0xFFFFC90000103E00, 0xFFFFFFFF8189AD90,
                    {"di": 1, "si": 2}, (1 << 64) - 11, 1234)
    document = checked(jsonout, jsonout_stop.sim_return(entry, [ret]), "kp-sim")
    (shown,) = document["hits"]
    assert shown["errno"] == -11 and shown["retval"] == "0xfffffffffffffff5"
    assert "(-11)" in render_stop.sim_return_hit(ret) and shown["elapsed_ns"] == 1234
