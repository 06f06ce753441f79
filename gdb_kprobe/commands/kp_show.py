"""kp-show: the anatomy of the probes at one place, or of every probe in one function, from
live kernel memory."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards, last_list
from gdb_kprobe.commands.base import KpCommand, palette
from gdb_kprobe.engine import symbol_files
from gdb_kprobe.errors import KpError, KpUsageError
from gdb_kprobe.kernel import function_probes, places
from gdb_kprobe.ui import jsonout, render


class KpShow(KpCommand):
    name = "kp-show"
    summary = ("Show how the kprobes at a place are built: struct kprobe fields, handlers, "
               "owner, live vs. original code (int3 / optprobe jmp / ftrace call; brk on "
               "arm64), the single-step copy (or arm64's simulate_*() handler), kretprobe "
               "instances with the tasks holding them and per-CPU kprobe state. A function "
               "name shows every probe in the function.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("place", help="a function (inet_csk_accept or module:function): "
                                          "every probe in it, in address order; or one place, "
                                          "then a line naming the function's other probes: "
                                          "symbol+offset (inet_accept+0x14 or +20; +0 for the "
                                          "entry alone), module:symbol+offset, a 0x address, "
                                          "or #N / N: line N of the last kp-list (-n numbers "
                                          "them)")
        self.add_json_option(parser)
        return parser

    @guards.needs_kernel
    def run(self, args: argparse.Namespace) -> None:
        shown = _shown(args.place)
        symbol_files.autoload(shown.modules)     # so `break` finds its handlers by name
        if args.json:
            gdb.write(jsonout.dumps(jsonout.probes_shown(shown)))
        else:
            gdb.write(render.probes_shown(shown, palette()))

    def complete_argument(self, text, word):
        return self.complete_place(text, word)


def _shown(place: str) -> function_probes.Shown:
    # `inet_csk_accept` is the whole function, as kp-list's SYM filter is a name;
    # `inet_csk_accept+0` (or an address, or #N) is one place
    if places.names_function(place):
        return function_probes.in_function(place)
    return function_probes.at_address(_address_of(place))


def _address_of(place: str) -> int:
    text = place.strip()
    index_text = text[1:] if text.startswith("#") else text
    # isdigit() alone also takes `²` and other digits int() refuses
    if index_text.isascii() and index_text.isdigit() and \
            (text.startswith("#") or len(index_text) < 6):
        # int() refuses more than 4300 digits; no kp-list has a billion lines anyway
        index = int(index_text) if len(index_text) <= 9 else 0
        shown = str(index) if index else index_text[:20] + "..." * (len(index_text) > 20)
        addresses = last_list.last_addresses()
        if not addresses:
            raise KpUsageError("no kp-list to take line numbers from; run kp-list -n first")
        if not 1 <= index <= len(addresses):
            raise KpError(f"no line {shown} in the last kp-list (it had {len(addresses)} "
                          "lines)")
        return addresses[index - 1]
    return places.resolve(text).address
