"""Address → `symbol+offset [module]`, with the kernel's kallsyms_lookup() rules.

Kernel-image addresses are looked up in the vmlinux's ELF symbol table (local);
module addresses in the module's kallsyms. Modules are listed once per
Symbolizer, which a command creates once per invocation.
"""
from __future__ import annotations

from typing import NamedTuple

from gdb_kprobe.kernel import modules as kmodules
from gdb_kprobe.target import symbols

__all__ = ["Location", "Symbolizer"]


class Location(NamedTuple):
    """`symbol+offset [module]` of an address (a NamedTuple, not a frozen dataclass: a
    listing makes 10,000 of them, and a frozen dataclass's __init__ costs 4x a tuple's)."""

    symbol: str
    offset: int
    size: int
    module: str | None

    def __str__(self) -> str:
        text = f"{self.symbol}+{self.offset:#x}"
        return f"{text} [{self.module}]" if self.module else text


class Symbolizer:
    def __init__(self) -> None:
        self._modules: list[kmodules.Module] | None = None
        self.damage: str | None = None

    @property
    def modules(self) -> list[kmodules.Module]:
        if self._modules is None:
            walk = kmodules.read_modules()
            self._modules = walk.items
            self.damage = walk.damage
        return self._modules

    def module_for(self, address: int) -> kmodules.Module | None:
        if symbols.in_kernel_image(address):
            return None
        return kmodules.module_for(address, self.modules)

    def lookup(self, address: int) -> Location | None:
        if symbols.in_kernel_image(address):
            found = symbols.kernel().lookup(address)
            return Location(found[0], found[1], found[2], None) if found else None
        module = kmodules.module_for(address, self.modules)
        if module is None:
            return None
        found = module.symbol(address)
        return Location(found[0], found[1], found[2], module.name) if found else None
