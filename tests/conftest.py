"""Test harness: lab kernels booted in QEMU with gdb attached (e2e), and a gdb stub (unit).

`--kernels 6.1,6.12` picks the lab kernels the e2e tests run on (each test runs on each);
`--gdb PATH` picks the gdb binary.
"""
from __future__ import annotations

import pathlib
import re
import sys
import types

import pytest

from qemu import kernels
from qemu.lab import Attached, Lab

LIST = "/sys/kernel/debug/kprobes/list"


def pytest_addoption(parser):
    # the x86-64 kernels by default: arm64 ones run only the files that support them (Makefile
    # ARM64_TESTS)
    parser.addoption("--kernels", default=",".join(
                         k for k in kernels.LAB_KERNELS if kernels.arch_of(k) == "amd64"),
                     help="comma-separated lab kernels for the e2e tests")
    parser.addoption("--gdb", default="gdb", help="gdb binary for the e2e tests")
    parser.addoption("--flavours", default="",
                     help="Debian SERIES/FLAVOUR kernels (e.g. 6.1/rt-amd64) that "
                          "test_own_kernel.py also boots by path")


def pytest_generate_tests(metafunc):
    if "kernel" in metafunc.fixturenames:
        names = [k for k in metafunc.config.getoption("--kernels").split(",") if k]
        metafunc.parametrize("kernel", names, scope="module")


@pytest.fixture(scope="session")
def gdb_binary(request) -> str:
    return request.config.getoption("--gdb")


class Session(Attached):
    """A booted lab and one attached gdb, with helpers to compare the two views."""

    def stable_list(self) -> str:
        """The debugfs list once it no longer changes (the optimizer works asynchronously)."""
        self.resume()
        return self.lab.guest.settled(f"cat {LIST}")

    def mid_instruction(self, function: str, at_least: int = 0x10) -> int:
        """An offset inside `function` that is not an instruction boundary: one byte into the
        first instruction of 2+ bytes at or after `at_least`, from the vmlinux file's code
        (live text has probes in it). Derived, not written down: code moves between builds."""
        offsets = self.file_offsets(function, 24)
        for start, following in zip(offsets, offsets[1:]):
            if start >= at_least and following - start >= 2:
                return start + 1
        raise AssertionError(f"no instruction of 2+ bytes in {function}: offsets {offsets}")

    def file_offsets(self, function: str, count: int) -> list[int]:
        """The offsets of the first `count` instructions of `function` in the vmlinux file
        (live text has probes in it)."""
        self.gdb_cmd("set trust-readonly-sections on")
        try:
            listing = self.gdb_cmd(f"x/{count}i {function}")
        finally:
            self.gdb_cmd("set trust-readonly-sections off")
        return [int(m) for m in re.findall(rf"<{re.escape(function)}\+(\d+)>:", listing)]

    def list_pair(self) -> tuple[str, str]:
        """(debugfs list, kp-list) taken at the same stop: the list before and after the
        stop must agree, otherwise try again."""
        for _ in range(5):
            before = self.stable_list()
            ours = self.gdb_cmd("kp-list")
            after = self.guest(f"cat {LIST}")
            if before == after:
                return before, ours
        raise AssertionError("the probe list changed around every stop")


@pytest.fixture(scope="module")
def session(kernel, gdb_binary):
    """One lab per kernel and test module; tests in a module share it, in order."""
    lab = Lab(kernel)
    lab.start()
    try:
        yield Session(lab, lab.gdb(gdb_binary=gdb_binary))
    finally:                           # also when attaching gdb failed: no guest left running
        lab.stop()


@pytest.fixture
def fake_gdb(monkeypatch, request):
    """A stand-in `gdb` module for pure-logic unit tests of gdb_kprobe modules."""
    registry = types.SimpleNamespace(connect=lambda *_: None)
    fake = types.ModuleType("gdb")
    fake.events = types.SimpleNamespace(**{n: registry for n in (
        "cont", "stop", "memory_changed", "exited", "new_objfile", "clear_objfiles",
        "inferior_call", "before_prompt")})
    fake.error = type("error", (RuntimeError,), {})
    fake.MemoryError = type("MemoryError", (fake.error,), {})
    fake.GdbError = type("GdbError", (Exception,), {})
    fake.execute = lambda *a, **k: ""
    fake.Breakpoint = type("Breakpoint", (), {"__init__": lambda self, *a, **k: None})
    # importing gdb_kprobe registers its commands and settings: let that be a no-op
    fake.Command = type("Command", (), {"__init__": lambda self, *a, **k: None})
    fake.Parameter = type("Parameter", (), {"__init__": lambda self, *a, **k: None})
    for index, name in enumerate(("COMMAND_DATA", "COMMAND_USER", "COMMAND_MAINTENANCE",
                                  "COMMAND_SUPPORT", "COMMAND_STACK", "PARAM_BOOLEAN", "PARAM_ENUM",
                                  "PARAM_STRING",
                                  "COMPLETE_NONE", "COMPLETE_SYMBOL", "COMPLETE_FILENAME")):
        setattr(fake, name, index)
    monkeypatch.setitem(sys.modules, "gdb", fake)
    # gdb's own Python packages the plugin imports at load time
    decorator = types.ModuleType("gdb.FrameDecorator")
    decorator.FrameDecorator = type("FrameDecorator", (), {"__init__": lambda self, base: None})
    unwinder = types.ModuleType("gdb.unwinder")
    unwinder.Unwinder = type("Unwinder", (), {"__init__": lambda self, name: None})
    unwinder.register_unwinder = lambda *a, **k: None
    fake.unwinder = unwinder
    fake.frame_filters = {}
    monkeypatch.setitem(sys.modules, "gdb.FrameDecorator", decorator)
    monkeypatch.setitem(sys.modules, "gdb.unwinder", unwinder)
    isolate_plugin_modules(request)
    return fake


def isolate_plugin_modules(request) -> None:
    """Import gdb_kprobe afresh in this test (against its fake `gdb`), and afterwards put
    sys.modules back exactly as it was: the test's own imports are dropped, not left to mix
    with the restored ones (a fresh pagetables bound to a fresh elfcore beside the old
    elfcore made `pytest.raises(elfcore.X)` miss an elfcore.X in a later test)."""
    saved = {name: module for name, module in sys.modules.items()
             if name.startswith("gdb_kprobe")}
    for name in saved:
        del sys.modules[name]

    def restore() -> None:
        for name in [m for m in sys.modules if m.startswith("gdb_kprobe")]:
            del sys.modules[name]
        sys.modules.update(saved)
    request.addfinalizer(restore)


E2E_DIR = pathlib.Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e runs gdb, QEMU or both: marked e2e (`-m "not e2e"` and
    tests/unit select the same tests)."""
    for item in items:
        if E2E_DIR in pathlib.Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
