"""Text rendering of the model: no gdb calls here.

`debugfs_line()` reproduces report_probe() in kernel/kprobes.c byte for byte
("%px  %s  %s+0x%x  %s " then the flag words), so kp-list can be diffed against
/sys/kernel/debug/kprobes/list.
"""
from __future__ import annotations

from gdb_kprobe.ui.colour import PLAIN, Palette
from gdb_kprobe.kernel.anatomy import KPROBE_STATUS
from gdb_kprobe.kernel.kallsyms import Location
from gdb_kprobe.kernel.kprobes_list import ProbeRow

__all__ = ["debugfs_line", "verbose_lines", "probe_list", "probe_anatomy", "probes_shown",
           "module_list", "verdict", "blacklist", "kaslr"]


def debugfs_line(row: ProbeRow, palette: Palette = PLAIN) -> str:
    """One kprobes/list line; with PLAIN (colour off) byte-identical to debugfs."""
    probe = row.probe
    address = palette.address(f"{probe.addr:016x}")
    loc = row.location
    if loc is not None:
        head = f"{address}  {row.kind}  {loc.symbol}+{loc.offset:#x}  {loc.module or ' '} "
    else:
        head = f"{address}  {row.kind}  {probe.addr:#x} "
    words = row.listed_flags()
    return head + "".join([palette.flag(f"[{word}]") for word in words]) if words else head


def _where(location: Location | None, address: int) -> str:
    if not address:
        return "-"
    if location is None:
        return f"{address:#x}"
    name = location.symbol if location.offset == 0 else f"{location.symbol}+{location.offset:#x}"
    return f"{name} [{location.module}]" if location.module else name


def verbose_lines(row: ProbeRow) -> list[str]:
    details = row.details
    if details is None:
        return []
    probe = row.probe
    flags = "|".join(probe.flag_names()) or "0"
    lines = [f"    owner: {details.owner}  struct kprobe: {probe.address:#x}  "
             f"flags: {flags}  nmissed: {probe.nmissed}"]
    lines += [f"    warning: {warning.note}" for warning in details.warnings]
    if details.kretprobe is not None:
        kret = details.kretprobe
        lines.append(f"    handler: {_where(details.ret_handler, kret.handler)}  "
                     f"entry_handler: {_where(details.entry_handler, kret.entry_handler)}  "
                     f"maxactive: {kret.maxactive}  nmissed: {kret.nmissed}  "
                     f"data_size: {kret.data_size}")
    else:
        lines.append(f"    pre_handler: {_where(details.pre_handler, probe.pre_handler)}  "
                     f"post_handler: {_where(details.post_handler, probe.post_handler)}")
    return lines


def probe_list(rows, numbered: bool = False, palette: Palette = PLAIN) -> str:
    """kprobes/list lines; a damaged list gets a `!! damaged:` line where it breaks."""
    out = []
    index = 0
    for row in rows:
        if not isinstance(row, ProbeRow):
            out.append(f"!! damaged: {row.note}")
            continue
        index += 1
        line = debugfs_line(row, palette)
        out.append(f"#{index:<3} {line}" if numbered else line)
        if row.details is not None:
            out.extend(verbose_lines(row))
    return "".join(line + "\n" for line in out)


# -- kp-show ------------------------------------------------------------------------------

def _insn_lines(insns, palette: Palette, indent: str = "      ",
                marker: dict | None = None) -> list[str]:
    lines = []
    for insn in insns:
        raw = " ".join(f"{b:02x}" for b in insn.raw)
        note = (marker or {}).get(insn.address, "")
        address = palette.address(f"{insn.address:016x}")
        lines.append(f"{indent}{address}:  {raw:<24} {palette.asm(insn.asm)}{note}")
    return lines


def _field_value(field) -> str:
    if isinstance(field.value, list):
        return "{" + ", ".join(f"{name}={_number(value)}" for name, value in field.value) + "}"
    text = _number(field.value)
    if field.location is not None:
        text += f"  <{_where(field.location, field.value)}>"
    if field.string is not None:
        text += f'  "{field.string}"'
    return text


def _number(value: int) -> str:
    return f"{value:#x}" if value > 9 else str(value)


def probe_anatomy(anatomy, palette: Palette = PLAIN) -> str:
    """kp-show: the code at the place, each probe's structs, the per-CPU state."""
    out = _code_section(anatomy, palette)
    count = len(anatomy.probes)
    for index, probe in enumerate(anatomy.probes, start=1):
        out.append("")
        out.extend(_probe_section(index, count, probe, palette))
    out.append("")
    out.extend(_cpu_section(anatomy, palette))
    return "".join(line + "\n" for line in out)


def _code_section(anatomy, palette: Palette) -> list[str]:
    """The heading, the mechanism, file vs. live code, the single-step copy and the detour."""
    out = []
    place = str(anatomy.location) if anatomy.location else f"{anatomy.address:#x}"
    count = len(anatomy.probes)
    kinds = "aggregate of " if anatomy.aggregate else ""
    out.append(palette.heading(f"{place} ({anatomy.address:#x}): {kinds}{count} "
                              f"probe{'s' if count != 1 else ''}"))
    patch = anatomy.patch
    out.append(f"  mechanism: {palette.flag(patch.mechanism)}: {patch.explanation}")
    if patch.original is not None:
        out.append("  vmlinux file:")
        out.extend(_insn_lines(patch.original, palette))
    else:
        out.append("  vmlinux file: (not in the kernel image: module code)")
    out.append("  live memory:")
    goal = ""
    if patch.target is not None:
        goal = f"   -> {_where(patch.target_location, patch.target)}"
    out.extend(_insn_lines(patch.live, palette, marker={i.address: goal for i in patch.live[:1]}))
    out.append(f"  saved opcode (kprobe.opcode): {anatomy.saved_opcode:#04x}")
    step = anatomy.single_step
    if step is None:
        out.append("  single-step copy (ainsn.insn): none (ftrace-based probes are not single-"
                   "stepped)")
    elif not step.slot:
        out.append(f"  single-step copy ({step.field}): none: simulated by "
                   f"{_where(step.handler_location, step.handler)} (ainsn.api.handler; the "
                   "instruction reads the pc, so it cannot run from a slot)")
    else:
        extra = []
        if step.size is not None:
            extra.append(f"size {step.size}")
        if step.boostable is not None:
            extra.append(f"boostable {step.boostable}")
        out.append(f"  single-step copy ({step.field} @ {step.slot:#x}"
                   f"{', ' if extra else ''}{', '.join(extra)}):")
        out.extend(_insn_lines(step.insns, palette))
    opt = anatomy.optimized
    if opt is not None:
        out.append(f"  optprobe detour buffer (optinsn.insn @ {opt.detour:#x}; {opt.copied_size} "
                   f"bytes of original instructions copied to its end):")
        out.extend(_insn_lines(opt.detour_code, palette))
    if anatomy.aggregate:
        out.append(f"  aggregate: struct kprobe @ {anatomy.entry.address:#x} "
                   f"(pre_handler aggr_pre_handler), flags "
                   f"{'|'.join(anatomy.entry.flag_names()) or '0'}")
    return out


def _probe_section(index: int, count: int, probe, palette: Palette) -> list[str]:
    """One probe of the place: owner, trace event counts, struct kprobe, struct kretprobe."""
    out = []
    kind = "return probe (kretprobe)" if probe.row.kind == "r" else "kprobe"
    out.append(palette.heading(f"probe {index} of {count}: {kind}, owner: "
                              f"{probe.details.owner}"))
    out += [f"  warning: {warning.note}" for warning in probe.details.warnings]
    kret = probe.details.kretprobe
    if probe.details.event is not None:
        hits = "?" if probe.trace_hits is None else probe.trace_hits
        misses = probe.row.probe.nmissed + (kret.nmissed if kret else 0)
        out.append(f"  trace event {probe.details.event.name}: struct trace_kprobe @ "
                   f"{probe.details.event.address:#x}, hits {hits}, misses {misses} "
                   "(as kprobe_profile counts them)")
    out.append(f"  struct kprobe @ {probe.row.probe.address:#x}")
    width = max(len(f.name) for f in probe.fields)
    for field in probe.fields:
        value = _field_value(field)
        if field.name == "flags":
            value += f"  ({'|'.join(probe.row.probe.flag_names()) or 'none'})"
        out.append(f"    {field.name:<{width}}  {value}")
    if kret is not None:
        out.extend(_kretprobe_lines(probe, kret))
    return out


def _kretprobe_lines(probe, kret) -> list[str]:
    out = [f"  struct kretprobe @ {kret.address:#x}",
           f"    handler        {_where(probe.details.ret_handler, kret.handler)}",
           f"    entry_handler  {_where(probe.details.entry_handler, kret.entry_handler)}",
           f"    maxactive      {kret.maxactive}",
           f"    nmissed        {kret.nmissed}",
           f"    data_size      {kret.data_size}"]
    inst = probe.instances
    if kret.rethook:
        usage = "unknown"
        if inst is not None and inst.in_use is not None:
            usage = f"{inst.in_use} in use, {inst.free} free of {inst.total}"
        out.append(f"    rethook        {kret.rethook:#x}  instances: {usage} "
                   f"({inst.pool if inst else '?'})")
    elif inst is not None and inst.total is not None:
        # no rethook (arm64 6.1): the kretprobe's own freelist of kretprobe_instance
        out.append(f"    instances      {inst.in_use} in use, {inst.free} free of {inst.total} "
                   f"({inst.pool})")
    held = probe.holders
    if held is not None and held.holders:
        out.append(f"    in use ({held.where}):")
        for holder in held.holders:
            out.append(f"      {holder.name}: returns to "
                       f"{_where(holder.location, holder.ret_addr)} "
                       f"(frame {holder.frame:#x})")
    for note in held.damage if held is not None else ():
        out.append(f"    warning: {note}")
    return out


def _cpu_section(anatomy, palette: Palette) -> list[str]:
    out = [palette.heading("per-CPU kprobe state (current_kprobe, kprobe_ctlblk.kprobe_status):")]
    if not anatomy.cpus:
        out.append("  unavailable")
    for cpu in anatomy.cpus:
        status = KPROBE_STATUS.get(cpu.status, f"{cpu.status:#x}?")
        if not cpu.current:
            # kprobe_status keeps its last value once handling is over
            out.append(f"  cpu{cpu.cpu}: not handling a kprobe (current_kprobe NULL; "
                       f"last kprobe_status {status})")
            continue
        this = "  <- this probe" if cpu.is_this_probe else ""
        out.append(f"  cpu{cpu.cpu}: current_kprobe {cpu.current:#x}, {status}{this}")
    for note in anatomy.damage:
        out.append(f"warning: {note}")
    return out


def probes_shown(shown, palette: Palette = PLAIN) -> str:
    """kp-show: each place's anatomy; for a whole function a count first, for one place a
    last line naming the function's probes elsewhere."""
    out = []
    if shown.whole_function:
        count = shown.probe_count
        kinds = [(place.address, probe.row.kind) for place in shown.places
                 for probe in place.probes]
        out.append(palette.heading(f"{shown.function}: {count} probe{'s' if count != 1 else ''} "
                                   f"in the function, at "
                                   f"{_offsets(kinds, shown.function.address)}") + "\n\n")
    out.append("\n".join(probe_anatomy(place, palette) for place in shown.places))
    out.extend(f"warning: {note}\n" for note in shown.damage)
    if shown.others:
        kinds = [(row.probe.addr, row.kind) for row in shown.others]
        out.append(f"also in {shown.function}: {_offsets(kinds, shown.function.address)}; "
                   f"kp-show {shown.function.spec} shows every probe in it\n")
    return "".join(out)


def _offsets(kinds: list[tuple[int, str]], start: int) -> str:
    """`+0x0 (kretprobe, kprobe) and +0x7 (kprobe)`: each address once, its probes' kinds."""
    counts: dict[int, dict[str, int]] = {}
    for address, kind in kinds:
        counted = counts.setdefault(address - start, {})
        name = "kretprobe" if kind == "r" else "kprobe"
        counted[name] = counted.get(name, 0) + 1
    parts = [f"+{offset:#x} (" + ", ".join(name if n == 1 else f"{n} {name}s"
                                           for name, n in counted.items()) + ")"
             for offset, counted in counts.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def module_list(rows, damage: list[str]) -> str:
    out = [f"{'module':<24} {'struct module':<18} {'text':<18} {'size':>8}  symbols"]
    for module, path, state in rows:
        base, size = module.ranges[0] if module.ranges else (0, 0)
        symbols = f"{path} ({state})" if path and state else (path or "no .ko in the search path")
        out.append(f"{module.name:<24} {module.address:#018x} {base:#018x} {size:>8}  {symbols}")
    for note in damage:
        out.append(f"warning: damaged list: {note}")
    return "".join(line + "\n" for line in out)


# -- kp-check / kp-blacklist ----------------------------------------------------------------

NOT_EXPRESSIBLE = ("not asked: a module hands register_kprobe() a symbol and an unsigned int "
                   "offset, or an address, and %return is register_kretprobe()'s")


def _answer(answer) -> str:
    if answer is None:
        return NOT_EXPRESSIBLE
    if answer.accepted:
        return "accepted"
    return f"rejected: -{answer.errno_name} ({answer.errno_text}): {answer.reason}"


def verdict(result) -> str:
    """kp-check: the place as the kernel resolves it, then each interface's answer."""
    where = f" -> {result.place} ({result.address:#x})" if result.address is not None else ""
    lines = [f"{result.spec}{where}",
             f"  register_kprobe(): {_answer(result.register_kprobe)}",
             f"  kprobe_events:     {_answer(result.kprobe_events)}"]
    lines += [f"  {note}" for note in result.notes]
    return "".join(line + "\n" for line in lines)


def blacklist(rows, damage: list[str]) -> str:
    """kprobe_blacklist_seq_show(): "0x%px-0x%px\\t%ps\\n"."""
    out = []
    for entry, location in rows:
        name = f"{entry.start:#x}" if location is None else (
            f"{location.symbol} [{location.module}]" if location.module else location.symbol)
        out.append(f"0x{entry.start:016x}-0x{entry.end:016x}\t{name}")
    out.extend(f"warning: damaged list: {note}" for note in damage)
    return "".join(line + "\n" for line in out)


def kaslr(state) -> str:
    """kp-kaslr: whether the symbols describe the running kernel, or by how much to shift."""
    if state.state == "relocated":
        return f"kp-kaslr: symbols relocated by {state.slide:#x}\n"
    if state.state == "moved":
        return (f"kp-kaslr: KASLR moved the kernel by {state.slide:#x} from the vmlinux's "
                "addresses; `kp-kaslr --relocate` shifts the symbols\n")
    where = "no KASLR slide" if not state.bias else f"relocated by {state.bias:#x}"
    return f"kp-kaslr: the symbol file matches the running kernel ({where}): {state.banner}\n"
