"""kp-list on a damaged kprobe_table: bounded, the damage named where it is, the rest listed.

The test corrupts the guest's table with gdb writes while it is stopped and restores it
before the guest runs again.
"""
from __future__ import annotations

import contextlib
import re
import time

LIST = "/sys/kernel/debug/kprobes/list"


def u64(session, address: int) -> int:
    out = session.gdb_cmd(f"x/gx {address:#x}")
    return int(out.split(":")[1].split()[0], 16)


@contextlib.contextmanager
def patched(session, address: int, value: int):
    old = u64(session, address)
    session.gdb_cmd(f"set {{unsigned long}}{address:#x} = {value:#x}")
    try:
        yield old
    finally:
        session.stop()
        session.gdb_cmd(f"set {{unsigned long}}{address:#x} = {old:#x}")
        assert u64(session, address) == old


def heads(session) -> list[int]:
    out = session.gdb_cmd("python t = gdb.lookup_static_symbol('kprobe_table').value(); "
                          "print(' '.join(hex(int(t[i]['first'])) for i in range(t.type.range()[1] + 1)))")
    return [int(x, 16) for x in out.split()]


def timed_list(session) -> str:
    started = time.monotonic()
    out = session.gdb_cmd("kp-list")
    assert time.monotonic() - started < 10, "a damaged list must not make kp-list hang"
    assert "Traceback" not in out and "internal error" not in out
    return out


def lines_outside(debugfs: str, ours: str, bucket_addrs: set[str]) -> None:
    """Every probe of the intact buckets is still listed."""
    for line in debugfs.splitlines():
        if line.split()[0] not in bucket_addrs:
            assert line in ours.splitlines(), line


def test_damage_is_reported_in_place(session):
    debugfs = session.guest(f"cat {LIST}")
    session.stop()
    table = heads(session)
    used = [i for i, first in enumerate(table) if first]
    assert len(used) >= 3
    a, b = used[0], used[1]
    node_a, node_b = table[a], table[b]
    # the probed address of the first probe of bucket a, from its struct kprobe
    probe_addr = int(session.gdb_cmd(f"p/x ((struct kprobe *){node_a:#x})->addr").split("=")[1], 16)
    addr_a = f"{probe_addr:016x}"
    in_a = {addr_a}

    # 1. a cycle: the first node points at itself
    with patched(session, node_a, node_a):
        out = timed_list(session)
        assert re.search(rf"^!! damaged: kprobe_table\[{a}\]: cycle: node {node_a:#x} comes again "
                         r"after 1 entries$", out, re.M), out
        lines_outside(debugfs, out, in_a)

    # 2. a wild pointer
    with patched(session, node_a, 0x1000):
        out = timed_list(session)
        assert re.search(rf"^!! damaged: kprobe_table\[{a}\]: cannot read \d+ bytes at 0x1000", out,
                         re.M), out
        lines_outside(debugfs, out, in_a)

    # 3. a non-canonical head pointer
    with patched(session, session_table_address(session) + 8 * a, 0xdead000000000100):
        out = timed_list(session)
        assert f"!! damaged: kprobe_table[{a}]: non-canonical next pointer 0xdead000000000100" in out
        lines_outside(debugfs, out, in_a)

    # 4. a next pointer into another bucket
    with patched(session, node_a, node_b):
        out = timed_list(session)
        assert re.search(rf"^!! damaged: kprobe_table\[{a}\]: the probe at 0x[0-9a-f]+ hashes to "
                         rf"bucket {b}: a next pointer jumped between buckets$", out, re.M), out

    # restored: the listing is the kernel's again
    ours = session.gdb_cmd("kp-list")
    assert ours == debugfs == session.guest(f"cat {LIST}")


def session_table_address(session) -> int:
    out = session.gdb_cmd("info address kprobe_table")
    return int(re.search(r"at address (0x[0-9a-f]+)", out).group(1), 16)
