"""Code the kernel allocated at run time, named the way /proc/kallsyms names it, and any
code address named for a reader: `symbol+off`, `symbol [module]`, or a run-time name.

/proc/kallsyms lists, after the kernel's and the modules' symbols: ftrace's dynamic
trampolines ("ftrace_trampoline" [__builtin__ftrace], ftrace_get_trampoline_kallsym()),
kprobes' instruction pages ("kprobe_insn_page", "kprobe_optinsn_page" [__builtin__kprobes],
kprobe_cache_get_kallsym()) and BPF's programs, trampolines and dispatchers
(`bpf_kallsyms`, bpf_get_kallsym()). gdb knows none of them: a backtrace through a
dynamic ftrace trampoline shows `??` where the kernel would say ftrace_trampoline.
"""
from __future__ import annotations

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import lists
from gdb_kprobe.kernel import modules as kmodules
from gdb_kprobe.target import cache, layouts, memory, symbols

__all__ = ["runtime_code_name", "runtime_code_symbol", "code_name", "symbol_at", "PAGE_SIZE"]

PAGE_SIZE = 4096            # a kprobe instruction page (alloc_insn_page(): one page)


@cache.cache_until(*cache.MEMORY)
def _runtime_code() -> tuple[tuple[int, int, str], ...]:
    """(start, end, name) of code the kernel allocated at run time, as /proc/kallsyms lists
    it: ftrace_get_trampoline_kallsym() (ops on ftrace_ops_trampoline_list, "ftrace_trampoline"
    of [__builtin__ftrace]), kprobe_cache_get_kallsym() (kprobe_insn_slots and
    kprobe_optinsn_slots pages, named by the cache's sym), bpf_get_kallsym() (bpf_kallsyms:
    programs, trampolines, dispatchers, each `struct bpf_ksym` with its name)."""
    table = symbols.kernel()
    found: list[tuple[int, int, str]] = []
    ops = layouts.try_layout("struct ftrace_ops")
    head = table.address_of("ftrace_ops_trampoline_list")
    if ops is not None and head is not None and ops.has_field("trampoline_size"):
        walk = lists.for_each_entry(head, ops, "list",
                                    lambda v: (v.ptr("trampoline"), v.int("trampoline_size")),
                                    "ftrace_ops_trampoline_list")
        found += [(start, start + max(size, 1), "ftrace_trampoline")
                  for start, size in walk.items if start]
    insn_cache = layouts.try_layout("struct kprobe_insn_cache")
    page = layouts.try_layout("struct kprobe_insn_page")
    for slots in ("kprobe_insn_slots", "kprobe_optinsn_slots"):
        where = table.address_of(slots)
        if where is None or insn_cache is None or page is None:
            continue
        try:
            view = insn_cache.view(memory.read(where, insn_cache.size), where)
            sym_ptr = view.ptr("sym")
            name = layouts.printable(memory.read_cstring(sym_ptr, 64)) if sym_ptr else slots
        except KpError:
            continue
        walk = lists.for_each_entry(where + insn_cache.offset("pages"), page, "list",
                                    lambda v: v.ptr("insns"), slots)
        found += [(insns, insns + PAGE_SIZE, name) for insns in walk.items if insns]
    ksym = layouts.try_layout("struct bpf_ksym")
    head = table.address_of("bpf_kallsyms")
    if ksym is not None and head is not None:
        walk = lists.for_each_entry(head, ksym, "lnode",
                                    lambda v: (v.ptr("start"), v.ptr("end"), v.string("name")),
                                    "bpf_kallsyms")
        found += [item for item in walk.items if item[0]]
    return tuple(sorted(found))


def runtime_code_name(address: int) -> str | None:
    """The name /proc/kallsyms gives the run-time code holding `address` ("ftrace_trampoline",
    "kprobe_insn_page", "kprobe_optinsn_page", "bpf_trampoline_<key>", "bpf_prog_<tag>_<name>"),
    with +offset when inside; None when no such code holds it."""
    try:
        ranges = _runtime_code()
    except KpError:
        return None
    for start, end, name in ranges:
        if start <= address < end:
            return name if address == start else f"{name}+{address - start:#x}"
    return None


def runtime_code_symbol(address: int) -> str | None:
    """runtime_code_name() without the +offset: the name a backtrace gives the frame of a
    PC in that code ("ftrace_trampoline"), as it gives a symbol's."""
    name = runtime_code_name(address)
    return name.split("+", 1)[0] if name else None


def symbol_at(address: int) -> str | None:
    """The kernel-image symbol starting exactly at `address`, else None."""
    if not address or not symbols.in_kernel_image(address):
        return None
    found = symbols.kernel().lookup(address)
    return found[0] if found and found[1] == 0 else None


def code_name(address: int, modules: list[kmodules.Module]) -> str:
    """`symbol` / `symbol [module]` / runtime code name / hex, for details."""
    if not address:
        return "0"
    if symbols.in_kernel_image(address):
        found = symbols.kernel().lookup(address)
        if found:
            return found[0] if not found[1] else f"{found[0]}+{found[1]:#x}"
    runtime = runtime_code_name(address)       # exact allocations: before module ranges
    if runtime is not None:
        return runtime
    module = kmodules.module_for(address, modules)
    if module is not None:
        try:
            found = module.symbol(address)
        except KpError:
            found = None
        if found:
            text = found[0] if not found[1] else f"{found[0]}+{found[1]:#x}"
            return f"{text} [{module.name}]"
        return f"{address:#x} [{module.name}]"
    return f"{address:#x}"

