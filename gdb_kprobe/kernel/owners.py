"""Who owns an address, and so who owns a probe: the one attribution every command uses.

An address is in the kernel image (_text.._end of the vmlinux), in a module on the
`modules` list (its struct module's memory ranges), or in neither: then only the
region says something, read from the x86-64 memory map (asm/pgtable_64_types.h) with
the running kernel's own values where it has them: module space
[MODULES_VADDR, MODULES_END), vmalloc, the direct map (kmalloc'ed memory), or unknown.

A probe's owner comes from its handlers first (a `struct kprobe` may be kmalloc'ed by
anyone; the code it calls says whose it is), then from where its `struct kprobe` lives.
Code in module space that no listed module holds is what a module that took itself off
the list leaves behind (the classic rootkit trick): that is flagged, never called
"kernel". "kernel" is said only for a handler or a struct kprobe inside the kernel image.
"""
from __future__ import annotations

import dataclasses
import re

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import modules as kmodules
from gdb_kprobe.target import cache, memory, symbols

__all__ = ["KERNEL_IMAGE", "MODULE", "MODULE_SPACE", "VMALLOC", "DIRECT_MAP", "UNKNOWN",
           "MemoryMap", "memory_map", "Region", "region_of", "Owner", "OwnerWarning",
           "Attribution", "attribute"]

# region kinds (also the JSON words)
KERNEL_IMAGE, MODULE, MODULE_SPACE = "kernel_image", "module", "module_space"
VMALLOC, DIRECT_MAP, UNKNOWN = "vmalloc", "direct_map", "unknown"

_IN_WORDS = {MODULE_SPACE: "in module space", VMALLOC: "in vmalloc space",
             DIRECT_MAP: "in the direct map (kmalloc'ed memory)",
             UNKNOWN: "in no region the kernel maps for code or data"}
HIDDEN = "in module space, in no module of the module list: a module that hid itself?"


@dataclasses.dataclass(frozen=True)
class MemoryMap:
    """The virtual regions as [start, end) pairs, as this kernel set them up (the direct
    map is arm64's linear map)."""

    modules: tuple[int, int]
    vmalloc: tuple[int, int]
    direct_map: tuple[int, int]


def _vmcoreinfo() -> dict[str, str]:
    """The kernel's vmcoreinfo note (kernel/crash_core.c: `unsigned char *vmcoreinfo_data`,
    "KEY=value" lines; CONFIG_CRASH_CORE), or {} without one."""
    table = symbols.kernel()
    data_at, size_at = table.address_of("vmcoreinfo_data"), table.address_of("vmcoreinfo_size")
    if not data_at or not size_at:
        return {}
    try:
        data, size = memory.read_u64(data_at), memory.read_u64(size_at)
        text = memory.read(data, min(size, 4096)).decode("ascii", "replace") if data else ""
    except KpError:
        return {}
    return dict(re.findall(r"^([^=\n]+)=([^\n]*)$", text, re.MULTILINE))


def _variable(name: str) -> int | None:
    """A kernel variable's value when the symbol exists and is readable."""
    address = symbols.kernel().address_of(name)
    if not address:
        return None
    try:
        return memory.read_u64(address)
    except KpError:
        return None


@cache.cache_until("objfile", "exited", "relocate")
def vmcoreinfo() -> dict[str, str]:
    """The kernel's vmcoreinfo, read once per symbol file and target (the unwinder asks it
    for the address bits the PAC of a return address sits above)."""
    return _vmcoreinfo()


@cache.cache_until("objfile", "exited", "relocate")
def memory_map() -> MemoryMap:
    """The regions as this kernel set them up: the arch seam's rules (arch.memory_map) on
    the kernel's vmcoreinfo and its layout variables."""
    modules, vmalloc, direct_map = arch.memory_map(_vmcoreinfo(), _variable)
    return MemoryMap(modules=modules, vmalloc=vmalloc, direct_map=direct_map)


@dataclasses.dataclass(frozen=True)
class Region:
    """Where an address is: one of the region kinds, and the listed module holding it."""

    kind: str
    module: str | None = None


def region_of(address: int, modules: list[kmodules.Module],
              layout: MemoryMap | None = None) -> Region:
    """The owner of `address`: the kernel image, a listed module (its struct module's
    memory), or only the region of the memory map it falls in."""
    if symbols.in_kernel_image(address):
        return Region(KERNEL_IMAGE)
    module = kmodules.module_for(address, modules)
    if module is not None:
        return Region(MODULE, module.name)
    layout = memory_map() if layout is None else layout
    for kind, (start, end) in ((MODULE_SPACE, layout.modules), (VMALLOC, layout.vmalloc),
                               (DIRECT_MAP, layout.direct_map)):
        if start <= address < end:
            return Region(kind)
    return Region(UNKNOWN)


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who a probe belongs to. kind: "trace_event" (kprobe_events/dynamic_events),
    "perf_kprobe" (a perf kprobe PMU event, made by perf_event_open()), "module", "kernel", "unlisted_module"
    (module space in no listed module), "foreign_code" (a handler outside the kernel's and
    the modules' code) or "unknown"; `address` and `region` say where, for the last three."""

    kind: str
    name: str | None = None
    address: int | None = None
    region: str | None = None
    what: str = ""                   # "code" (a handler decided) or "memory" (struct kprobe)

    @property
    def flagged(self) -> bool:
        return self.kind in ("unlisted_module", "foreign_code")

    def __str__(self) -> str:
        if self.kind == "trace_event":
            return f"trace event {self.name}"
        if self.kind == "perf_kprobe":
            name = (self.name or "").partition("/")[2] or self.name
            return f"perf kprobe PMU event {name} (perf_event_open, not in kprobe_events)"
        if self.kind == "module":
            return f"module {self.name}"
        if self.kind == "kernel":
            return "kernel"
        where = f"{self.address:#x}" if self.address is not None else "?"
        if self.kind == "unlisted_module":
            return f"UNLISTED MODULE {self.what.upper()} at {where} ({HIDDEN})"
        if self.kind == "foreign_code":
            return (f"CODE OUTSIDE THE KERNEL AND ITS MODULES at {where} "
                    f"({_IN_WORDS.get(self.region or UNKNOWN, self.region)})")
        return f"unknown (no handler; struct kprobe at {where}, {_IN_WORDS.get(self.region or UNKNOWN, self.region)})"


@dataclasses.dataclass(frozen=True)
class OwnerWarning:
    """One pointer of a probe that lies where no known code or data owner is."""

    pointer: str                     # "pre_handler", "struct kprobe", ...
    address: int
    region: str
    note: str


@dataclasses.dataclass(frozen=True)
class Attribution:
    owner: Owner
    warnings: tuple[OwnerWarning, ...] = ()


def _warning(pointer: str, address: int, region: Region, is_code: bool) -> OwnerWarning | None:
    """Code must be in the kernel image or a listed module; a struct kprobe may also be
    kmalloc'ed or vmalloc'ed (its allocator owns it), but not lie in unlisted module space."""
    if region.kind in (KERNEL_IMAGE, MODULE):
        return None
    if region.kind == MODULE_SPACE:
        return OwnerWarning(pointer, address, region.kind, f"{pointer} {address:#x} is {HIDDEN}")
    if not is_code and region.kind in (VMALLOC, DIRECT_MAP):
        return None
    kind = "code of neither the kernel nor a listed module" if is_code else \
        "memory of neither the kernel, a listed module nor the heap"
    return OwnerWarning(pointer, address, region.kind,
                   f"{pointer} {address:#x} is {_IN_WORDS[region.kind]}: {kind}")


def attribute(kprobe: int, handlers: list[tuple[str, int]], modules: list[kmodules.Module],
              event: str | None = None, list_damage: str | None = None,
              event_listed: bool | None = True) -> Attribution:
    """The owner of the `struct kprobe` at `kprobe` whose handlers are (name, address) pairs
    (NULL ones skipped), and a warning for each pointer no known owner holds. `event` is
    the trace event the probe belongs to, when it is one (`event_listed` False: a perf
    kprobe PMU event, in neither kprobe_events nor dynamic_events); `list_damage` why
    the walk of the module list stopped early (a module past it looks unlisted too)."""
    regions = [(name, address, region_of(address, modules)) for name, address in handlers
               if address]
    struct_region = region_of(kprobe, modules)
    warnings = [w for w in (_warning(n, a, r, True) for n, a, r in regions) if w]
    struct_warning = _warning("struct kprobe", kprobe, struct_region, False)
    warnings += [struct_warning] if struct_warning else []
    if list_damage:
        warnings = [dataclasses.replace(w, note=f"{w.note} (but the module list is damaged: "
                                        f"{list_damage})") if w.region == MODULE_SPACE else w
                    for w in warnings]
    if event is not None:
        kind = "perf_kprobe" if event_listed is False else "trace_event"
        return Attribution(Owner(kind, event), tuple(warnings))
    return Attribution(_decide(kprobe, regions, struct_region), tuple(warnings))


def _decide(kprobe: int, regions: list[tuple[str, int, Region]], struct_region: Region) -> Owner:
    """Handlers first (in the order given), then the struct kprobe's memory."""
    for kind in (MODULE, MODULE_SPACE):
        for _name, address, region in regions:
            if region.kind == kind:
                return Owner("module", region.module) if kind == MODULE else \
                    Owner("unlisted_module", None, address, region.kind, "code")
    for _name, address, region in regions:
        if region.kind != KERNEL_IMAGE:
            return Owner("foreign_code", None, address, region.kind, "code")
    if struct_region.kind == MODULE:
        return Owner("module", struct_region.module)
    if struct_region.kind == MODULE_SPACE:
        return Owner("unlisted_module", None, kprobe, struct_region.kind, "memory")
    if regions or struct_region.kind == KERNEL_IMAGE:
        return Owner("kernel")
    return Owner("unknown", None, kprobe, struct_region.kind)
