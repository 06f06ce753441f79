"""kp-check and kp-blacklist agree with the guest kernel itself."""
from __future__ import annotations

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
    return black[:8] + duplicates + ordinary + mid + odd


def test_verdicts_match_kprobe_events(session):
    chosen = places(session)
    assert len(chosen) >= 30
    out = session.gdb_cmd("kp-check " + " ".join(chosen))
    verdicts = {}
    for line in out.splitlines():
        if line.startswith("  "):
            continue
        spec = line.split(" ", 1)[0].rstrip(":")
        accepted = line.endswith(": accepted")
        error = None if accepted else re.search(r"rejected: -E\w+ \(([^)]*)\)", line).group(1)
        verdicts[spec] = error
    assert set(verdicts) == set(chosen), out
    mismatches = []
    for index, spec in enumerate(chosen):
        result = session.guest(f"echo 'p:kprobes/kpc_{index} {spec}' >> {EVENTS}", check=False)
        kernel_error = None if not result.strip() else result.strip().split("write error: ")[-1]
        if kernel_error is None:
            session.guest(f"echo '-:kprobes/kpc_{index}' >> {EVENTS}")
        if kernel_error != verdicts[spec]:
            mismatches.append(f"{spec}: kp-check {verdicts[spec]!r}, kernel {kernel_error!r}")
    assert not mismatches, "\n".join(mismatches)
    kinds = set(verdicts.values())
    assert None in kinds and "Invalid argument" in kinds
    assert "Invalid or incomplete multibyte or wide character" in kinds


def test_says_how_it_would_be_built(session):
    listing = session.guest("cat /sys/kernel/debug/kprobes/list")
    inner = re.search(r"  k  (inet_accept\+0x[0-9a-f]+)    \[OPTIMIZED\]", listing).group(1)
    out = session.gdb_cmd(f"kp-check filp_close {inner}")
    assert "ftrace-based: this is the function's fentry call site" in out
    assert "a probe is already registered here" in out


def test_bad_input(session):
    for command, expected in [
        ("kp-check", "kp-check: the following arguments are required: place; see `help kp-check`"),
        ("kp-check inet_accept+0xzz", "bad offset `0xzz` in `inet_accept+0xzz`: use a decimal or "
                                      "0x-hex number, e.g. inet_accept+20 or inet_accept+0x14"),
        ("kp-blacklist a b", "kp-blacklist: unrecognized arguments: b; see `help kp-blacklist`"),
    ]:
        assert session.gdb_cmd(command).strip() == expected
