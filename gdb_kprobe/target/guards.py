"""Guards a command runs before touching the kernel: a symbol file, an attached target,
every CPU stopped (pwndbg's OnlyWhenRunning and friends)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import gdb

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.target import context, dump

__all__ = ["require_symbols", "require_stopped_target", "require_arch_seam", "arch_seam_fits",
           "select_seam", "target_architecture", "kernel_view"]


def require_symbols() -> None:
    if gdb.current_progspace().filename is None:
        raise KpError("no kernel symbol file loaded; load the DWARF vmlinux first: "
                      "file /path/to/vmlinux")


def require_stopped_target() -> None:
    """Attached (live or core) and not running: in all-stop mode the selected thread tells;
    in non-stop mode every CPU must be stopped (kernel lists change under a running one)."""
    non_stop = context.non_stop()
    running = KpError("a CPU of the target is running (non-stop mode); stop them all first: "
                      "interrupt -a" if non_stop else
                      "the target is running; interrupt it first (Ctrl-C or `interrupt`)")
    inferior = gdb.selected_inferior()
    thread = gdb.selected_thread()      # local state: asks the remote nothing
    if inferior.pid == 0 or thread is None:
        if non_stop:
            raise KpError("not attached to a kernel, and non-stop mode is on: QEMU's gdbstub and "
                          "kgdb support only all-stop; set non-stop off, then target remote ...")
        raise KpError("not attached to a kernel; connect to it first: "
                      "target remote 127.0.0.1:PORT (QEMU's gdbstub)")
    if thread.is_running():
        raise running
    try:
        threads = inferior.threads()    # refreshes from the remote: refused while running
    except gdb.error as exc:
        if "running" in str(exc):
            raise running from None
        raise KpError(f"cannot talk to the target: {exc}") from None
    if any(t.is_running() for t in threads):
        raise running
    dump.check()        # a dump without virtual addresses: readable, or one line saying why


def target_architecture() -> str:
    """gdb's name of the target's architecture (i386:x86-64, aarch64): the symbol file's
    before attaching, the target's after."""
    return gdb.selected_inferior().architecture().name()


def select_seam(architecture: str | None = None):
    """Make the target's architecture's module the arch seam in use (arch.select) and
    return it (None: nothing written for it). The one place a command (base.py: every run)
    or the unwinder (per frame: one comparison once selected) picks it. Without a symbol
    file gdb's architecture is a default (i386), not the kernel's: the selection stays."""
    if architecture is None:
        if gdb.current_progspace().filename is None:
            return arch.selected()
        architecture = target_architecture()
    return arch.select(architecture)


def arch_seam_fits(architecture: str | None = None, command: str = "bt") -> bool:
    """Select the target's seam; does it meet what `command` needs ("bt": the unwinder and
    the frame filter)?"""
    return arch.select_covering(architecture or target_architecture(), command)


def require_arch_seam(command: str) -> None:
    """Select the target's seam, and refuse in one line a command whose answer rests on a
    part of it not written for the target's architecture (an x86 answer about an arm64
    kernel would be wrong). Without a symbol file the command's own guards say what to
    load."""
    if gdb.current_progspace().filename is None:
        return
    architecture = target_architecture()
    arch.select(architecture)
    if not arch.covers(architecture, command):
        raise KpError(f"{command}: not available on {architecture} yet: "
                      f"{arch.unwritten(architecture)}; {_working(architecture)} work there")


def _working(architecture: str) -> str:
    """The commands that do work on `architecture`, in words."""
    seam = arch.of_architecture(architecture)
    covered = [name for name in getattr(seam, "COMMANDS", ()) if name.startswith("kp-")]
    names = ["kp-list" if "kp-list" in covered else "kp-list (without -v)", "kp-modules",
             "kp-blacklist", *(name for name in covered if name != "kp-list")]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _in_user_mode(seam) -> bool:
    return seam.in_user_mode(int(gdb.newest_frame().read_register(seam.MODE_REGISTER)))


def _cpu_in_user_mode(seam) -> bool:
    """Is the selected CPU stopped in user mode? False when that cannot be told (running,
    not attached): the command's own guards then say what is wrong."""
    try:
        return _in_user_mode(seam)
    except gdb.error:
        return False


@contextlib.contextmanager
def kernel_view() -> Iterator[None]:
    """For one command: read the kernel through a CPU that can see it. QEMU 7.2's arm64
    gdbstub reads with the selected CPU's permissions, so a CPU stopped at EL0 reads no
    kernel memory; another CPU in the kernel is selected for the command, then the
    selection (thread and frame) is put back. Nothing is asked of the target where the seam
    says user mode hides nothing (x86-64)."""
    seam = select_seam()
    if seam is None or not seam.USER_MODE_HIDES_KERNEL or not _cpu_in_user_mode(seam):
        yield
        return
    selected = gdb.selected_thread()
    frame = gdb.selected_frame()
    try:
        reader = None
        for thread in gdb.selected_inferior().threads():
            thread.switch()
            if thread.num != selected.num and not _in_user_mode(seam):
                reader = thread
                break
        if reader is None:
            raise KpError("every CPU is stopped in user mode, where QEMU's gdbstub cannot read "
                          "kernel memory; continue and interrupt again")
        yield
    finally:
        selected.switch()
        if frame.is_valid():
            frame.select()
