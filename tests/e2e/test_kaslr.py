"""A KASLR boot: detected, refused with a clear line, and listed right after relocation."""
from __future__ import annotations

import re

import pytest

from conftest import Session
from qemu import kernels
from qemu.lab import GDBINIT, Gdb, Lab

LIST = "/sys/kernel/debug/kprobes/list"


@pytest.fixture(scope="module")
def kaslr_session(kernel, gdb_binary):
    yield from kaslr_sessions(kernel, gdb_binary)


def kaslr_sessions(kernel: str, gdb_binary: str, anchor: str = "_text"):
    """A module fixture's body: a KASLR boot with gdb attached, stopped after the module.
    `anchor`: a symbol in both /proc/kallsyms and System.map (arm64's kallsyms has no
    _text: _stext there)."""
    config = kernels.fetch(kernel).config
    if "CONFIG_RANDOMIZE_BASE=y" not in config.read_text():
        pytest.skip(f"{kernel} is built without KASLR (CONFIG_RANDOMIZE_BASE)")
    # KASLR may pick the link address itself (slide 0; seen once in a fresh-clone run):
    # then there is nothing to detect, so boot again
    for _ in range(3):
        lab = Lab(kernel, kaslr=True)
        lab.start()
        if _address(anchor, lab.guest.run(f"grep ' {anchor}$' /proc/kallsyms")) != \
                _address(anchor, lab.files.system_map.read_text()):
            break
        lab.stop()
    else:
        pytest.fail("three KASLR boots in a row ran at the link address")
    try:
        yield Session(lab, lab.gdb(gdb_binary=gdb_binary))
    finally:                       # also when attaching gdb failed
        lab.stop()


def _address(symbol: str, symbols: str) -> int:
    """The address of `symbol` in /proc/kallsyms or System.map text."""
    return int(re.search(rf"^([0-9a-f]+) \w {symbol}$", symbols, re.M).group(1), 16)


def _text(symbols: str) -> int:
    """The address of _text in /proc/kallsyms or System.map text."""
    return _address("_text", symbols)


def test_kaslr_is_detected_then_relocated(kaslr_session):
    session = kaslr_session
    assert "nokaslr" not in session.guest("cat /proc/cmdline")
    out = session.gdb_cmd("kp-list").strip()
    slide = re.fullmatch(r"the kernel runs with KASLR: it is loaded (0x[0-9a-f]+) bytes away from "
                         r"the vmlinux's addresses; relocate the symbols with `kp-kaslr "
                         r"--relocate` \(or boot with nokaslr\)", out)
    assert slide, out
    for command in ("kp-show inet_accept", "kp-list -v", "kp-blacklist"):
        assert session.gdb_cmd(command).strip() == out, "no command prints unslid addresses"
    assert session.gdb_cmd("kp-kaslr --relocate").strip() == \
        f"kp-kaslr: symbols relocated by {slide.group(1)}"
    debugfs, ours = session.list_pair()
    assert ours == debugfs
    assert "kp-kaslr: the symbol file matches the running kernel (relocated by" in \
        session.gdb_cmd("kp-kaslr")


def test_wrong_vmlinux_is_refused(session, gdb_binary):
    other = next(name for name in kernels.LAB_KERNELS if name != session.lab.kernel_name)
    wrong = kernels.fetch(other).vmlinux
    session.stop()
    session.gdb.execute("detach")
    session.running = True
    gdb = Gdb(["-ex", f"file {wrong}", "-ex", f"source {GDBINIT}",
               "-ex", f"target remote 127.0.0.1:{session.lab.gdb_port}"], gdb_binary=gdb_binary)
    try:
        out = gdb.execute("kp-list").strip()
    finally:
        gdb.close()
    assert re.fullmatch(r"the symbol file does not match the running kernel: its linux_banner "
                        r"\('Linux version .*'\) is nowhere in kernel memory; load the vmlinux of "
                        r"the running kernel", out), out
    session.gdb.execute(f"target remote 127.0.0.1:{session.lab.gdb_port}")
    session.running = False
    assert session.gdb_cmd("kp-list") == session.guest(f"cat {LIST}")
