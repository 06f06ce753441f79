"""`finish` that follows the task, not the CPU.

Through QEMU's gdbstub a gdb "thread" is a virtual CPU. gdb's `finish` puts a
breakpoint on the caller's resume address that only stops for the thread it was
typed on, so when the scheduler moves the task to another CPU before the function
returns (common with two vCPUs: the return passes through wakeups, softirqs, and
through arch_rethook_trampoline for kretprobed functions) gdb steps over its own
breakpoint and the `finish` never comes back.

A `hook-finish` arms a companion breakpoint at the same address that stops on any
other CPU when the stack pointer is the caller's (a kernel stack belongs to one task,
so this is the same task returning into the same frame), and prints the value
returned as `finish` would. On the original CPU it stays out of the way and gdb's
own `finish` does the work. It is removed at the next prompt (or the next `finish`).

Nothing here uses `gdb.post_event`: an event still queued when gdb exits holds a Python
object that Debian's gdb 13.1 releases after the interpreter is gone, and gdb dies with
"Fatal signal: Segmentation fault" on its way out (a `-batch` run whose target exits or
detaches is enough). Deleting a breakpoint at `before_prompt` is safe, so that is where
the follower goes.
"""
from __future__ import annotations

import gdb

from gdb_kprobe import arch
from gdb_kprobe.engine import unwind
from gdb_kprobe.target import cache, context, symbols

__all__ = ["arm", "disarm", "register"]

HOOK = "define hook-finish\npython __import__('gdb_kprobe.engine.finish').engine.finish.arm()\nend"


class _Follower(gdb.Breakpoint):
    def __init__(self, pc: int, caller_sp: int, origin: gdb.InferiorThread, returns) -> None:
        super().__init__(f"*{pc:#x}", internal=True)
        self.silent = True                  # no "Breakpoint -N," line: _on_stop reports
        self.caller_sp = caller_sp
        self.origin = origin.num            # the gdb thread (one per CPU) finish was typed on
        self.origin_cpu = context.cpu_of_thread(origin)
        self.returns = returns
        self.moved: str | None = None
        self.returned = ""
        self.done = False                   # its stop was reported: remove at the prompt

    def stop(self) -> bool:
        thread = gdb.selected_thread()
        if thread is None or thread.num == self.origin:
            return False                    # gdb's own finish breakpoint handles it
        if arch.u64(int(gdb.parse_and_eval(f"${arch.STACK_POINTER}"))) != self.caller_sp:
            return False                    # another task, or a deeper call of the caller
        self.moved = (f"(the task moved from CPU {self.origin_cpu} to CPU "
                      f"{context.cpu_of_thread(thread)} before returning; `finish` followed "
                      "it)\n")
        self.returned = _returned(self.returns)
        return True


_armed: _Follower | None = None


def arm() -> None:
    """Called by hook-finish, right before gdb's `finish`. Never raises: an error in a
    hook would cancel the user's `finish`."""
    try:
        disarm()
        thread = gdb.selected_thread()
        if thread is None or thread.is_running() or not _is_kernel():
            return
        # the caller as finish will see it: a kretprobe's real caller, not its trampoline
        unwind.settle(gdb.selected_frame().level() + 1)
        frame = gdb.selected_frame()
        caller = frame.older()
        if caller is None:
            return
        function = frame.function()
        returns = function.type.target() if function is not None else None
        caller_sp = arch.u64(int(caller.read_register(arch.STACK_POINTER)))
        global _armed
        _armed = _Follower(caller.pc(), caller_sp, thread, returns)
        gdb.events.stop.connect(_on_stop)
    except (gdb.error, RuntimeError, AttributeError, ValueError):
        disarm()


def _is_kernel() -> bool:
    try:
        return symbols.in_kernel_image(gdb.selected_frame().pc())
    except Exception:                       # no symbols loaded: not our business
        return False


def _returned(returns) -> str:
    """`Value returned is $N = …`, as gdb's finish prints it (rax, for scalars)."""
    if returns is None or returns.code == gdb.TYPE_CODE_VOID or returns.sizeof > 8:
        return ""
    try:
        value = gdb.parse_and_eval(f"${arch.RETURN_VALUE}").cast(returns)
        index = gdb.add_history(value)
        prefix = f"({returns}) " if returns.strip_typedefs().code == gdb.TYPE_CODE_PTR else ""
        return f"Value returned is ${index} = {prefix}{value.format_string()}\n"
    except (gdb.error, AttributeError):     # gdb.add_history is gdb 12+
        return ""


def disarm() -> None:
    global _armed
    if _armed is not None:
        follower, _armed = _armed, None
        gdb.events.stop.disconnect(_on_stop)
        if follower.is_valid():
            follower.delete()


def _on_stop(_event) -> None:
    follower = _armed
    if follower is None:
        return
    if follower.moved:
        try:                                # where it returned to, as finish prints it
            where = gdb.execute("frame", to_string=True)
        except gdb.error:
            where = ""
        if where.startswith("#0  "):
            where = where[4:]
        gdb.write(follower.moved + where + follower.returned)
    # deleting a breakpoint while gdb is still reporting the stop is not safe: the next
    # prompt removes it (_on_prompt)
    follower.done = True


def _on_prompt(*_args) -> None:
    if _armed is not None and _armed.done:
        disarm()


def _on_exit(*_args) -> None:
    """The inferior went away (exit, detach, kill) or the symbols did: the follower's
    address means nothing now. Deleted right here (no stop is being reported)."""
    disarm()


def register() -> None:
    try:
        existing = gdb.execute("show user hook-finish", to_string=True)
    except gdb.error:                       # "Not a user command."
        existing = ""
    if existing and "gdb_kprobe" not in existing:
        return                              # the user's own hook-finish stays
    gdb.execute(HOOK, to_string=True)
    # through the cache registry: one listener per gdb event for the whole plugin; the
    # stop event is followed only while a follower is armed (arm() to disarm())
    cache.register(_on_prompt, "before_prompt")
    cache.register(_on_exit, "exited", "clear_objfiles")
