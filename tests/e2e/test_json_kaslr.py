"""kp-kaslr --json on a KASLR boot: "moved" with the guest's own slide, then "relocated" and
"matches"; each document valid against docs/schema/kp-kaslr.json (a file of its own: its
lab boots with KASLR, test_json_commands.py has the nokaslr one)."""
from __future__ import annotations

from test_json import document
from test_kaslr import _text, kaslr_session  # noqa: F401  (kaslr_session: a fixture)


def test_kp_kaslr_moved_then_relocated(kaslr_session):  # noqa: F811
    session = kaslr_session
    moved = document(session, "kp-kaslr --json", "kp-kaslr")
    assert moved["state"] == "moved" and moved["slide"] and moved["symbols_offset"] == 0
    text = session.gdb_cmd("kp-kaslr").strip()
    assert f"KASLR moved the kernel by {moved['slide']:#x} " in text
    # the guest's own _text against the vmlinux's
    guest = _text(session.guest("grep ' _text$' /proc/kallsyms"))
    assert guest - _text(session.lab.files.system_map.read_text()) == moved["slide"]
    relocated = document(session, "kp-kaslr --json --relocate", "kp-kaslr")
    assert (relocated["state"], relocated["slide"], relocated["symbols_offset"]) == \
        ("relocated", moved["slide"], moved["slide"])
    after = document(session, "kp-kaslr --json", "kp-kaslr")
    assert after == relocated | {"state": "matches"}
    assert f"(relocated by {moved['slide']:#x})" in session.gdb_cmd("kp-kaslr")
    debugfs, ours_list = session.list_pair()
    assert ours_list == debugfs
