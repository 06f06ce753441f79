"""The anatomy of the probes at one address, for kp-show.

Gathers from live memory: each probe's struct kprobe fields, its owner and
handlers, the aggregate (an optimized_kprobe when CONFIG_OPTPROBES), what is at
the probed address now versus in the vmlinux file and which mechanism that is,
the single-step copy (ainsn), kretprobe fields and instances, and each CPU's
current_kprobe / kprobe_ctlblk state.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe import code, symbols, target, types
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kprobes, percpu, rethook
from gdb_kprobe.kernel.kallsyms import Location, Symbolizer
from gdb_kprobe.kernel.report import Details, ProbeRow, details_for

# include/linux/kprobes.h: kprobe_ctlblk.kprobe_status values
KPROBE_STATUS = {0: "idle", 1: "KPROBE_HIT_ACTIVE", 2: "KPROBE_HIT_SS", 4: "KPROBE_REENTER",
                 8: "KPROBE_HIT_SSDONE"}

JMP32, CALL32, INT3 = 0xE9, 0xE8, 0xCC


@dataclasses.dataclass
class Field:
    name: str
    value: int | list[tuple[str, int]]   # a scalar, or a struct's scalar members one level deep
    location: Location | None = None     # for code pointers
    string: str | None = None            # for char pointers


@dataclasses.dataclass
class Patch:
    """What is at the probed address: live bytes versus the file, and the mechanism."""

    mechanism: str                   # int3 | optprobe jmp | ftrace call | not patched | ...
    explanation: str
    live: list[code.Insn]
    original: list[code.Insn] | None
    target: int | None = None        # where a jmp/call goes
    target_location: Location | None = None


@dataclasses.dataclass
class Optimized:
    address: int                     # struct optimized_kprobe
    detour: int                      # optinsn.insn
    copied_size: int                 # optinsn.size: original bytes moved to the detour
    detour_code: list[code.Insn]


@dataclasses.dataclass
class SingleStep:
    slot: int                        # ainsn.insn
    size: int | None
    boostable: int | None
    insns: list[code.Insn]


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
    fields: list[Field]
    instances: rethook.Instances | None
    trace_hits: int | None = None


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


def find_entry(table: kprobes.KprobeTable, address: int) -> kprobes.Kprobe | None:
    for bucket in table.buckets:
        for probe in bucket.probes:
            if probe.addr == address:
                return probe
    return None


def _fields(probe: kprobes.Kprobe, symbolizer: Symbolizer) -> list[Field]:
    """Every top-level field of struct kprobe, by its DWARF name; structs one level deep."""
    layout = types.layout("struct kprobe")
    view = layout.view(target.read(probe.address, layout.size), probe.address)
    found = []
    for name in layout.field_names():
        field = layout.field(name)
        if field.is_scalar:
            value = view.int(name)
            location = symbolizer.lookup(value) if field.is_code_pointer and value else None
            string = None
            if field.is_char_pointer and value:
                try:
                    string = types.printable(target.read_cstring(value, 128))
                except KpError:
                    string = "<unreadable>"
            found.append(Field(name, value, location, string))
        else:
            members = [(sub, view.int(f"{name}.{sub}")) for sub in layout.member_names(name)
                       if layout.field(f"{name}.{sub}").is_scalar]
            found.append(Field(name, members))
    return found


def _patch(entry: kprobes.Kprobe, symbolizer: Symbolizer, opt: Optimized | None) -> Patch:
    address = entry.addr
    original = code.original(address, 1)
    try:
        first = code.live(address, 1)
    except KpError:
        first = []
    live_byte = first[0].raw[0] if first else None
    if entry.gone:
        return Patch("not patched", "the probed code is gone (its module was unloaded)",
                     first, original)
    if entry.disabled:
        return Patch("not patched", "the probe is disabled: the code runs unmodified", first,
                     original)
    if live_byte == JMP32 and entry.optimized:
        goal = _rel32_target(first[0])
        explanation = ("the instruction(s) were replaced by a jmp to the detour buffer, which "
                       "saves pt_regs, calls optimized_callback(), runs the copied "
                       "instructions and jumps back")
        if opt is not None and goal != opt.detour:
            explanation += f" (but optinsn.insn is {opt.detour:#x}: inconsistent!)"
        return Patch("optprobe jmp", explanation, first, original, goal, symbolizer.lookup(goal))
    if live_byte == CALL32 and entry.ftrace:
        goal = _rel32_target(first[0])
        where = symbolizer.lookup(goal)
        explanation = ("the function's fentry call site now calls an ftrace trampoline that "
                       "calls kprobe_ftrace_handler(); no int3, no single-step")
        if where is None:
            where = Location("ftrace trampoline (allocated at run time)", 0, 0, None)
        return Patch("ftrace call", explanation, first, original, goal, where)
    if live_byte == INT3:
        return Patch("int3", "the first byte is now int3: the CPU traps into kprobe_int3_handler(), "
                     "which runs the pre_handler, single-steps the copy in ainsn.insn, then "
                     "the post_handler", first, original)
    return Patch("unexpected", "the live bytes are not what this probe's flags imply", first,
                 original)


def _rel32_target(insn: code.Insn) -> int:
    displacement = int.from_bytes(insn.raw[1:5], "little", signed=True)
    return (insn.address + 5 + displacement) & ((1 << 64) - 1)


def optimized_probe(entry: kprobes.Kprobe) -> Optimized | None:
    layout = types.try_layout("struct optimized_kprobe")
    if layout is None or not entry.optimized:
        return None
    address = entry.address - layout.offset("kp")
    view = layout.view(target.read(address, layout.size), address)
    detour = view.ptr("optinsn.insn")
    size = view.int("optinsn.size")
    detour_code: list[code.Insn] = []
    if detour:
        table = symbols.kernel()
        start = table.address_of("optprobe_template_entry")
        end = table.address_of("optprobe_template_end")
        template = (end - start) if start and end and end > start else 0x60
        # template, then the copied original instructions, then the jmp back
        detour_code = code.live(detour, count=None, end=detour + template + size + 5)
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


def _single_step(entry: kprobes.Kprobe) -> SingleStep | None:
    layout = types.layout("struct kprobe")
    if not layout.has_field("ainsn.insn"):
        return None
    view = layout.view(target.read(entry.address, layout.size), entry.address)
    slot = view.ptr("ainsn.insn")
    if not slot:
        return None
    size = view.int("ainsn.size") if layout.has_field("ainsn.size") else None
    boostable = view.int("ainsn.boostable") if layout.has_field("ainsn.boostable") else None
    count = 2 if boostable else 1            # a boosted copy ends with a jmp back
    return SingleStep(slot, size, boostable, code.live(slot, count))


def _cpu_states(ids: set[int]) -> list[CpuState]:
    currents = percpu.addresses("current_kprobe")
    blocks = percpu.addresses("kprobe_ctlblk")
    ctlblk = types.layout("struct kprobe_ctlblk")
    states = []
    for cpu, (current_at, block_at) in enumerate(zip(currents, blocks)):
        current = target.read_u64(current_at)
        status = ctlblk.view(target.read(block_at, ctlblk.size), block_at).int("kprobe_status")
        states.append(CpuState(cpu, current, status, current in ids))
    return states


def gather(address: int) -> Anatomy:
    """Everything kp-show says about the probes registered at `address`."""
    table = kprobes.read_table()
    symbolizer = Symbolizer()
    entry = find_entry(table, address)
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
            instances = rethook.count(details.kretprobe.rethook, details.kretprobe.maxactive)
        hits = kprobes.trace_hits(details.event) if details.event else None
        probes.append(ProbeAnatomy(row, details, _fields(probe, symbolizer), instances, hits))
    opt = optimized_probe(entry)
    damage = list(table.damage)
    try:
        cpus = _cpu_states({entry.address, *(p.address for p in members)})
    except KpError as exc:
        cpus = []
        damage.append(f"per-CPU state: {exc}")
    return Anatomy(address=address, location=symbolizer.lookup(address), entry=entry,
                   aggregate=aggregate, probes=probes, patch=_patch(entry, symbolizer, opt),
                   optimized=opt, single_step=_single_step(entry), saved_opcode=entry.opcode,
                   cpus=cpus, damage=damage, modules=symbolizer.modules)
