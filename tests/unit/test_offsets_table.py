"""kp-locals --offsets without a target: verdict labels, grouping of identical rows, the text
layout (split to fit a width, colour), and the JSON against its schema, on hand-made rows."""
from __future__ import annotations

import json
import pathlib
import re

import jsonschema
import pytest

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema" / \
    "kp-locals-offsets.json"
START = 0xFFFFFFFF8189AD60


@pytest.fixture
def mods(fake_gdb):
    from gdb_kprobe.analysis import offsets_table as model
    from gdb_kprobe.analysis import prologue, scope
    from gdb_kprobe.kernel import checks, places
    from gdb_kprobe.target.disasm import Insn
    from gdb_kprobe.ui import jsonout, jsonout_offsets, offsets_table as text
    from gdb_kprobe.ui.colour import Palette
    return model, prologue, scope, checks, places, Insn, text, jsonout, jsonout_offsets, Palette


def verdict(checks, error=None, reason=None, notes=(), address=None, module_ok=None):
    accepted = checks.Answer(None)
    events = accepted if error is None else checks.Answer(error, reason)
    module = events if module_ok is None else (accepted if module_ok else events)
    return checks.Verdict("f+0", address, None, module, events, list(notes))


def variable(scope, name, where, register=None, offset=0, argument=True):
    return scope.Variable(name, argument, "struct sock *", 8, False, True, False, where,
                          register, offset)


def table(mods, inlined_row=False):
    """inet_accept-like: sock in %rdi then %rbp, err on the stack once allocated."""
    model, prologue, scope, checks, places, Insn, *_ = mods
    no_frame = prologue.Prologue([], 0, False, 8, None)
    framed = prologue.Prologue(["r12", "rbp", "rbx"], 0x10, False, 0x30, START + 0x18)
    spec = [  # offset, length, sock, err (cfa -0x2c), facts, verdict
        (0x0, 5, ("register", "rdi"), "cfa", no_frame, verdict(checks, notes=["ftrace-based: x"])),
        (0x5, 2, ("register", "rdi"), "cfa", no_frame, verdict(checks)),
        (0x7, 3, ("register", "rdi"), "cfa", no_frame, verdict(checks)),
        (0xa, 4, ("register", "rbp"), "cfa", framed, verdict(checks)),
        (0xe, 4, ("register", "rbp"), "cfa", framed, verdict(checks)),
        (0x12, 4, ("none", None), None, framed, verdict(checks, 84, "not an instruction "
                                                             "boundary: inside `x`")),
    ]
    rows = []
    for offset, length, (where, register), err, facts, answer in spec:
        sock = variable(scope, "sock", where, register)
        cells = {"sock": model.Cell(sock, f"%{register}" if register else "optimized out",
                                    model.readable(sock, facts))}
        if err:
            var = variable(scope, "err", "cfa", offset=-0x2c, argument=False)
            cells["err"] = model.Cell(var, "+0x4(%rsp)  [CFA-0x2c]" if facts.cfa_from_rsp > 8
                                      else "CFA-0x2c: below %rsp, not allocated yet at this PC",
                                      model.readable(var, facts))
        insn = Insn(START + offset, b"\x90" * length, "nop")
        rows.append(model.Row(offset, insn, cells, answer,
                              model.verdict_label(answer, START + offset, START),
                              "lock_sock" if inlined_row and offset == 0x7 else None))
    columns = [model.Column("sock", True, "struct socket *"),
               model.Column("err", False, "int")]
    function = places.Place(START, "inet_accept", 0, 0x16, None)
    return model.OffsetsTable(function, "inet_accept", "net/ipv4/af_inet.c:767", columns, rows,
                              [])


def test_verdict_labels(mods):
    model, _, _, checks, *_ = mods
    label = model.verdict_label
    assert label(verdict(checks), START, START) == "ok"
    assert label(verdict(checks, notes=["ftrace-based: the fentry site"]), START, START) == \
        "ok (ftrace)"
    assert label(verdict(checks, notes=["ftrace-based: x"], address=START + 4), START, START) \
        == "ok (ftrace, at +0x4)"
    joined = verdict(checks, notes=["a probe is already registered here: the new one joins it"],
                     address=START)
    assert label(joined, START, START, START) == "ok (ftrace, probed)"
    assert label(joined, START, START, None) == "ok (probed)"
    assert label(verdict(checks, 84, "not an instruction boundary: inside `mov`"), 0, 0) == \
        "mid-insn"
    assert label(verdict(checks, 22, "f is in the kprobe blacklist (debugfs ...)"), 0, 0) == \
        "blacklisted"
    assert label(verdict(checks, 22, "no ftrace call site in this function: kprobe_events "
                         "refuses notrace functions", module_ok=True), 0, 0) == \
        "notrace (module ok)"
    assert label(verdict(checks, 22, "a jump label (static key) patch site"), 0, 0) == \
        "-EINVAL a jump label"


def test_instructions_kprobes_cannot_emulate(mods):
    from gdb_kprobe import arch
    assert arch.unemulated_insn(bytes.fromhex("ff5020")) is not None      # call *0x20(%rax)
    assert arch.unemulated_insn(bytes.fromhex("41ff24c4")) is not None    # jmp *(%r12,%rax,8)
    assert arch.unemulated_insn(bytes.fromhex("ffd0")) is None            # call *%rax
    assert arch.unemulated_insn(bytes.fromhex("41ffe3")) is None          # jmp *%r11
    assert arch.unemulated_insn(bytes.fromhex("67ffd0")) is not None      # 32-bit address
    assert arch.unemulated_insn(bytes.fromhex("ff1c25")) is not None      # lcall *
    assert arch.unemulated_insn(bytes.fromhex("48cf")) is not None        # iretq
    assert arch.unemulated_insn(bytes.fromhex("ff742408")) is None        # push 0x8(%rsp)
    assert arch.unemulated_insn(bytes.fromhex("e800000000")) is None      # call rel32
    model, _, _, checks, *_ = mods
    refused = verdict(checks, 95, "`call *0x20(%rax)` is an indirect call (prepare_emulation())")
    assert model.verdict_label(refused, 0, 0) == "unemulated"


def test_readable(mods):
    model, prologue, scope, *_ = mods
    slot = variable(scope, "err", "cfa", offset=-0x2c)
    assert not model.readable(slot, prologue.Prologue([], 0, False, 8, None))
    assert model.readable(slot, prologue.Prologue(["rbx"], 0x28, False, 0x38, None))
    assert model.readable(slot, prologue.Prologue(["rbp"], 0, True, 0x10, None))
    assert model.readable(variable(scope, "x", "register", "rdi"), None)
    assert not model.readable(variable(scope, "x", "entry", "rdi"), None)
    assert not model.readable(variable(scope, "x", "none"), None)


def test_identical_rows_are_grouped(mods):
    text = mods[6]
    out = text.render(table(mods))
    lines = out.splitlines()
    assert lines[0] == ("inet_accept (0xffffffff8189ad60, 0x16 bytes, net/ipv4/af_inet.c:767): "
                        "6 instructions in 4 rows")
    assert re.split(r"\s+", lines[1]) == ["offsets", "n", "probe", "sock", "err"]
    body = [re.split(r"\s{2,}", line) for line in lines[2:6]]
    assert body == [["+0x0", "1", "ok (ftrace)", "%rdi", "unalloc"],
                    ["+0x5..+0x7", "2", "ok", "%rdi", "unalloc"],
                    ["+0xa..+0xe", "2", "ok", "%rbp", "+0x4(%rsp)"],
                    ["+0x12", "1", "mid-insn", "-"]]
    assert "params: sock (struct socket *)" in out and "locals: err (int)" in out
    assert "\x1b" not in out


def test_an_inlined_function_splits_a_group_and_gets_a_column(mods):
    out = mods[6].render(table(mods, inlined_row=True))
    assert re.split(r"\s+", out.splitlines()[1])[:4] == ["offsets", "n", "probe", "inlined"]
    assert "lock_sock()" in out
    assert "+0x5 " in out and "+0x7 " in out and "+0x5..+0x7" not in out


def test_narrow_width_splits_the_columns(mods):
    out = mods[6].render(table(mods), width=40)
    headers = [line for line in out.splitlines() if line.startswith("offsets")]
    assert len(headers) == 2
    assert headers[0].split()[-1] == "sock" and headers[1].split()[-1] == "err"
    # each part groups on its own columns: sock is the same from +0x5 to +0x7 and +0xa to +0xe
    assert all(len(line) <= 40 for line in out.splitlines()[:12] if line.startswith("+"))


def test_colour_keeps_the_columns(mods):
    text, Palette = mods[6], mods[9]
    coloured = text.render(table(mods), Palette(True))
    assert "\x1b[" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == text.render(table(mods))


def test_json_has_every_row_and_validates(mods):
    jsonout, jsonout_offsets = mods[7], mods[8]
    document = json.loads(jsonout.dumps(jsonout_offsets.offsets_table(table(mods))))
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(document)
    assert document["schema"] == "kp-locals-offsets" and document["version"] == 1
    assert [row["offset"] for row in document["rows"]] == [0, 5, 7, 0xa, 0xe, 0x12]
    last = document["rows"][-1]
    assert last["cells"][1] is None and last["probe"]["accepted"] is False
    assert last["probe"]["kprobe_events"]["errno"] == "EILSEQ"
    assert document["rows"][3]["cells"][1]["readable"] is True
    assert document["rows"][0]["cells"][1]["short"] == "unalloc"
