"""Symbol files gdb loads for the kernel: module .ko symbols at their load addresses, and
the vmlinux moved by a KASLR slide. What kp-modules and kp-kaslr --relocate do, and what
kp-show does by itself for the modules whose handlers it names."""
from __future__ import annotations

import dataclasses
import os

import gdb

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kaslr
from gdb_kprobe.kernel import modules as kmodules
from gdb_kprobe.target import elf_relocate, symbols

__all__ = ["ModuleRow", "ModuleListing", "KaslrState", "add_search_directory", "module_rows",
           "autoload", "find_ko", "load_symbols", "relocate_kernel", "kaslr_state"]

_search_path: list[str] = []
_loaded: set[tuple[str, int]] = set()      # (module name, struct module address)


@dataclasses.dataclass
class ModuleRow:
    module: kmodules.Module
    path: str | None                       # its .ko in the search path
    state: str                             # "", "symbols loaded", "symbols loaded now", ...


@dataclasses.dataclass
class ModuleListing:
    rows: list[ModuleRow]
    damage: list[str]


@dataclasses.dataclass
class KaslrState:
    """What kp-kaslr says: how far the running kernel is from the vmlinux's addresses and
    how far gdb's symbols are shifted (after any relocation this command did)."""

    banner: str                # the vmlinux's linux_banner
    slide: int                 # running kernel - vmlinux link addresses
    bias: int                  # gdb's (and our) symbols - vmlinux link addresses
    relocated_now: bool

    @property
    def state(self) -> str:
        """"relocated" (just now), "matches" (symbols right) or "moved" (they are not)."""
        if self.relocated_now:
            return "relocated"
        return "matches" if self.slide == self.bias else "moved"


def add_search_directory(directory: str) -> None:
    """Remember a directory of .ko files (kp-modules --load DIR)."""
    if not os.path.isdir(directory):
        raise KpError(f"kp-modules: no directory {directory}; --load takes a directory "
                      "of .ko files")
    if directory not in _search_path:
        _search_path.append(directory)


def module_rows(names: list[str], load: bool) -> ModuleListing:
    """kp-modules: the loaded modules (only `names` when given), each with its .ko and
    whether its symbols are in gdb; with `load`, load those found now."""
    walk = kmodules.read_modules()
    unknown = set(names) - {m.name for m in walk.items}
    if unknown:
        raise KpError(f"not loaded in the target: {', '.join(sorted(unknown))}")
    rows = []
    for module in (m for m in walk.items if not names or m.name in names):
        path = find_ko(module.name)
        state = ""
        if path and load:
            state = load_symbols(module, path)
        elif (module.name, module.address) in _loaded:
            state = "symbols loaded"
        rows.append(ModuleRow(module, path, state))
    return ModuleListing(rows, [walk.damage] if walk.damage else [])


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
    if not sections:
        # (a module need not have .text: a kprobe sample's code may all be __kprobes)
        return "no section addresses in sect_attrs"
    try:
        copy = elf_relocate.write_placed(path, sections)
    except (OSError, elf_relocate.ElfError) as exc:
        raise KpError(f"kp-modules: cannot use {path}: {exc}") from None
    gdb.execute(f"add-symbol-file {copy}", from_tty=False, to_string=True)
    _loaded.add(key)
    return "symbols loaded now"


def relocate_kernel(match: kaslr.KernelMatch) -> None:
    """Reload the vmlinux moved by the detected slide (`symbol-file -o`), and ours with it."""
    path = gdb.current_progspace().filename
    gdb.execute(f"symbol-file -o {match.slide:#x} {path}", from_tty=False, to_string=True)
    symbols.relocate(match.slide)


def kaslr_state(relocate: bool) -> KaslrState:
    """kp-kaslr [--relocate]: detect the slide; with `relocate`, shift the symbols by it
    when they are not there yet. A vmlinux that is not the running kernel's is an error."""
    match = kaslr.detect()
    bias = symbols.kernel().bias
    if match.slide is None:
        raise KpError("the symbol file does not match the running kernel: its linux_banner "
                      f"({match.file_banner[:60]!r}) is nowhere in kernel memory")
    if match.slide == bias or not relocate:
        return KaslrState(match.file_banner, match.slide, bias, False)
    relocate_kernel(match)
    return KaslrState(match.file_banner, match.slide, symbols.kernel().bias, True)
