"""The anatomy of the probes at one address, for kp-show.

Gathers from live memory: each probe's struct kprobe fields, its owner and
handlers, the aggregate (an optimized_kprobe when CONFIG_OPTPROBES), what is at
the probed address now versus in the vmlinux file and which mechanism that is,
the single-step copy (ainsn), kretprobe fields and instances, and each CPU's
current_kprobe / kprobe_ctlblk state.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kprobes, percpu, rethook
from gdb_kprobe.kernel.kallsyms import Location, Symbolizer
from gdb_kprobe.kernel.kprobes_list import Details, ProbeRow, details_for
from gdb_kprobe.kernel.places import Place
from gdb_kprobe.target import disasm, layouts, memory, symbols

__all__ = [
    "KPROBE_STATUS", "FieldValue", "Patch", "Optimized", "SingleStep", "CpuState",
    "ProbeAnatomy", "Anatomy", "Continuation", "gather", "optimized_probe",
    "optimized_region_covering", "refuse_inside_optimized", "continuation", "mechanism",
]

# include/linux/kprobes.h: kprobe_ctlblk.kprobe_status values
KPROBE_STATUS = {0: "idle", 1: "KPROBE_HIT_ACTIVE", 2: "KPROBE_HIT_SS", 4: "KPROBE_REENTER",
                 8: "KPROBE_HIT_SSDONE"}


@dataclasses.dataclass
class FieldValue:
    """One member of a `struct kprobe` as read now, with what it points at."""

    name: str
    value: int | list[tuple[str, int]]   # a scalar, or a struct's scalar members one level deep
    location: Location | None = None     # for code pointers
    string: str | None = None            # for char pointers


@dataclasses.dataclass
class Patch:
    """What is at the probed address: live bytes versus the file, and the mechanism."""

    mechanism: str                   # int3 | optprobe jmp | ftrace call | not patched | ...
    explanation: str
    live: list[disasm.Insn]
    original: list[disasm.Insn] | None
    target: int | None = None        # where a jmp/call goes
    target_location: Location | None = None


@dataclasses.dataclass
class Optimized:
    address: int                     # struct optimized_kprobe
    detour: int                      # optinsn.insn
    copied_size: int                 # optinsn.size: original bytes moved to the detour
    detour_code: list[disasm.Insn]


@dataclasses.dataclass
class SingleStep:
    slot: int                        # ainsn.insn (x86), ainsn.api.insn (arm64); 0: simulated
    size: int | None
    boostable: int | None
    insns: list[disasm.Insn]
    field: str = "ainsn.insn"        # the slot's struct kprobe member (arch.SLOT_FIELD)
    handler: int = 0                 # arm64 ainsn.api.handler: the simulate_*() function
    handler_location: Location | None = None


@dataclasses.dataclass
class CpuState:
    cpu: int
    current: int                     # struct kprobe *
    status: int
    is_this_probe: bool


@dataclasses.dataclass
class ProbeAnatomy:
    row: ProbeRow
    details: Details
    fields: list[FieldValue]
    instances: rethook.Instances | None
    trace_hits: int | None = None
    holders: rethook.Holders | None = None      # the instances in use, task by task


@dataclasses.dataclass
class Anatomy:
    address: int
    location: Location | None
    entry: kprobes.Kprobe              # the hash-table entry: the aggregate or the lone probe
    aggregate: bool
    probes: list[ProbeAnatomy]
    patch: Patch
    optimized: Optimized | None
    single_step: SingleStep | None
    saved_opcode: int
    cpus: list[CpuState]
    damage: list[str]
    modules: list                      # the modules loaded now (for symbol loading)


def _fields(probe: kprobes.Kprobe, symbolizer: Symbolizer) -> list[FieldValue]:
    """Every top-level field of struct kprobe, by its DWARF name; structs one level deep."""
    layout = layouts.layout("struct kprobe")
    view = layout.view(memory.read(probe.address, layout.size), probe.address)
    found = []
    for name in layout.field_names():
        field = layout.field(name)
        if field.is_scalar:
            value = view.int(name)
            location = symbolizer.lookup(value) if field.is_code_pointer and value else None
            string = None
            if field.is_char_pointer and value:
                try:
                    string = layouts.printable(memory.read_cstring(value, 128))
                except KpError:
                    string = "<unreadable>"
            found.append(FieldValue(name, value, location, string))
        else:
            members = [(sub, view.int(f"{name}.{sub}")) for sub in layout.member_names(name)
                       if layout.field(f"{name}.{sub}").is_scalar]
            found.append(FieldValue(name, members))
    return found


def _patch(entry: kprobes.Kprobe, symbolizer: Symbolizer, opt: Optimized | None) -> Patch:
    address = entry.addr
    original = disasm.original(address, 1)
    try:
        first = disasm.live(address, 1)
    except KpError:
        first = []
    kind = _mechanism(entry, first[0].raw if first else b"")
    if entry.gone:
        return Patch("not patched", "the probed code is gone (its module was unloaded)",
                     first, original)
    if entry.disabled:
        return Patch("not patched", "the probe is disabled: the code runs unmodified", first,
                     original)
    if kind == "optprobe jmp":
        goal = _rel32_target(first[0])
        explanation = ("the instruction(s) were replaced by a jmp to the detour buffer, which "
                       "saves pt_regs, calls optimized_callback(), runs the copied "
                       "instructions and jumps back")
        if opt is not None and goal != opt.detour:
            explanation += f" (but optinsn.insn is {opt.detour:#x}: inconsistent!)"
        return Patch("optprobe jmp", explanation, first, original, goal, symbolizer.lookup(goal))
    if kind == "ftrace call":
        goal = _rel32_target(first[0])
        where = symbolizer.lookup(goal)
        explanation = ("the function's fentry call site now calls an ftrace trampoline that "
                       "calls kprobe_ftrace_handler(); no int3, no single-step")
        if where is None:
            where = Location("ftrace trampoline (allocated at run time)", 0, 0, None)
        return Patch("ftrace call", explanation, first, original, goal, where)
    if kind == arch.TRAP_MECHANISM:
        return Patch(kind, arch.TRAP_EXPLANATION, first, original)
    return Patch("unexpected", "the live bytes are not what this probe's flags imply", first,
                 original)


def _mechanism(entry: kprobes.Kprobe, live: bytes) -> str:
    """What the live code at a probed address says, given the entry's flags (arch seam)."""
    if entry.gone or entry.disabled:
        return "not patched"
    return arch.site_mechanism(live, entry.optimized, entry.ftrace)


def mechanism(entry: kprobes.Kprobe) -> str:
    """kp-show's mechanism word (int3 or brk | optprobe jmp | ftrace call | not patched |
    unexpected) for the hash-table entry `entry`, from its live bytes: no disassembly."""
    try:
        live = memory.read(entry.addr, arch.SITE_BYTES)
    except KpError:
        live = b""
    return _mechanism(entry, live)


def _rel32_target(insn: disasm.Insn) -> int:
    displacement = int.from_bytes(insn.raw[1:5], "little", signed=True)
    return arch.u64(insn.address + arch.REL32_SIZE + displacement)


def optimized_probe(entry: kprobes.Kprobe) -> Optimized | None:
    layout = layouts.try_layout("struct optimized_kprobe")      # CONFIG_OPTPROBES only
    if layout is None or not entry.optimized:
        return None
    address = entry.address - layout.offset("kp")
    view = layout.view(memory.read(address, layout.size), address)
    detour = view.ptr("optinsn.insn")
    size = view.int("optinsn.size")
    detour_code: list[disasm.Insn] = []
    if detour:
        table = symbols.kernel()
        start = table.address_of("optprobe_template_entry")
        end = table.address_of("optprobe_template_end")
        template = (end - start) if start and end and end > start else 0x60
        # template, then the copied original instructions, then the jmp back
        detour_code = disasm.live(detour, count=None, end=detour + template + size + 5)
    return Optimized(address, detour, size, detour_code)


def optimized_region_covering(address: int) -> tuple[int, int] | None:
    """(probe address, bytes) of an optimized kprobe whose jmp covers `address` (but does
    not start there): such an address is never executed while the probe is optimized."""
    table = kprobes.read_table()
    for bucket in table.buckets:
        for entry in bucket.probes:
            if entry.optimized and entry.addr < address < entry.addr + 5 + 16:
                optimized = optimized_probe(entry)
                size = optimized.copied_size if optimized else 5
                if address < entry.addr + size:
                    return entry.addr, size
    return None


def _single_step(entry: kprobes.Kprobe, symbolizer: Symbolizer) -> SingleStep | None:
    layout = layouts.layout("struct kprobe")
    # the copy's member is the arch seam's (x86 ainsn.insn, arm64 ainsn.api.insn); x86's
    # ainsn.size: 6256e668b7af "x86/kprobes: Use int3 instead of debug trap for single-step"
    # (v5.13); ainsn.boostable a bitfield since abd82e533d88 "x86/kprobes: Do not decode
    # opcode in resume_execution()" (v5.12)
    if not layout.has_field(arch.SLOT_FIELD):
        return None
    view = layout.view(memory.read(entry.address, layout.size), entry.address)
    slot = view.ptr(arch.SLOT_FIELD)
    simulated = arch.SIMULATE_FIELD is not None and layout.has_field(arch.SIMULATE_FIELD)
    handler = view.ptr(arch.SIMULATE_FIELD) if simulated else 0
    if not slot:
        if not handler:
            return None
        return SingleStep(0, None, None, [], arch.SLOT_FIELD, handler, symbolizer.lookup(handler))
    size = view.int("ainsn.size") if layout.has_field("ainsn.size") else None
    boostable = view.int("ainsn.boostable") if layout.has_field("ainsn.boostable") else None
    return SingleStep(slot, size, boostable, disasm.live(slot, arch.slot_insns(boostable)),
                      arch.SLOT_FIELD)


def _cpu_states(ids: set[int]) -> list[CpuState]:
    currents = percpu.addresses("current_kprobe")
    blocks = percpu.addresses("kprobe_ctlblk")
    ctlblk = layouts.layout("struct kprobe_ctlblk")
    states = []
    for cpu, (current_at, block_at) in enumerate(zip(currents, blocks)):
        current = memory.read_u64(current_at)
        status = ctlblk.view(memory.read(block_at, ctlblk.size), block_at).int("kprobe_status")
        states.append(CpuState(cpu, current, status, current in ids))
    return states


def gather(address: int, table: kprobes.KprobeTable | None = None,
           symbolizer: Symbolizer | None = None) -> Anatomy:
    """Everything kp-show says about the probes registered at `address` (several places of
    one function share one snapshot of the table and one symbolizer)."""
    table = kprobes.read_table() if table is None else table
    symbolizer = Symbolizer() if symbolizer is None else symbolizer
    entry = kprobes.find_entry(table, address)
    if entry is None:
        raise KpError(f"no kprobe is registered at {address:#x}"
                      f"{' (' + str(symbolizer.lookup(address)) + ')' if symbolizer.lookup(address) else ''}; "
                      "kp-list shows the registered ones")
    aggregate = table.is_aggregate(entry)
    members = entry.children if aggregate else [entry]
    if not members:     # the kernel frees an aggregate with its last probe: damaged memory
        raise KpError(f"the aggregate kprobe at {address:#x} has no readable probe on its "
                      f"list ({entry.damage or 'the list is empty'}); kp-list shows where "
                      "kernel memory is damaged")
    probes = []
    for probe in members:
        kind = "r" if table.is_return_probe(probe) else "k"
        row = ProbeRow(probe, entry if aggregate else None, kind, symbolizer.lookup(probe.addr))
        details = details_for(row, table, symbolizer)
        instances = None
        if details.kretprobe is not None:
            instances = rethook.count(details.kretprobe.rethook, details.kretprobe.maxactive,
                                      details.kretprobe.address)
        hits = kprobes.trace_hits(details.event) if details.event else None
        held = None if details.kretprobe is None else rethook.holders(
            details.kretprobe.address, details.kretprobe.rethook, symbolizer.lookup)
        probes.append(ProbeAnatomy(row, details, _fields(probe, symbolizer), instances, hits,
                                   held))
    opt = optimized_probe(entry)
    damage = list(table.damage)
    try:
        cpus = _cpu_states({entry.address, *(p.address for p in members)})
    except KpError as exc:
        cpus = []
        damage.append(f"per-CPU state: {exc}")
    return Anatomy(address=address, location=symbolizer.lookup(address), entry=entry,
                   aggregate=aggregate, probes=probes, patch=_patch(entry, symbolizer, opt),
                   optimized=opt, single_step=_single_step(entry, symbolizer), saved_opcode=entry.opcode,
                   cpus=cpus, damage=damage, modules=symbolizer.modules)


# -- kp-sim and kp-locals: where a place runs while probes are live -----------------------

def refuse_inside_optimized(place: Place, advice: str) -> None:
    """KpError when `place` lies inside the bytes an optimized kprobe moved into its detour
    buffer: those bytes are part of its jmp and never run while it is optimized."""
    covering = optimized_region_covering(place.address)
    if covering is not None:
        start, size = covering
        raise KpError(f"{place} lies inside the {size} bytes that the optimized kprobe at "
                      f"{start:#x} moved into its detour buffer (the live bytes here are part "
                      f"of its jmp): execution never passes here while it is optimized; "
                      + advice.format(start=start))


@dataclasses.dataclass(frozen=True)
class Continuation:
    """Where execution resumes after the kernel ran a live probe (or ftrace call) at a place:
    a replay takes its post view there instead of single-stepping into the kernel's own
    probe machinery."""

    address: int
    why: str


def continuation(place: Place, original: disasm.Insn, live: disasm.Insn) -> Continuation | None:
    """None when the live code is the original (or a nop): single-stepping it is exact."""
    if live.raw == original.raw or live.asm.startswith("nop"):
        return None
    next_address = original.address + len(original.raw)
    trap = arch.probe_trap(live.raw)
    if trap == "optprobe jmp":
        entry = kprobes.find_entry(kprobes.read_table(), place.address)
        optimized = optimized_probe(entry) if entry is not None else None
        if optimized is not None:
            return Continuation(place.address + optimized.copied_size, (
                f"an optimized kprobe (jmp to its detour buffer at {optimized.detour:#x}): the "
                f"detour runs the {optimized.copied_size} original bytes it copied, so the "
                "post view comes after all of them"))
        return Continuation(next_address,
                            "a jmp (an optprobe or a jump label) replaces the original code")
    if trap == arch.TRAP_MECHANISM and (branch := arch.simulated_branch(original.raw)):
        raise KpError(f"kp-sim has no post view at {place} (`{original.asm}`): {branch}")
    if trap == arch.TRAP_MECHANISM:
        return Continuation(next_address, f"a real kprobe's {trap}: the kernel runs its handlers"
                            " and single-steps its copy; the post view is where it resumes")
    if trap == "ftrace call":
        return Continuation(next_address, "an ftrace call (an ftrace-based kprobe or tracer): "
                            "the trampoline runs and returns; the post view is after the call")
    refuse_inside_optimized(place, "simulate at {start:#x} instead")
    raise KpError(f"the live code at {place} ({live.asm}) differs from the vmlinux "
                  f"({original.asm}) in a way kp-sim does not know; not stepping into it")
