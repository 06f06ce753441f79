"""kp-locals --offsets FUNCTION agrees with kp-locals and with the guest kernel: at every row
that claims a variable is readable, kp-locals at that address places every variable in the
same words; every row marked probe-able is one kprobe_events takes, every other row one it
refuses; the JSON validates against docs/schema/kp-locals-offsets.json; the text groups the
same rows."""
from __future__ import annotations

import json
import pathlib
import re

import jsonschema
import pytest

EVENTS = "/sys/kernel/tracing/kprobe_events"
SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema" / \
    "kp-locals-offsets.json"
# inet_accept: registers, a stack local, an inlined lock_sock(), the lab's optprobe at +0x14;
# do_sys_openat2: a bigger function with structs on the stack, the lab's ftrace probe at +0
FUNCTIONS = ("inet_accept", "do_sys_openat2")


def offsets_document(session, function: str) -> dict:
    out = session.gdb_cmd(f"kp-locals {function} --offsets --json")
    assert out.count("\n") == 1 and "\x1b" not in out, out
    document = json.loads(out)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(document)
    return document


@pytest.fixture(scope="module")
def documents(session) -> dict[str, dict]:
    return {function: offsets_document(session, function) for function in FUNCTIONS}


def cells_of(document: dict, row: dict) -> dict[str, str]:
    return {column["name"]: cell["placement"]
            for column, cell in zip(document["variables"], row["cells"]) if cell is not None}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_boundary_is_a_row(session, documents, function):
    document = documents[function]
    rows = document["rows"]
    assert rows[0]["offset"] == 0 and len(rows) >= 20
    size = document["size"]
    for row, following in zip(rows, rows[1:]):
        assert following["offset"] == row["offset"] + len(row["bytes"]) // 2
    assert rows[-1]["offset"] < size <= rows[-1]["offset"] + len(rows[-1]["bytes"]) // 2
    kinds = {column["kind"] for column in document["variables"]}
    assert kinds == {"param", "local"}
    assert any(cell and cell["readable"] for row in rows for cell in row["cells"])


@pytest.mark.parametrize("function", FUNCTIONS)
def test_readable_rows_agree_with_kp_locals(session, documents, function):
    document = documents[function]
    claimed = [row for row in document["rows"]
               if any(cell and cell["readable"] for cell in row["cells"])]
    assert len(claimed) >= 15
    mismatches = []
    for row in claimed:
        # by address: `FUNCTION+0` would mean the IBT entry (+0x4) to kp-locals
        shown = json.loads(session.gdb_cmd(f"kp-locals {row['address']} --json"))
        theirs = {variable["name"]: variable["placement"] for variable in shown["variables"]}
        if theirs != cells_of(document, row):
            mismatches.append(f"+{row['offset']:#x}: table {cells_of(document, row)}, "
                              f"kp-locals {theirs}")
    assert not mismatches, "\n".join(mismatches)


def guest_answers(session, function: str, offsets: list[int]) -> dict[int, bool]:
    """Does the guest's kprobe_events take `p:kpoff/x FUNCTION+OFF`? (removed again)"""
    before = session.guest(f"cat {EVENTS}")
    listed = " ".join(f"{offset:#x}" for offset in offsets)
    out = session.guest(
        f"E={EVENTS}; for o in {listed}; do "
        f"if echo \"p:kpoff/x {function}+$o\" >> $E 2>/dev/null; then echo \"R|$o|ok\"; "
        "echo '-:kpoff/x' >> $E; else echo \"R|$o|no\"; fi; done", timeout=600)
    assert session.guest(f"cat {EVENTS}") == before
    answers = {int(offset, 16): verdict == "ok"
               for offset, verdict in re.findall(r"^R\|(0x[0-9a-f]+)\|(ok|no)", out, re.M)}
    assert set(answers) == set(offsets), out[-2000:]
    return answers


@pytest.mark.parametrize("function", FUNCTIONS)
def test_probe_verdicts_agree_with_the_guest(session, documents, function):
    rows = documents[function]["rows"]
    answers = guest_answers(session, function, [row["offset"] for row in rows])
    wrong = [f"+{row['offset']:#x} `{row['asm']}`: table {row['probe']['label']!r}, guest "
             f"{'accepts' if answers[row['offset']] else 'refuses'}"
             for row in rows if answers[row["offset"]] != row["probe"]["accepted"]]
    assert not wrong, "\n".join(wrong)
    assert any(re.match(r"ok \(ftrace\b", row["probe"]["label"]) for row in rows)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_text_groups_the_json_rows(session, documents, function):
    out = session.gdb_cmd(f"kp-locals {function} --offsets")
    rows = documents[function]["rows"]
    head = re.match(rf"{function} \(0x[0-9a-f]+, 0x[0-9a-f]+ bytes.*\): (\d+) instructions in "
                    r"(\d+) rows$", out.splitlines()[0])
    assert head and int(head.group(1)) == len(rows), out
    body = [line for line in out.splitlines() if line.startswith("+")]
    assert len(body) == int(head.group(2)) < len(rows)
    counts = [int(line.split()[1]) for line in body]
    assert sum(counts) == len(rows)
    first = re.match(r"\+(0x[0-9a-f]+)(?:\.\.\+(0x[0-9a-f]+))?\s", body[-1])
    assert int(first.group(2) or first.group(1), 16) == rows[-1]["offset"]


def test_bad_input(session):
    for command, expected in [
        ("kp-locals jiffies --offsets", "`jiffies` is not a function"),
        ("kp-locals inet_accept+4 --offsets", "kp-locals --offsets takes a function"),
        ("kp-locals nosuch_fn_kp --offsets", "no symbol `nosuch_fn_kp` in the kernel"),
        ("kp-locals inet_accept --offsets --break", "kp-locals: --offsets shows a whole"),
        ("kp-locals nosuch_mod_kp:foo --offsets", "no module `nosuch_mod_kp`"),
    ]:
        out = session.gdb_cmd(command).strip()
        assert len(out.splitlines()) == 1 and out.startswith(expected), (command, out)
