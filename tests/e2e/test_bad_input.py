"""The bad-input corpus: every kp-* command, every failure path, one exact line each —
never a traceback — and gdb keeps working afterwards."""
from __future__ import annotations

import re

import pytest

from qemu.lab import GDBINIT, Gdb

SEE = "; see `help {}`"
NO_SYMBOL = ("no symbol `{0}` in the kernel; check the spelling (tab completes symbols) or name "
             "a module symbol as module:{0}")
BAD_PLACE = ("bad place `{}`: expected symbol, symbol+offset, module:symbol+offset or a 0x "
             "address")
BAD_OFFSET = ("bad offset `{}` in `{}`: use a decimal or 0x-hex number, e.g. inet_accept+20 or "
              "inet_accept+0x14")
COMMANDS = ["kp-list", "kp-show inet_accept", "kp-sim inet_accept", "kp-check inet_accept",
            "kp-blacklist", "kp-modules", "kp-kaslr", "kp-hooks", "kp-hooks vfs_read"]

# (command, the exact line; "re:" marks a regular expression for kernel-dependent numbers)
ATTACHED = [
    ("kp-list --bogus", "kp-list: unrecognized arguments: --bogus" + SEE.format("kp-list")),
    ("kp-list -t x", "kp-list: argument -t/--type: invalid choice: 'x' (choose from 'k', 'r')"
     + SEE.format("kp-list")),
    ("kp-list -t", "kp-list: argument -t/--type: expected one argument" + SEE.format("kp-list")),
    ("kp-list a b", "kp-list: unrecognized arguments: b" + SEE.format("kp-list")),
    ("kp-hooks a b", "kp-hooks: unrecognized arguments: b" + SEE.format("kp-hooks")),
    ("kp-hooks --bogus", "kp-hooks: unrecognized arguments: --bogus" + SEE.format("kp-hooks")),
    ("kp-hooks nosuch_function", NO_SYMBOL.format("nosuch_function")),
    ("kp-hooks 0xdead000000000000", "0xdead000000000000 is in no kernel or module function; "
     "kp-hooks takes a function, symbol+offset, or an address inside a function"),
    ("kp-hooks inet_accept+1", "re:inet_accept\\+0x1 is not an instruction boundary: it falls "
     "inside `.*` at inet_accept\\+0x[04] \\([45] bytes\\); register_kprobe\\(\\) refuses it with "
     "-EILSEQ"),
    ("kp-list -m", "kp-list: argument -m/--module: expected one argument" + SEE.format("kp-list")),
    ("kp-list --verbose=yes", "kp-list: argument -v/--verbose: ignored explicit argument 'yes'"
     + SEE.format("kp-list")),
    ("kp-list -n -n -x", "kp-list: unrecognized arguments: -x" + SEE.format("kp-list")),
    ("kp-list --json -n", 'kp-list: --json always numbers the probes (their "index" is the N of '
                          'kp-show #N); drop -n'),
    ("kp-list --json --json=1", "kp-list: argument --json: ignored explicit argument '1'"
     + SEE.format("kp-list")),
    ("kp-show", "kp-show: the following arguments are required: place" + SEE.format("kp-show")),
    ("kp-show --json", "kp-show: the following arguments are required: place"
     + SEE.format("kp-show")),
    ("kp-show nosuch_function", NO_SYMBOL.format("nosuch_function")),
    ("kp-show inet_accept+", BAD_PLACE.format("inet_accept+")),
    ("kp-show inet_accept+-4", "negative offset in `inet_accept+-4`: offsets count forward from "
                               "the symbol"),
    ("kp-show inet_accept-4", "bad place `inet_accept-4`: offsets are added (symbol+offset), "
                              "never subtracted"),
    ("kp-show inet_accept+0x", BAD_OFFSET.format("0x", "inet_accept+0x")),
    ("kp-show inet_accept+1z", BAD_OFFSET.format("1z", "inet_accept+1z")),
    ("kp-show inet_accept+99999999999999999999",
     "re:offset 0x56bc75e2d630fffff is beyond the end of inet_accept \\(size 0x[0-9a-f]+\\)"),
    ("kp-show 0xffffffffffffffffffff", "address `0xffffffffffffffffffff` is wider than 64 bits"),
    ("kp-show 0x1234", "no kprobe is registered at 0x1234; kp-list shows the registered ones"),
    ("kp-show $$$", BAD_PLACE.format("$$$")),
    ("kp-show ;;", BAD_PLACE.format(";;")),
    ("kp-show nosuchmod:foo", "no module `nosuchmod` is loaded in the target"),
    ("kp-show kp_lab_kprobe:nosuch", "no symbol `nosuch` in module kp_lab_kprobe"),
    ("kp-show a b", "kp-show: unrecognized arguments: b" + SEE.format("kp-show")),
    ("kp-show vfs_read+0x1", "re:no kprobe is registered at 0x[0-9a-f]+ \\(vfs_read\\+0x1\\); "
                             "kp-list shows the registered ones"),
    ("kp-sim", "kp-sim: the following arguments are required: place" + SEE.format("kp-sim")),
    ("kp-sim nosuch_function", NO_SYMBOL.format("nosuch_function")),
    ("kp-sim inet_accept+1", "re:inet_accept\\+0x1 is not an instruction boundary: it falls "
     "inside `.*` at inet_accept\\+0x[04] \\([45] bytes\\); register_kprobe\\(\\) refuses it with "
     "-EILSEQ"),
    ("kp-sim inet_accept --count 0", "kp-sim: argument -c/--count: must be between 1 and 100000, "
                                     "not 0" + SEE.format("kp-sim")),
    ("kp-sim inet_accept --count -5", "kp-sim: argument -c/--count: must be between 1 and "
                                      "100000, not -5" + SEE.format("kp-sim")),
    ("kp-sim inet_accept --count abc", "kp-sim: argument -c/--count: not a number: 'abc'"
     + SEE.format("kp-sim")),
    ("kp-sim inet_accept --count 99999999", "kp-sim: argument -c/--count: must be between 1 and "
                                            "100000, not 99999999" + SEE.format("kp-sim")),
    ("kp-sim inet_accept --regs ip,xyz", "unknown register `xyz`; use pt_regs names: ip, ax, bx, "
     "cx, dx, si, di, bp, sp, r8, r9, r10, r11, r12, r13, r14, r15, flags"),
    ("kp-sim inet_accept --regs", "kp-sim: argument --regs: expected one argument"
     + SEE.format("kp-sim")),
    ("kp-sim --ret inet_accept+0x14", "kp-sim --ret takes a function (a return probe is always "
                                      "at the function's entry)"),
    ("kp-sim --ret nosuch", NO_SYMBOL.format("nosuch")),
    ("kp-sim inet_accept+0xfffff", "re:offset 0xfffff is beyond the end of inet_accept "
                                   "\\(size 0x[0-9a-f]+\\)"),
    ("kp-sim 0xdead000000000000", "0xdead000000000000 is in no known function; cannot decode "
                                  "from a function start"),
    ("kp-check", "kp-check: the following arguments are required: place" + SEE.format("kp-check")),
    ("kp-check --bogus inet_accept", "kp-check: unrecognized arguments: --bogus"
     + SEE.format("kp-check")),
    ("kp-blacklist a b", "kp-blacklist: unrecognized arguments: b" + SEE.format("kp-blacklist")),
    ("kp-blacklist --bogus", "kp-blacklist: unrecognized arguments: --bogus"
     + SEE.format("kp-blacklist")),
    ("kp-modules --load /nonexistent", "kp-modules: no directory /nonexistent; --load takes a "
                                       "directory of .ko files"),
    ("kp-modules nosuch_module", "not loaded in the target: nosuch_module"),
    ("kp-modules --bogus", "kp-modules: unrecognized arguments: --bogus"
     + SEE.format("kp-modules")),
    ("kp-kaslr --bogus", "kp-kaslr: unrecognized arguments: --bogus" + SEE.format("kp-kaslr")),
    ("kp-kaslr extra", "kp-kaslr: unrecognized arguments: extra" + SEE.format("kp-kaslr")),
]


def assert_line(out: str, expected: str) -> None:
    out = out.strip()
    assert "Traceback" not in out and "internal error" not in out, out
    assert len(out.splitlines()) == 1, out
    if expected.startswith("re:"):
        assert re.fullmatch(expected[3:], out), out
    else:
        assert out == expected


@pytest.mark.parametrize("command, expected", ATTACHED, ids=[c for c, _ in ATTACHED])
def test_attached(session, command, expected):
    assert_line(session.gdb_cmd(command), expected)
    assert "inet_accept+0x" in session.gdb_cmd("kp-list"), "gdb still works"


def test_index_out_of_range(session):
    count = len(session.gdb_cmd("kp-list -n").splitlines())
    assert_line(session.gdb_cmd("kp-show #0"),
                f"no line 0 in the last kp-list (it had {count} lines)")
    assert_line(session.gdb_cmd(f"kp-show {count + 1}"),
                f"no line {count + 1} in the last kp-list (it had {count} lines)")


@pytest.fixture(scope="module")
def detached_gdbs(session, gdb_binary):
    """gdb with no symbol file, and gdb with the vmlinux but no target."""
    bare = Gdb(["-ex", f"source {GDBINIT}"], gdb_binary=gdb_binary)
    unattached = session.lab.gdb(gdb_binary=gdb_binary, attach=False)
    yield bare, unattached
    bare.close()
    unattached.close()


@pytest.mark.parametrize("command", COMMANDS)
def test_no_symbol_file(detached_gdbs, command):
    bare, _ = detached_gdbs
    assert_line(bare.execute(command), "no kernel symbol file loaded; load the DWARF vmlinux "
                                       "first: file /path/to/vmlinux")


@pytest.mark.parametrize("command", COMMANDS)
def test_not_attached(detached_gdbs, command):
    _, unattached = detached_gdbs
    assert_line(unattached.execute(command), "not attached to a kernel; connect to it first: "
                                             "target remote 127.0.0.1:PORT (QEMU's gdbstub)")


@pytest.mark.parametrize("command", COMMANDS)
def test_target_running(session, command):
    session.stop()
    session.gdb.execute("continue &")
    try:
        assert_line(session.gdb.execute(command),
                    "the target is running; interrupt it first (Ctrl-C or `interrupt`)")
    finally:
        session.gdb.execute("interrupt")
        session.gdb.wait_for_stop()


@pytest.mark.e2e
def test_target_dies_mid_command(kernel, gdb_binary):
    """QEMU goes away while kp-sim waits for a hit: one line, gdb lives on, nothing left."""
    from qemu.lab import Lab
    lab = Lab(kernel)
    lab.start()
    try:
        gdb = lab.gdb(gdb_binary=gdb_binary)
        gdb.child.sendline("kp-sim vfs_fsync")
        gdb.child.expect_exact("waiting for a hit")
        lab.qemu.kill()
        out = gdb.wait_prompt(timeout=60).strip().splitlines()
        assert out and "Traceback" not in "\n".join(out), out
        assert re.fullmatch(r"kp-sim: the target went away \(.*\); reconnect with target "
                            r"remote, or open a dump with core-file", out[-1]), out
        assert_line(gdb.execute("kp-list"), "not attached to a kernel; connect to it first: "
                                            "target remote 127.0.0.1:PORT (QEMU's gdbstub)")
        assert gdb.execute("maint info breakpoints").strip().startswith("No breakpoints")
    finally:
        lab.stop()


NON_STOP_REFUSED = ("not attached to a kernel, and non-stop mode is on: QEMU's gdbstub and "
                    "kgdb support only all-stop; set non-stop off, then target remote ...")


def test_non_stop_mode(session, gdb_binary):
    """QEMU's gdbstub refuses non-stop: the attach fails and every command says why."""
    session.stop()
    session.gdb.execute("detach")               # the gdbstub takes one client at a time
    args = session.lab.gdb_args(attach=False)
    gdb = Gdb(["-iex", "set non-stop on", *args], gdb_binary=gdb_binary)
    try:
        out = gdb.execute(f"target remote 127.0.0.1:{session.lab.gdb_port}")
        assert "does not support non-stop" in out, out
        for command in COMMANDS:
            assert_line(gdb.execute(command), NON_STOP_REFUSED)
        gdb.execute("set non-stop off")
        gdb.execute(f"target remote 127.0.0.1:{session.lab.gdb_port}")
        assert "inet_accept" in gdb.execute("kp-list")
        gdb.execute("detach")
    finally:
        gdb.close()
        session.gdb.execute(f"target remote 127.0.0.1:{session.lab.gdb_port}")
