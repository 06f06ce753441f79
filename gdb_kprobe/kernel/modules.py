"""Loaded kernel modules (`modules` list, struct module), as /proc/modules lists them.

Module layouts differ between kernels: 6.1 has core_layout/init_layout, 6.4+ has
`mem[MOD_MEM_NUM_TYPES]`; both are read through DWARF with has_field fallbacks.
Symbol names inside a module come from the module's own kallsyms (`mod->kallsyms`),
which is what the kernel itself uses for `%pS` and kprobes/list.
"""
from __future__ import annotations

import dataclasses
import struct

from gdb_kprobe.kernel import lists
from gdb_kprobe.target import layouts, memory, symbols

__all__ = ["Module", "read_modules", "module_for", "sections"]

SHN_UNDEF = 0


@dataclasses.dataclass
class Module:
    """One `struct module` on the `modules` list: name, state, memory, kallsyms."""

    address: int
    name: str
    state: int
    ranges: list[tuple[int, int]]       # (base, size) of each memory region
    text_ranges: list[tuple[int, int]]  # the text regions (core and init text)
    kallsyms: int                       # struct mod_kallsyms *
    _symtab: list[tuple[int, int, int]] | None = None   # (value, name offset, shndx)
    _strtab: int = 0

    def contains(self, address: int) -> bool:
        return any(base <= address < base + size for base, size in self.ranges)

    def symbol(self, address: int) -> tuple[str, int, int] | None:
        """(name, offset, size) like the kernel's find_kallsyms_symbol(): the closest
        preceding named symbol (the first in symtab order on a tie).

        Names are read only for the candidates, closest first, until one is not a
        mapping symbol: one string per lookup, not one per symbol below the address.
        """
        if self._symtab is None:
            self._load_kallsyms()
        below = []
        next_value = None
        for index, (value, name_off, shndx) in enumerate(self._symtab[1:]):
            if shndx == SHN_UNDEF or name_off == 0:
                continue
            if value <= address:
                below.append((-value, index, name_off))
            elif next_value is None or value < next_value:
                next_value = value
        for negated, _index, name_off in sorted(below):
            name = self._name(name_off)
            if name and not _is_mapping_symbol(name):
                value = -negated
                size = (next_value - value) if next_value else 0
                return name, address - value, size
        return None

    def count_of(self, name: str) -> int:
        if self._symtab is None:
            self._load_kallsyms()
        return sum(1 for _value, name_off, shndx in self._symtab[1:]
                   if shndx != SHN_UNDEF and name_off and self._name(name_off) == name)

    def text_contains(self, address: int) -> bool:
        """__module_text_address(): in the module's core or init text."""
        return any(base <= address < base + size for base, size in self.text_ranges)

    def text_symbol_names(self) -> list[str]:
        """Sorted names of the module's symbols in its text (what module:symbol may name)."""
        if self._symtab is None:
            self._load_kallsyms()
        names = {self._name(name_off) for value, name_off, shndx in self._symtab[1:]
                 if shndx != SHN_UNDEF and name_off and self.text_contains(value)}
        return sorted(name for name in names if name and not _is_mapping_symbol(name))

    def address_of(self, name: str) -> int | None:
        if self._symtab is None:
            self._load_kallsyms()
        for value, name_off, shndx in self._symtab[1:]:
            if shndx != SHN_UNDEF and name_off and self._name(name_off) == name:
                return value
        return None

    def _load_kallsyms(self) -> None:
        layout = layouts.layout("struct mod_kallsyms")
        view = layout.view(memory.read(self.kallsyms, layout.size), self.kallsyms)
        count = view.int("num_symtab")
        symtab = view.ptr("symtab")
        self._strtab = view.ptr("strtab")
        if count > 100_000:
            count = 0
        raw = memory.read(symtab, 24 * count) if count else b""
        self._symtab = [(value, name_off, shndx) for name_off, _info, _other, shndx, value, _size
                        in struct.iter_unpack("<IBBHQQ", raw)]

    def _name(self, offset: int) -> str:
        return layouts.printable(memory.read_cstring(self._strtab + offset, 128))


def _is_mapping_symbol(name: str) -> bool:
    return name.startswith("$") or (name.startswith(".L") and len(name) > 2)


def _ranges(view: layouts.View) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(every memory region, the text regions) of a `struct module`, as (base, size)."""
    layout = view.layout
    ranges: list[tuple[int, int]] = []
    text: list[tuple[int, int]] = []
    # module.mem[MOD_MEM_NUM_TYPES]: ac3b43283923 "module: replace module_layout with
    # module_memory" (v6.4); before it core_layout and init_layout, and data_layout as a
    # member only with CONFIG_ARCH_WANTS_MODULES_DATA_IN_VMALLOC (01dc0386efb7, v5.19)
    if layout.has_field("mem"):
        mem = layout.field("mem")
        element = mem.type.strip_typedefs().target().strip_typedefs()
        member = layouts.Layout("struct module_memory", element)
        text_types = {layouts.enum_value("enum mod_mem_type", name)
                      for name in ("MOD_TEXT", "MOD_INIT_TEXT")}
        for index in range(mem.size // element.sizeof):
            step = mem.offset + index * element.sizeof
            base = struct.unpack_from("<Q", view.data, step + member.offset("base"))[0]
            size = struct.unpack_from("<I", view.data, step + member.offset("size"))[0]
            if base and size:
                ranges.append((base, size))
                if index in text_types:          # __module_text_address()
                    text.append((base, size))
        return ranges, text
    for region in ("core_layout", "init_layout", "data_layout"):   # 6.1
        if layout.has_field(region):
            base = view.ptr(f"{region}.base")
            size = view.int(f"{region}.size")
            if base and size:
                ranges.append((base, size))
                if region != "data_layout":      # text_size: the text at the region's start
                    text.append((base, view.int(f"{region}.text_size")))
    return ranges, text


def read_modules() -> lists.Walk[Module]:
    """All modules on the kernel's `modules` list, in list order."""
    layout = layouts.layout("struct module")

    def decode(view: layouts.View) -> Module:
        ranges, text = _ranges(view)
        return Module(address=view.address, name=view.string("name"), state=view.int("state"),
                      ranges=ranges, text_ranges=text,
                      # module.kallsyms exists with CONFIG_KALLSYMS only
                      kallsyms=view.ptr("kallsyms") if layout.has_field("kallsyms") else 0)

    return lists.for_each_entry(symbols.kernel_address("modules"), layout, "list", decode,
                                "modules list")


def module_for(address: int, modules: list[Module]) -> Module | None:
    for module in modules:
        if module.contains(address):
            return module
    return None


def sections(module: Module) -> dict[str, int]:
    """Section name → load address, from mod->sect_attrs (/sys/module/<m>/sections)."""
    layout = layouts.layout("struct module")
    view = layout.view(memory.read(module.address, layout.size), module.address)
    # module.sect_attrs: CONFIG_KALLSYMS and CONFIG_SYSFS; module_sect_attr.battr since
    # ed66f991bb19 "module: Refactor section attr into bin attribute" (v5.8). v6.14 dropped
    # nsections (d8959b947a8d) and struct module_sect_attr (34f5ec0f8252): not read yet
    attrs_ptr = view.ptr("sect_attrs") if layout.has_field("sect_attrs") else 0
    if not attrs_ptr:
        return {}
    attrs = layouts.layout("struct module_sect_attrs")
    count = struct.unpack("<I", memory.read(attrs_ptr + attrs.offset("nsections"), 4))[0]
    if count > 1000:
        return {}
    attr = layouts.layout("struct module_sect_attr")
    first = attrs_ptr + attrs.offset("attrs")
    raw = memory.read(first, attr.size * count) if count else b""
    found = {}
    for index in range(count):
        item = attr.view(raw[index * attr.size:(index + 1) * attr.size], first + index * attr.size)
        name_ptr = item.ptr("battr.attr.name")
        if name_ptr:
            found[layouts.printable(memory.read_cstring(name_ptr, 64))] = item.ptr("address")
    return found
