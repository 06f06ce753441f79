"""kp-modules: loaded modules (as /proc/modules), and loading their .ko symbols into gdb."""
from __future__ import annotations

import argparse
import os

import gdb

from gdb_kprobe import elf_relocate, guards, render
from gdb_kprobe.commands.base import KpCommand
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import modules as kmodules

_search_path: list[str] = []
_loaded: set[tuple[str, int]] = set()      # (module name, struct module address)


class KpModules(KpCommand):
    name = "kp-modules"
    summary = ("List the loaded kernel modules; with --load DIR, load the symbols of the ones "
               "whose DIR/<name>.ko exists into gdb, at their section addresses.")
    mirrors = "/proc/modules and /sys/module/<name>/sections"

    def build_parser(self):
        parser = super().build_parser()
        parser.add_argument("--load", metavar="DIR", action="append", default=[],
                            help="a directory of .ko files (remembered for later loads)")
        parser.add_argument("names", nargs="*", help="only these modules")
        return parser

    def run(self, args: argparse.Namespace) -> None:
        for directory in args.load:
            if not os.path.isdir(directory):
                raise KpError(f"kp-modules: no directory {directory}; --load takes a directory "
                              "of .ko files")
            if directory not in _search_path:
                _search_path.append(directory)
        guards.require_kernel()
        walk = kmodules.read_modules()
        chosen = [m for m in walk.items if not args.names or m.name in args.names]
        unknown = set(args.names) - {m.name for m in walk.items}
        if unknown:
            raise KpError(f"not loaded in the target: {', '.join(sorted(unknown))}")
        rows = []
        for module in chosen:
            path = find_ko(module.name)
            state = ""
            if path and args.load:
                state = load_symbols(module, path)
            elif (module.name, module.address) in _loaded:
                state = "symbols loaded"
            rows.append((module, path, state))
        gdb.write(render.module_list(rows, [walk.damage] if walk.damage else []))

    def complete_argument(self, text, word):
        return gdb.COMPLETE_FILENAME


def autoload(modules: list[kmodules.Module]) -> None:
    """Load the symbols of modules whose .ko is in the search path and not loaded yet,
    so gdb can break on their handlers by name."""
    if not _search_path:
        return
    for module in modules:
        path = find_ko(module.name)
        if path and (module.name, module.address) not in _loaded:
            load_symbols(module, path)


def find_ko(name: str) -> str | None:
    for directory in _search_path:
        for candidate in (name, name.replace("-", "_")):
            path = os.path.join(directory, candidate + ".ko")
            if os.path.isfile(path):
                return path
    return None


def load_symbols(module: kmodules.Module, path: str) -> str:
    """Load the .ko's symbols with every section at its load address (handlers sit in
    .kprobes.text or .text.unlikely, not only .text): from a copy whose section headers
    carry those addresses, since gdb relocates a .ko's DWARF by .text alone otherwise."""
    key = (module.name, module.address)
    if key in _loaded:
        return "symbols loaded"
    sections = {name: address for name, address in kmodules.sections(module).items()
                if address}
    if ".text" not in sections:
        return "no .text address in sect_attrs"
    try:
        copy = elf_relocate.write_placed(path, sections)
    except (OSError, elf_relocate.ElfError) as exc:
        raise KpError(f"kp-modules: cannot use {path}: {exc}") from None
    gdb.execute(f"add-symbol-file {copy}", from_tty=False, to_string=True)
    _loaded.add(key)
    return "symbols loaded now"
