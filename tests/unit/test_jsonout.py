"""--json shaping (gdb_kprobe/jsonout.py) on hand-made model objects, validated against the
published schemas in docs/schema/; and kp-list's colour, which JSON never has."""
from __future__ import annotations

import json
import pathlib

import jsonschema
import pytest

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema"
FTRACE_ENTRY = 8 | 16


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def validate(document: dict, name: str) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(document)


def roundtrip(jsonout, document: dict) -> dict:
    """What a consumer reads: one line, no colour, the same data back."""
    text = jsonout.dumps(document)
    assert text.endswith("\n") and "\n" not in text[:-1] and "\x1b" not in text
    return json.loads(text)


@pytest.fixture
def model(fake_gdb):
    from gdb_kprobe.kernel import kprobes
    from gdb_kprobe.kernel import kprobes_list as report
    from gdb_kprobe.ui import jsonout, render
    from gdb_kprobe.ui.colour import Palette
    from gdb_kprobe.kernel.kallsyms import Location
    return jsonout, render, kprobes, report, Location, Palette


def kprobe(kprobes, addr, flags=0, address=0xFF11000004599818, pre=0, post=0):
    return kprobes.Kprobe(address=address, addr=addr, flags=flags, pre_handler=pre,
                          post_handler=post, nmissed=3, symbol_name=0, offset=0, opcode=0x48)


def rows(model):
    """A small kprobes/list: a trace-event probe, an aggregate, a module kretprobe, a probe
    whose symbol is unknown, and a damage note."""
    jsonout, render, kprobes, report, Location, _ = model
    event = kprobes.TraceEvent("kprobes/kp_entry", 0xFF1100001FEA8200, 0)
    dispatcher = Location("kprobe_dispatcher", 0, 0x90, None)
    entry = kprobe(kprobes, 0xFFFFFFFF8134A350, FTRACE_ENTRY, pre=0xFFFFFFFF811E5910)
    traced = report.ProbeRow(entry, None, "k", Location("do_sys_openat2", 0, 0x200, None),
                             report.Details(report.Owner("trace_event", "kprobes/kp_entry"), event, dispatcher,
                                            None, None, None, None))
    aggregate = kprobe(kprobes, 0xFFFFFFFF8189AD74, kprobes.KPROBE_FLAG_OPTIMIZED,
                       address=0xFF110000054690C0)
    child = kprobe(kprobes, 0xFFFFFFFF8189AD74, kprobes.KPROBE_FLAG_DISABLED,
                   address=0xFF1100001FEA9218)
    inner = report.ProbeRow(child, aggregate, "k", Location("inet_accept", 0x14, 0xA0, None))
    kret = kprobes.KretprobeInfo(0xFFFFFFFFC0214000, 0xFFFFFFFFC0212010, 0xFFFFFFFFC0212000,
                                 20, 1, 8, 0xFF11000004000000)
    handler = Location("ret_handler", 0, 0x40, "kp_lab_kretprobe")
    entry_handler = Location("entry_handler", 0, 0x10, "kp_lab_kretprobe")
    ret = report.ProbeRow(kprobe(kprobes, 0xFFFFFFFF81855470, FTRACE_ENTRY,
                                 address=0xFFFFFFFFC0214008, pre=0xFFFFFFFF81190000),
                          None, "r", Location("inet_csk_accept", 0, 0x300, None),
                          report.Details(report.Owner("module", "kp_lab_kretprobe"), None,
                                         Location("pre_handler_kretprobe", 0, 0x80, None), None,
                                         kret, handler, entry_handler))
    gone = report.ProbeRow(kprobe(kprobes, 0xFFFFFFFFC0209010,
                                  kprobes.KPROBE_FLAG_GONE | kprobes.KPROBE_FLAG_DISABLED),
                           None, "k", None)
    return [traced, inner, report.Damage("kprobe_table[7]: a cycle"), ret, gone]


def test_kp_list_document_validates_and_follows_the_text(model):
    jsonout, render, *_ = model
    listed = rows(model)
    document = roundtrip(jsonout, jsonout.probe_list(listed))
    validate(document, "kp-list")
    assert list(document)[:2] == ["schema", "version"] and document["version"] == 1
    probes = document["probes"]
    assert [p["index"] for p in probes] == [1, 2, 3, 4]
    assert document["damage"] == [{"after": 2, "note": "kprobe_table[7]: a cycle"}]
    # the same address, type and flag words as the debugfs line of each row, in order
    text_lines = render.probe_list(listed).splitlines()
    text_lines = [line for line in text_lines if not line.startswith(("!!", "    "))]
    for entry, line in zip(probes, text_lines, strict=True):
        address, kind = line.split()[:2]
        assert int(entry["address"], 16) == int(address, 16) and entry["type"] == kind
        words = "".join(f"[{word}]" for word in entry["flags"])
        assert line.endswith(" " + words) or (not words and line.endswith(" "))
    assert probes[1]["flags"] == ["DISABLED", "OPTIMIZED"]
    assert probes[1]["aggregate"] == "0xff110000054690c0"
    assert probes[3] | {"details": None} == {
        "index": 4, "type": "k", "address": "0xffffffffc0209010", "symbol": None,
        "offset": None, "module": None, "flags": ["GONE"], "kprobe": "0xff11000004599818",
        "aggregate": None, "details": None}


def test_kp_list_details(model):
    jsonout, *_ = model
    document = roundtrip(jsonout, jsonout.probe_list(rows(model)))
    traced, inner, ret, _ = document["probes"]
    assert inner["details"] is None
    assert traced["details"]["owner"] == {"kind": "trace_event", "name": "kprobes/kp_entry"}
    assert traced["details"]["trace_event"] == {"name": "kprobes/kp_entry",
                                                "trace_kprobe": "0xff1100001fea8200"}
    assert traced["details"]["kprobe_flag_names"] == ["FTRACE", "ON_FUNC_ENTRY"]
    assert traced["details"]["pre_handler"] == {"address": "0xffffffff811e5910",
                                                "symbol": "kprobe_dispatcher", "offset": 0,
                                                "module": None}
    assert traced["details"]["post_handler"] is None
    details = ret["details"]
    assert details["owner"] == {"kind": "module", "name": "kp_lab_kretprobe"}
    assert details["kretprobe"]["maxactive"] == 20
    assert details["kretprobe"]["handler"]["module"] == "kp_lab_kretprobe"
    assert details["kretprobe"]["rethook"] == "0xff11000004000000"


def test_kernel_owner_and_no_rethook(model):
    jsonout, _, kprobes, report, Location, _ = model
    kret = kprobes.KretprobeInfo(0xFFFFFFFF82000000, 0, 0, 0, 0, 0, 0)
    row = report.ProbeRow(kprobe(kprobes, 0xFFFFFFFF81000000), None, "r",
                          Location("f", 0, 1, None),
                          report.Details(report.Owner("kernel"), None, None, None, kret, None, None))
    document = jsonout.probe_list([row])
    validate(document, "kp-list")
    assert document["probes"][0]["details"]["owner"] == {"kind": "kernel", "name": None}
    assert document["probes"][0]["details"]["kretprobe"]["rethook"] is None


def test_empty_list(model):
    jsonout, *_ = model
    document = jsonout.probe_list([])
    validate(document, "kp-list")
    assert document == {"schema": "kp-list", "version": 1, "probes": [], "damage": []}


def test_colour_only_in_text_and_only_when_asked(model):
    jsonout, render, _, _, _, Palette = model
    listed = rows(model)
    plain = render.probe_list(listed)
    coloured = render.probe_list(listed, palette=Palette(True))
    assert "\x1b[" not in plain and "\x1b[" in coloured
    assert render.probe_list(listed, palette=Palette(False)) == plain
    # stripping the escapes gives the plain (debugfs) text back
    import re
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


# -- kp-show ----------------------------------------------------------------------------------

def anatomy(model, optimized: bool = True):
    jsonout, render, kprobes, report, Location, _ = model
    from gdb_kprobe.target import disasm as code
    from gdb_kprobe.kernel import anatomy as am, rethook
    listed = rows(model)
    inner, ret = listed[1], listed[3]
    sub = code.Insn(0xFFFFFFFF8189AD74, b"\x48\x83\xec\x10", "sub    $0x10,%rsp")
    jmp = code.Insn(0xFFFFFFFF8189AD74, b"\xe9\x87\xa2\x96\x3e", "jmp    0xffffffffc0205000")
    fields = [am.FieldValue("hlist", [("next", 0), ("pprev", 0xDEAD000000000122)]),
              am.FieldValue("addr", 0xFFFFFFFF8189AD74),
              am.FieldValue("symbol_name", 0xFF1100001FF75640, None, "inet_accept"),
              am.FieldValue("pre_handler", 0xFFFFFFFF811E5910,
                       Location("kprobe_dispatcher", 0, 0x90, None)),
              am.FieldValue("offset", -1)]
    probes = [am.ProbeAnatomy(inner, rows(model)[0].details, fields, None, 7),
              am.ProbeAnatomy(ret, ret.details, fields,
                              rethook.Instances(20, 18, "freelist"))]
    patch = am.Patch("optprobe jmp", "replaced by a jmp", [jmp], [sub], 0xFFFFFFFFC0205000,
                     None) if optimized else am.Patch("int3", "int3", [jmp], None)
    opt = am.Optimized(0xFF110000054690C0, 0xFFFFFFFFC0205000, 8, [sub]) if optimized else None
    step = am.SingleStep(0xFFFFFFFFC0203000, 4, 0, [sub])
    cpus = [am.CpuState(0, 0, 1, False), am.CpuState(1, 0xFF1100001FEA9218, 2, True),
            am.CpuState(2, 0, 0x40, False)]
    return am.Anatomy(0xFFFFFFFF8189AD74, Location("inet_accept", 0x14, 0xA0, None),
                      inner.aggregate, optimized, probes, patch, opt, step, 0x48, cpus,
                      ["per-CPU state: unreadable"], [])


def alone(model, document: dict) -> dict:
    """A place's document as kp-show writes it when that place is all there is."""
    place = {key: value for key, value in document.items() if key not in ("schema", "version")}
    return document | {"function": None, "whole_function": False, "places": [place],
                       "also_in_function": []}


def test_kp_show_document_validates(model):
    jsonout, render, *_ = model
    found = anatomy(model)
    document = roundtrip(jsonout, jsonout.probe_anatomy(found))
    validate(alone(model, document), "kp-show")
    assert document["schema"] == "kp-show" and document["symbol"] == "inet_accept"
    assert document["mechanism"] == "optprobe jmp"
    assert document["live"] == [{"address": "0xffffffff8189ad74", "bytes": "e987a2963e",
                                 "asm": "jmp    0xffffffffc0205000"}]
    assert document["jump_target"]["symbol"] is None
    assert document["optimized"]["copied_size"] == 8
    assert document["aggregate"]["kprobe_flag_names"] == ["OPTIMIZED"]
    first, second = document["probes"]
    assert first["trace_hits"] == 7 and first["trace_misses"] == 3
    assert second["trace_hits"] is None and second["instances"]["in_use"] == 2
    fields = {f["name"]: f for f in first["fields"]}
    assert fields["hlist"]["members"][1] == {"name": "pprev", "value": "0xdead000000000122"}
    assert fields["symbol_name"]["string"] == "inet_accept"
    assert fields["pre_handler"]["location"] == {"symbol": "kprobe_dispatcher", "offset": 0,
                                                 "module": None}
    assert fields["offset"]["value"] == "-0x1"
    assert [c["kprobe_status_name"] for c in document["cpus"]] == \
        ["KPROBE_HIT_ACTIVE", "KPROBE_HIT_SS", None]
    assert document["cpus"][1]["this_probe"] and document["cpus"][0]["current_kprobe"] is None
    # the text says the same things
    text = render.probe_anatomy(found)
    assert "hits 7, misses 3" in text and "3 in use" not in text and "2 in use" in text


def test_kp_show_without_optprobe_or_file_code(model):
    jsonout, *_ = model
    document = jsonout.probe_anatomy(anatomy(model, optimized=False))
    validate(alone(model, document), "kp-show")
    assert document["optimized"] is None and document["original"] is None
    assert document["aggregate"] is None and document["jump_target"] is None


def shown_function(model, whole: bool):
    """inet_csk_accept with probes at +0x0 (the anatomy above, relabelled) and +0x7: kp-show
    FUNCTION shows both places; kp-show inet_csk_accept+0x7 shows one, the other in brief."""
    import dataclasses
    from gdb_kprobe.kernel import function_probes
    jsonout, render, kprobes, report, Location, _ = model
    entry = anatomy(model, optimized=False)
    entry = dataclasses.replace(entry, address=0xFFFFFFFF81855470,
                                location=Location("inet_csk_accept", 0, 0x300, None))
    at7 = dataclasses.replace(entry, address=0xFFFFFFFF81855477,
                              location=Location("inet_csk_accept", 7, 0x300, None),
                              probes=entry.probes[:1], aggregate=False)
    function = function_probes.Function("inet_csk_accept", None, 0xFFFFFFFF81855470, 0x300)
    if whole:
        return function_probes.Shown(function, True, [entry, at7], [], ["one unreadable"], [])
    other = report.ProbeRow(kprobe(kprobes, 0xFFFFFFFF81855470, FTRACE_ENTRY),
                            entry.entry, "r", Location("inet_csk_accept", 0, 0x300, None))
    kprobe_row = report.ProbeRow(kprobe(kprobes, 0xFFFFFFFF81855470, FTRACE_ENTRY),
                                 entry.entry, "k", Location("inet_csk_accept", 0, 0x300, None))
    return function_probes.Shown(function, False, [at7], [other, kprobe_row], [], [])


def test_kp_show_function_document_validates(model):
    jsonout, render, *_ = model
    shown = shown_function(model, whole=True)
    document = roundtrip(jsonout, jsonout.probes_shown(shown))
    validate(document, "kp-show")
    assert document["whole_function"] and document["also_in_function"] == []
    assert document["function"] == {"address": "0xffffffff81855470",
                                    "symbol": "inet_csk_accept", "module": None, "size": 0x300}
    assert [place["offset"] for place in document["places"]] == [0, 7]
    # version 1's keys are the first place's, plus the places that could not be read
    first = {key: value for key, value in document.items() if key in document["places"][0]}
    assert first == document["places"][0] | {"damage": document["damage"]}
    assert document["damage"][-1] == "one unreadable"
    text = render.probes_shown(shown)
    assert text.splitlines()[0] == ("inet_csk_accept: 3 probes in the function, at +0x0 "
                                    "(kprobe, kretprobe) and +0x7 (kprobe)")
    assert text.count("per-CPU kprobe state") == 2 and "also in" not in text


def test_kp_show_one_place_names_the_others(model):
    jsonout, render, *_ = model
    shown = shown_function(model, whole=False)
    document = roundtrip(jsonout, jsonout.probes_shown(shown))
    validate(document, "kp-show")
    assert not document["whole_function"] and len(document["places"]) == 1
    assert [(p["type"], p["offset"]) for p in document["also_in_function"]] == [("r", 0),
                                                                             ("k", 0)]
    text = render.probes_shown(shown)
    assert text.splitlines()[-1] == ("also in inet_csk_accept: +0x0 (kretprobe, kprobe); "
                                     "kp-show inet_csk_accept shows every probe in it")
    assert text == render.probe_anatomy(shown.places[0]) + text.splitlines()[-1] + "\n"
    validator = jsonschema.Draft202012Validator(schema("kp-show"))
    assert not validator.is_valid(document | {"extra": 1})
    document["places"][0]["extra"] = 1
    assert not validator.is_valid(document)


# -- kp-locals --------------------------------------------------------------------------------

def locals_report(model, stopped: bool):
    from gdb_kprobe.analysis import prologue, scope
    from gdb_kprobe.analysis.probe_locals import LocalsReport
    from gdb_kprobe.kernel import places as location
    place = location.Place(0xFFFFFFFF8189AD7C, "inet_accept", 0x1C, 0xA0, None)
    facts = prologue.Prologue(["r12", "rbp", "rbx"], 0x10, False, 0x30, 0xFFFFFFFF8189AD78)
    variables = [
        scope.Variable("sock", True, "struct socket *", 8, False, True, False, "register", "rbp"),
        scope.Variable("kern", True, "bool", 1, False, False, False, "register", "rcx"),
        scope.Variable("err", False, "int", 4, True, False, False, "cfa", offset=-0x2C),
        scope.Variable("sk1", False, "struct sock *", 8, False, True, False, "none",
                       detail="optimized out"),
        scope.Variable("tbl", False, "int", 4, True, False, False, "static",
                       address=0xFFFFFFFF82000000),
    ]
    placement = {"sock": "%rbp", "kern": "%rcx", "err": "+0x4(%rsp)  [CFA-0x2c]",
                 "sk1": "optimized out", "tbl": "static at 0xffffffff82000000"}
    slot = prologue.Slot("rsp", 4, -0x2C, 0xFFFFFFFF8189AD78, "mov    %eax,0x4(%rsp)")
    values = {"sock": "0xff11000004032d80", "kern": "false", "err": "-6291456",
              "sk1": "<optimized out>", "tbl": "0"} if stopped else None
    return LocalsReport(place, "net/ipv4/af_inet.c:767", facts, variables, placement, values,
                        0 if stopped else None, 0xFFA00000003C3C48 if stopped else None,
                        [(slot, "err", "0x00000000ffa00000" if stopped else None)],
                        "p:kp_locals inet_accept+28 sock=%bp:x64 kern=%cx:u8 err=+4(%sp):s32",
                        ["sk1 (optimized out)"])


@pytest.mark.parametrize("stopped", [False, True])
def test_kp_locals_document_validates(model, stopped):
    jsonout, render, *_ = model
    report = locals_report(model, stopped)
    document = roundtrip(jsonout, jsonout.locals_report(report))
    validate(document, "kp-locals")
    assert document["symbol"] == "inet_accept" and document["offset"] == 0x1C
    assert document["prologue"] == {"pushes": ["r12", "rbp", "rbx"], "allocated": 0x10,
                                    "frame_size": 0x28, "frame_pointer": False,
                                    "cfa_register": "rsp", "cfa_offset": 0x30,
                                    "end_offset": 0x18}
    variables = {v["name"]: v for v in document["variables"]}
    assert variables["err"]["offset"] == -0x2C and variables["sock"]["offset"] is None
    assert variables["tbl"]["address"] == "0xffffffff82000000"
    from gdb_kprobe.ui import render_stop
    text = render_stop.locals_report(report)
    for name, variable in variables.items():
        assert variable["placement"] in text
        if stopped:
            assert variable["value"] == report.values[name]
        else:
            assert variable["value"] is None
    assert (document["frame"], document["cfa"]) == ((0, "0xffa00000003c3c48") if stopped
                                                    else (None, None))
    assert document["slots"][0]["owner"] == "err"
    assert f"kprobe_events: {document['kprobe_events']}" in text


# -- the schemas themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["kp-list", "kp-show", "kp-locals"])
def test_schemas_are_valid_draft_2020_12(name):
    jsonschema.Draft202012Validator.check_schema(schema(name))


def test_shared_definitions_do_not_drift():
    """kp-show repeats kp-list's definitions (each schema file stands alone)."""
    base, show, local = schema("kp-list")["$defs"], schema("kp-show")["$defs"], \
        schema("kp-locals")["$defs"]
    for name in ("hex", "location", "pointer", "listed_flags", "owner", "region", "warning",
                 "trace_event", "kretprobe", "details"):
        assert show[name] == base[name], name
    assert local["hex"] == base["hex"]


def test_schema_rejects_what_it_should():
    validator = jsonschema.Draft202012Validator(schema("kp-list"))
    good = {"schema": "kp-list", "version": 1, "probes": [], "damage": []}
    assert validator.is_valid(good)
    assert not validator.is_valid(good | {"version": 2})
    assert not validator.is_valid(good | {"extra": 1})
    probe = {"index": 1, "type": "k", "address": 18446744071584140660, "symbol": None,
             "offset": None, "module": None, "flags": [], "kprobe": "0x1", "aggregate": None,
             "details": None}
    assert not validator.is_valid(good | {"probes": [probe]}), "addresses are hex strings"
