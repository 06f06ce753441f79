"""kp-kaslr: is the kernel where the vmlinux says? Detect the KASLR slide; relocate."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.engine import symbol_files
from gdb_kprobe.ui import jsonout, jsonout_listings, render


class KpKaslr(KpCommand):
    name = "kp-kaslr"
    summary = ("Compare the vmlinux's linux_banner with kernel memory: say whether the "
               "symbol file matches the running kernel and by how much KASLR moved it "
               "(the slides tried come from the pc, arm64's VBAR_EL1, and on x86-64 every "
               "2 MiB step of its 1 GiB); --relocate shifts gdb's and gdb-kprobe's symbols "
               "by that slide.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("--relocate", action="store_true",
                            help="reload the vmlinux with `symbol-file -o SLIDE`")
        self.add_json_option(parser)
        return parser

    @guards.needs_target
    def run(self, args: argparse.Namespace) -> None:
        state = symbol_files.kaslr_state(args.relocate)
        if args.json:
            gdb.write(jsonout.dumps(jsonout_listings.kaslr(state)))
        else:
            gdb.write(render.kaslr(state))
