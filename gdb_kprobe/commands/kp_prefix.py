"""`kp`: the overview of the kp-* commands (`kp` alone, or `help kp`)."""
from __future__ import annotations

import gdb

__all__ = ["KpPrefix", "KpSubcommand"]


class KpPrefix(gdb.Command):
    """gdb-kprobe: Linux kprobes from the debugger.

Commands:
  kp-list     the registered kprobes, as /sys/kernel/debug/kprobes/list shows them
  kp-show     how the probes at one place are built, from live kernel memory
  kp-hooks    who is on a function: every kprobe and ftrace_ops on it, and its owner
  kp-modules  loaded modules; load their .ko symbols into gdb
  kp-sim      replay a kprobe's pre-handler / single-step / post-handler (or --ret)
  kp-check    would register_kprobe() and kprobe_events take a place? if not, which errno and why
  kp-blacklist  the kprobe blacklist, as /sys/kernel/debug/kprobes/blacklist shows it
  kp-kaslr    does the vmlinux match the running kernel? its KASLR slide; relocate
  kp-locals   parameters and locals at a probe point: where they live, values, a kprobe_events line
  kp-where    is this CPU inside kprobe handling? which probe, stage, probed frame

kp-list, kp-show, kp-locals and kp-check take --json (schemas: docs/json.md).

Settings: set kp-color on|off|auto, set kp-unwind on|off, set kp-debug on|off,
set kp-read-block auto|N.

Also, without a command: `bt` sees through int3, optprobe, ftrace and rethook trampolines,
on arm64 through the brk entry, PAC-signed return addresses and the kretprobe trampoline
(set kp-unwind off to compare), and `finish` follows the task when it moves to another CPU.

Each command has `help <command>` and `<command> --help`; `kp list` is `kp-list`, and so on."""

    def __init__(self) -> None:
        super().__init__("kp", gdb.COMMAND_DATA, prefix=True)

    def invoke(self, argument, from_tty):
        gdb.write(self.__doc__ + "\n")


class KpSubcommand(gdb.Command):
    """`kp list` for `kp-list` and so on: a real gdb subcommand of `kp` (so `help kp` lists
    them), which runs and completes as the kp-* command does."""

    def __init__(self, command: gdb.Command) -> None:
        self.command = command
        self.__doc__ = command.__doc__
        super().__init__(f"kp {command.name[len('kp-'):]}", gdb.COMMAND_DATA)

    def invoke(self, argument, from_tty):
        self.command.invoke(argument, from_tty)

    def complete(self, text, word):
        return self.command.complete(text, word)
