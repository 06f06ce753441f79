"""The plugin behaves like gdb's own commands: completion of options and their values through
gdb's `complete` (what Tab shows), `kp` as a real prefix (`kp list` = `kp-list`, `help kp`
lists them), and one line saying so when a filter matches nothing."""
from __future__ import annotations

import pytest

from qemu.lab import GDBINIT, Gdb

pytestmark = pytest.mark.e2e

COMPLETIONS = {
    "complete kp-list --js": ["kp-list --json"],
    "complete kp-list --type ": ["kp-list --type k", "kp-list --type r"],
    "complete kp-list --type r": ["kp-list --type r"],
    "complete kp-locals --b": ["kp-locals --break"],
    "complete kp-sim --re": ["kp-sim --regs", "kp-sim --ret"],
    "complete kp list --js": ["kp list --json"],
    "complete kp li": ["kp list"],
}


@pytest.fixture(scope="module")
def bare_gdb(gdb_binary):
    gdb = Gdb(["-ex", f"source {GDBINIT}"], gdb_binary=gdb_binary)
    yield gdb
    gdb.close()


@pytest.mark.parametrize("command", sorted(COMPLETIONS))
def test_options_and_values_complete(bare_gdb, command):
    assert bare_gdb.execute(command).strip().split("\n") == COMPLETIONS[command]


def test_a_lone_dash_offers_only_options(bare_gdb):
    offered = bare_gdb.execute("complete kp-list -").strip().split("\n")
    assert "kp-list --json" in offered and "kp-list -v" in offered
    assert all(line.startswith("kp-list -") and " " not in line[len("kp-list "):]
               for line in offered), offered


def test_kp_is_a_prefix_of_every_command(bare_gdb):
    listed = bare_gdb.execute("help kp")
    for name in ("list", "show", "modules", "sim", "check", "blacklist", "kaslr", "locals",
                 "where"):
        assert f"kp {name} -- " in listed, listed


def test_kp_list_is_kp_list_and_nothing_matched_says_so(session):
    assert session.gdb_cmd("kp list") == session.gdb_cmd("kp-list")
    out = session.gdb_cmd("kp-list no_such_probe_kp").strip()
    assert out.startswith("kp-list: no probe matches a symbol containing `no_such_probe_kp` "
                          "(of "), out
    assert out.endswith(" registered)") and len(out.splitlines()) == 1
    out = session.gdb_cmd("kp-blacklist no_such_entry_kp").strip()
    assert out.startswith("kp-blacklist: no entry's symbol contains `no_such_entry_kp` (of "), out
