"""kp-check and kp-blacklist agree with the guest kernel itself."""
from __future__ import annotations

import errno
import json
import os
import re

EVENTS = "/sys/kernel/tracing/kprobe_events"


def test_blacklist_matches_debugfs(session):
    debugfs = session.guest("cat /sys/kernel/debug/kprobes/blacklist")
    ours = session.gdb_cmd("kp-blacklist")
    assert ours == debugfs
    assert len(debugfs.splitlines()) > 50
    some = debugfs.splitlines()[0].split("\t")[1]
    assert session.gdb_cmd(f"kp-blacklist {some}").splitlines()[0].endswith(some)


def places(session) -> list[str]:
    blacklist = session.guest("cat /sys/kernel/debug/kprobes/blacklist")
    black = []
    for line in blacklist.splitlines():
        name = line.split("\t")[1]
        if " " not in name and name not in black:
            black.append(name)
    duplicates = session.guest("grep ' [tT] ' /proc/kallsyms | cut -d' ' -f3 | sort | uniq -d | "
                               "head -2").split()
    ordinary = [f"{f}{o}" for f in ("vfs_read", "vfs_write", "ksys_read", "do_sys_openat2",
                                    "filp_close", "inet_accept")
                for o in ("", "+5", "+7", "+0x10")]
    mid = ["vfs_read+1", "vfs_write+2", "do_sys_openat2+3", "ksys_read+1", "filp_close+2",
           f"inet_accept+{session.mid_instruction('inet_accept')}"]
    odd = ["no_such_function_kp", "jiffies", "init_task", "inet_accept+9999",
           "kp_lab_kprobe:kp_lab_target", "kp_lab_kprobe:kp_lab_target+1"]
    # kprobe_events' own syntax: kstrtol offsets, %return, addresses, notrace text
    vfs_read = session.guest("grep ' vfs_read$' /proc/kallsyms").split()[0]
    syntax = ["inet_accept+-1", "inet_accept+0xzz", "++", "vfs_read-4", "vfs_read%return",
              "vfs_read+5%return", "vfs_read%bogus", "vfs_read+010", "vfs_read+0x100000000",
              f"0x{vfs_read}", "_stext+5", "nosuchmod:foo"]
    return black[:8] + duplicates + ordinary + mid + odd + syntax


def test_verdicts_match_kprobe_events(session):
    """kp-check's kprobe_events answer equals what the guest's kprobe_events says (the
    generated oracle, test_oracle.py, covers both interfaces on hundreds of places)."""
    chosen = places(session)
    assert len(chosen) >= 40
    document = json.loads(session.gdb_cmd("kp-check --json " + " ".join(chosen)))
    verdicts = {entry["spec"]: entry["kprobe_events"] for entry in document["places"]}
    assert set(verdicts) == set(chosen)
    mismatches = []
    for index, spec in enumerate(chosen):
        result = session.guest(f"echo 'p:kprobes/kpc_{index} {spec}' >> {EVENTS}", check=False)
        kernel_error = None if not result.strip() else result.strip().split("write error: ")[-1]
        if kernel_error is None:
            session.guest(f"echo '-:kprobes/kpc_{index}' >> {EVENTS}")
        ours = verdicts[spec]
        ours_text = None if ours["accepted"] else os.strerror(getattr(errno, ours["errno"]))
        if kernel_error != ours_text:
            mismatches.append(f"{spec}: kp-check {ours_text!r} ({ours['reason']}), "
                              f"kernel {kernel_error!r}")
    assert not mismatches, "\n".join(mismatches)
    kinds = {entry["errno"] for entry in verdicts.values()}
    assert None in kinds and "EINVAL" in kinds and "EILSEQ" in kinds


def test_says_how_it_would_be_built(session):
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    inner = re.search(r"  k  (inet_accept\+0x[0-9a-f]+)    \[OPTIMIZED\]", listing).group(1)
    out = session.gdb_cmd(f"kp-check filp_close {inner}")
    assert "ftrace-based: this is the function's fentry call site" in out
    assert "a probe is already registered here" in out


def test_bad_input(session):
    for command, expected in [
        ("kp-check", "kp-check: the following arguments are required: place; see `help kp-check`"),
        ("kp-blacklist a b", "kp-blacklist: unrecognized arguments: b; see `help kp-blacklist`"),
    ]:
        assert session.gdb_cmd(command).strip() == expected
