"""kp-kaslr: is the kernel where the vmlinux says? Detect the KASLR slide; relocate."""
from __future__ import annotations

import argparse

import gdb

from gdb_kprobe.commands import guards
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.engine import symbol_files
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kaslr
from gdb_kprobe.target import symbols


class KpKaslr(KpCommand):
    name = "kp-kaslr"
    summary = ("Compare the vmlinux's linux_banner with kernel memory: say whether the "
               "symbol file matches the running kernel and by how much KASLR moved it; "
               "--relocate shifts gdb's and gdb-kprobe's symbols by that slide.")

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("--relocate", action="store_true",
                            help="reload the vmlinux with `symbol-file -o SLIDE`")
        return parser

    @guards.needs_target
    def run(self, args: argparse.Namespace) -> None:
        match = kaslr.detect()
        bias = symbols.kernel().bias
        if match.slide is None:
            raise KpError("the symbol file does not match the running kernel: its linux_banner "
                          f"({match.file_banner[:60]!r}) is nowhere in kernel memory")
        if match.slide == bias:
            where = "no KASLR slide" if not bias else f"relocated by {bias:#x}"
            gdb.write(f"kp-kaslr: the symbol file matches the running kernel ({where}): "
                      f"{match.file_banner}\n")
            return
        if not args.relocate:
            gdb.write(f"kp-kaslr: KASLR moved the kernel by {match.slide:#x} from the vmlinux's "
                      "addresses; `kp-kaslr --relocate` shifts the symbols\n")
            return
        symbol_files.relocate_kernel(match)
        gdb.write(f"kp-kaslr: symbols relocated by {match.slide:#x}\n")
