"""kp-hooks: who is on this function? Every kprobe and ftrace_ops on one function or address,
or on every hooked function, and who owns each, from kernel memory."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand, palette
from gdb_kprobe.kernel import hooks
from gdb_kprobe.ui import jsonout, jsonout_hooks, render_hooks


class KpHooks(KpCommand):
    name = "kp-hooks"
    summary = ("Show who is on a function: every kprobe (trace event, perf kprobe PMU event "
               "with its tasks and BPF programs, module, or flagged code in no listed module) "
               "and every ftrace_ops (function tracer, kprobes, fprobe, livepatch, BPF "
               "trampoline, direct call, a module's own ops) on its fentry site, with its "
               "owner. Without a place, every hooked function, from the kernel's lists alone (no "
               "code is read: name a function to see what its probed addresses and fentry "
               "site hold now).")
    mirrors = ("/sys/kernel/debug/kprobes/list, /sys/kernel/tracing/dynamic_events (and "
               "kprobe_events) and /sys/kernel/tracing/enabled_functions, merged per function")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("place", nargs="?", default=None,
                            help="a function (vfs_read or module:function): every hook in it; "
                                 "or one address: symbol+offset, module:symbol+offset or a 0x "
                                 "address; none: every hooked function, in address order")
        self.add_json_option(parser)
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        report = hooks.hooks_on(args.place)
        if args.json:
            gdb.write(jsonout.dumps(jsonout_hooks.hooks_report(report)))
        else:
            gdb.write(render_hooks.hooks_report(report, palette()))

    def complete_argument(self, text, word):
        return self.complete_place(text, word)
