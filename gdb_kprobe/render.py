"""Text rendering of the model: no gdb calls here.

`debugfs_line()` reproduces report_probe() in kernel/kprobes.c byte for byte
("%px  %s  %s+0x%x  %s " then the flag words), so kp-list can be diffed against
/sys/kernel/debug/kprobes/list.
"""
from __future__ import annotations

from gdb_kprobe.kernel.kallsyms import Location
from gdb_kprobe.kernel.report import ProbeRow


def debugfs_line(row: ProbeRow) -> str:
    probe = row.probe
    if row.location is not None:
        loc = row.location
        head = f"{probe.addr:016x}  {row.kind}  {loc.symbol}+{loc.offset:#x}  " \
               f"{loc.module if loc.module else ' '} "
    else:
        head = f"{probe.addr:016x}  {row.kind}  {probe.addr:#x} "
    flags = row.flags_probe
    return head + ("[GONE]" if probe.gone else "") \
        + ("[DISABLED]" if probe.disabled and not probe.gone else "") \
        + ("[OPTIMIZED]" if flags.optimized else "") \
        + ("[FTRACE]" if flags.ftrace else "")


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


def probe_list(rows: list[ProbeRow], damage: list[str]) -> str:
    out = []
    for row in rows:
        out.append(debugfs_line(row))
        out.extend(verbose_lines(row))
    for note in damage:
        out.append(f"warning: damaged list: {note}")
    return "".join(line + "\n" for line in out)
