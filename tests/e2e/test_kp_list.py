"""kp-list against the guest's own /sys/kernel/debug/kprobes/list, on each lab kernel."""
from __future__ import annotations

import re

EVENTS = "/sys/kernel/tracing/kprobe_events"


def assert_same(session):
    debugfs, ours = session.list_pair()
    assert ours == debugfs, f"kp-list differs from debugfs:\n--- debugfs\n{debugfs}--- kp-list\n{ours}"
    return debugfs


def test_default_scenario_matches_debugfs(session):
    listing = assert_same(session)
    lines = listing.splitlines()
    # the default scenario covers every shape report_probe() prints
    assert any("  r  " in line for line in lines), "a return probe"
    assert any(line.endswith("[OPTIMIZED]") and "inet_accept+0x" in line for line in lines)
    assert any(line.endswith("[FTRACE]") for line in lines)
    assert any("[DISABLED]" in line for line in lines)
    addresses = [line.split()[0] for line in lines]
    assert any(addresses.count(a) >= 2 for a in addresses), "an aggregate (several probes, one address)"
    assert sum("inet_csk_accept+0x" in line for line in lines) == 3, "the lab modules' probes"


def test_verbose_names_handlers_and_owners(session):
    out = session.gdb_cmd("kp-list -v")
    assert "pre_handler: handler_pre [kp_lab_kprobe]" in out
    assert "post_handler: handler_post [kp_lab_kprobe]" in out
    assert "owner: module kp_lab_kprobe" in out
    assert "handler: ret_handler [kp_lab_kretprobe]" in out
    assert "entry_handler: entry_handler [kp_lab_kretprobe]" in out
    # the module says which maxactive it registered
    dmesg = session.guest("dmesg | grep 'kp_lab_kretprobe: planted'")
    maxactive = re.search(r"maxactive=(\d+)", dmesg).group(1)
    kret = [block for block in out.split("\n") if "ret_handler [kp_lab_kretprobe]" in block]
    assert f"maxactive: {maxactive}" in kret[0]
    # every kprobe_events line is reported as its trace event
    events = session.guest(f"cat {EVENTS}")
    for line in events.splitlines():
        name = line.split()[0].split(":", 1)[1]
        assert f"owner: trace event {name}  " in out, name
    # -v keeps the debugfs lines: dropping the detail lines gives plain kp-list
    plain = "".join(line + "\n" for line in out.splitlines() if not line.startswith("    "))
    assert plain == session.gdb_cmd("kp-list")


def test_exact_reads_of_parts_match_debugfs(session):
    # kgdb over a serial line: only the fields a row uses, read apart (memory.read_parts);
    # -v reads the rest of each struct kprobe, and its handlers and owners stay the same
    verbose = session.gdb_cmd("kp-list -v")
    session.gdb_cmd("set kp-read-block 0")
    try:
        session.gdb_cmd("maintenance flush dcache")
        assert_same(session)
        assert session.gdb_cmd("kp-list -v") == verbose
        assert "exact reads" in session.gdb_cmd("show kp-read-block")
    finally:
        session.gdb_cmd("set kp-read-block auto")


def test_filters(session):
    out = session.gdb_cmd("kp-list -t r")
    assert out and all("  r  " in line for line in out.splitlines())
    out = session.gdb_cmd("kp-list inet_")
    assert out and all("inet_" in line for line in out.splitlines())
    out = session.gdb_cmd("kp-list -m kp_lab_kprobe")
    assert len(out.splitlines()) == 2 and all("inet_csk_accept+0x" in x for x in out.splitlines())


def test_matches_after_runtime_changes(session):
    session.guest(f"echo 'p:kprobes/kp_new vfs_readlink' >> {EVENTS}")
    session.guest("echo 1 > /sys/kernel/tracing/events/kprobes/kp_new/enable")
    assert "vfs_readlink+0x" in assert_same(session)

    session.guest(f"echo '-:kprobes/kp_disabled' >> {EVENTS}")
    assert "vfs_fsync" not in assert_same(session)

    # a probe in module text: listed with the module's name, then [GONE] when it goes
    session.guest(f"echo 'p:kprobes/kp_modfunc kp_lab_kprobe:kp_lab_target' >> {EVENTS}")
    listing = assert_same(session)
    assert re.search(r"kp_lab_target\+0x[04]  kp_lab_kprobe ", listing)

    session.guest("rmmod kp_lab_kprobe")
    listing = assert_same(session)
    assert "[GONE]" in listing
    assert sum("inet_csk_accept+0x" in line for line in listing.splitlines()) == 1, \
        "only the kretprobe is left on inet_csk_accept"


def test_bad_input_is_one_line(session):
    for command, expected in [
        ("kp-list --bogus", "kp-list: unrecognized arguments: --bogus; see `help kp-list`"),
        ("kp-list -t x", "kp-list: argument -t/--type: invalid choice: 'x' (choose from 'k', 'r'); "
                         "see `help kp-list`"),
        ("kp-list a b", "kp-list: unrecognized arguments: b; see `help kp-list`"),
        ("kp-list -m", "kp-list: argument -m/--module: expected one argument; see `help kp-list`"),
    ]:
        out = session.gdb_cmd(command).strip()
        assert "Traceback" not in out and len(out.splitlines()) == 1, out
        if expected:
            assert out == expected
    assert "kp-list" in session.gdb_cmd("help kp-list")


def test_target_running_is_refused(session):
    session.stop()
    session.gdb.execute("continue &")
    out = session.gdb.execute("kp-list").strip()
    assert out == "the target is running; interrupt it first (Ctrl-C or `interrupt`)"
    session.gdb.execute("interrupt")
    session.gdb.wait_for_stop()
    assert_same(session)
