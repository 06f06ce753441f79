"""The plugin behaves like gdb's own commands: completion of options and their values through
gdb's `complete` (what Tab shows), `kp` as a real prefix (`kp list` = `kp-list`, `help kp`
lists them), and one line saying so when a filter matches nothing."""
from __future__ import annotations

import re

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


def test_colour_follows_gdb_own_styling(session):
    """kp-color auto colours exactly when gdb would style its own output: a terminal with
    `set style enabled on` shows colour; `pipe kp-list | cat -A` (gdb styles nothing it
    pipes) and `set style enabled off` show none. The lab's gdb runs in a pty with
    TERM=dumb, which gdb never styles: the test sets a real terminal type."""
    stop_escape = "^["          # cat -A's picture of ESC
    try:
        session.gdb_cmd("python import os; os.environ['TERM'] = 'xterm-256color'")
        session.gdb_cmd("set style enabled on")
        assert "\x1b[" in session.gdb_cmd("kp-list"), "a terminal with styling on: colour"
        piped = session.gdb_cmd("pipe kp-list | cat -A")
        assert stop_escape not in piped and "\x1b" not in piped, piped
        debugfs = session.guest("cat /sys/kernel/debug/kprobes/list")
        assert piped.replace("$\n", "\n") == debugfs, "piped output is debugfs's bytes"
        assert "\x1b" not in session.gdb_cmd("| kp-list | cat"), "the | alias of pipe too"
        session.gdb_cmd("set style enabled off")
        assert "\x1b" not in session.gdb_cmd("kp-list")
    finally:
        session.gdb_cmd("set style enabled off")
        session.gdb_cmd("python import os; os.environ['TERM'] = 'dumb'")


# What Tab does at the prompt (readline on), typed into the session's gdb: each entry is
# what is typed (\t = Tab, \t\t lists), then the line readline left, then words its
# listing must show. Places complete from the vmlinux symbols (no types), module names and
# their symbols from the target, and `symbol+` offers the instruction boundaries.
TYPED = [
    ("kp-li\t", "kp-list ", []),
    ("kp li\t", "kp list ", []),
    ("kp-list --js\t", "kp-list --json ", []),
    ("kp-list --type \t\t", "kp-list --type ", ["k", "r"]),
    ("kp-locals --b\t", "kp-locals --break ", []),
    ("kp-show inet_csk_acce\t", "kp-show inet_csk_accept ", []),
    ("kp-show inet_csk_accept+\t", "kp-show inet_csk_accept+0x", []),
    # the first Tab inserts the common `0x`, the next ones list (a small function: readline
    # asks before listing more than 100)
    ("kp-show kp_lab_kprobe:handler_pre+\t\t\t", "kp-show kp_lab_kprobe:handler_pre+0x",
     ["0x0"]),
    ("kp-check kp_lab_kpro\t", "kp-check kp_lab_kprobe:", []),
    ("kp-check kp_lab_kprobe:handler_pr\t", "kp-check kp_lab_kprobe:handler_pre ", []),
    ("kp-sim task_stru\t\t", "kp-sim task_stru", []),
]


def typed(gdb: Gdb, keys: str) -> tuple[str, str]:
    """Type `keys` at the prompt, then wrap what readline left on the line in `echo [...]`
    (Ctrl-A, Ctrl-E) and run that: (the line, everything printed meanwhile)."""
    gdb.child.send(keys)
    gdb.child.send("\x01echo <<\x05>>\\n\r")
    # readline redraws the prompt while editing: wait for echo's own line, then the prompt
    gdb.child.expect(r"\n<<(.*)>>\r?\n", timeout=60)
    printed, line = gdb.child.before.replace("\r", ""), gdb.child.match.group(1)
    gdb.child.expect_exact(Gdb.PROMPT, timeout=60)
    return line, printed


def test_tab_completes_commands_options_values_and_places(session):
    session.gdb_cmd("kp-list")                  # stopped; kp-modules already placed them
    session.gdb.execute("set editing on")
    try:
        for keys, line, listed in TYPED:
            got, printed = typed(session.gdb, keys)
            assert got == line, (keys, got, printed)
            for word in listed:
                assert re.search(rf"(^|\s){re.escape(word)}(\s|$)", printed), (keys, printed)
        _, printed = typed(session.gdb, "kp-sim task_stru\t\t")
        assert "task_struct" not in printed, "a type name is not a place"
    finally:
        session.gdb.execute("set editing off")


def test_wording(session):
    """kp-kaslr shows the whole banner, help shows the summary once, kp-check explains an
    errno in kprobe terms."""
    banner = session.guest("cat /proc/version").strip()
    out = session.gdb_cmd("kp-kaslr").strip()
    assert out.endswith(banner), (out, banner)
    helped = session.gdb_cmd("help kp-list")
    summary = helped.splitlines()[0]
    assert helped.count(summary) == 1, helped
    off_boundary = f"inet_accept+{session.mid_instruction('inet_accept'):#x}"
    checked = session.gdb_cmd(f"kp-check {off_boundary}")
    assert "-EILSEQ (no instruction that kprobes can probe starts here): not an " \
           "instruction boundary" in checked, checked
    assert "multibyte" not in checked


def test_quitting_the_pager_is_gdb_quit(session):
    """`q` at gdb's pager ends a long listing the way it ends gdb's own: "Quit", no
    "kp-blacklist: interrupted"."""
    session.stop()
    gdb = session.gdb
    gdb.execute("set height 12")
    gdb.execute("set pagination on")
    try:
        gdb.child.sendline("kp-blacklist")
        gdb.child.expect(r"--Type <RET> for more, q to quit", timeout=60)
        gdb.child.sendline("q")
        gdb.child.expect_exact(Gdb.PROMPT, timeout=60)
        after = gdb.child.before
        assert "interrupted" not in after and "Traceback" not in after, after
        assert "Quit" in after, after
    finally:
        gdb.execute("set pagination off")
        gdb.execute("set height 0")
