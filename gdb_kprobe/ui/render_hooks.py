"""kp-hooks as text: per function a heading (the function, its fentry site and what the site
calls now), then one line per kprobe (kprobes/list's type, place and flags, the mechanism, the
owner) and one per ftrace_ops (enabled_functions' view: kind, owner, callback), with the
perf events, BPF programs, details and owner warnings indented under each. No gdb calls.
"""
from __future__ import annotations

from gdb_kprobe.kernel.hooks import FunctionHooks, HooksReport, KprobeHook, OpsHook
from gdb_kprobe.ui.colour import PLAIN, Palette

__all__ = ["hooks_report", "function_heading", "kprobe_lines", "ops_lines"]

INDENT, SUB = "  ", "      "


def _place(hooks: FunctionHooks, address: int) -> str:
    function = hooks.function
    if function is None:
        return f"{address:#x}"
    offset = address - function.address
    text = f"{function.symbol}+{offset:#x}"
    return f"{text} [{function.module}]" if function.module else text


def function_heading(hooks: FunctionHooks, palette: Palette = PLAIN) -> str:
    """`vfs_read (0xffffffff8134d8f0): 2 kprobes, 3 ftrace_ops; fentry site +0x0: call ...`"""
    function = hooks.function
    if function is None:
        name = "(no symbol)"
    elif hooks.address != function.address:           # kp-hooks ADDRESS inside a function
        name = _place(hooks, hooks.address)
    else:
        name = str(function)
    counts = f"{len(hooks.kprobes)} kprobe{'s' if len(hooks.kprobes) != 1 else ''}, " \
             f"{len(hooks.ftrace_ops)} ftrace_ops"
    text = palette.heading(name) + f" ({palette.address(f'{hooks.address:#x}')}): {counts}"
    if hooks.ftrace_ip is not None:
        base = hooks.function.address if hooks.function is not None else hooks.address
        text += f"; fentry site +{hooks.ftrace_ip - base:#x}"
        site = hooks.site
        if site is not None:
            goal = ""
            if site.target is not None:
                goal = f" {site.target_name or f'{site.target:#x}'}"
            text += f": {palette.flag(site.kind)}{goal}"
    return text


def kprobe_lines(hooks: FunctionHooks, hook: KprobeHook, palette: Palette = PLAIN) -> list[str]:
    row, owner = hook.row, hook.owner
    flags = "".join(palette.flag(f"[{word}]") for word in row.listed_flags())
    head = f"{INDENT}kprobe {row.kind}  {_place(hooks, row.probe.addr)}  "
    head += f"{flags}  " if flags else ""
    mechanism = f"{hook.mechanism}  " if hook.mechanism else ""
    lines = [head + f"{mechanism}owner: {owner.text}"]
    lines += [f"{SUB}{event}" + (f"; {event.prog}" if event.prog else "")
              for event in owner.perf_events]
    lines += [f"{SUB}attached: {prog}" for prog in owner.bpf_progs
              if all(event.prog != prog for event in owner.perf_events)]
    lines += [f"{SUB}warning: {warning.note}" for warning in owner.details.warnings]
    lines += [f"{SUB}note: {note}" for note in owner.notes]
    return lines


SHOWN_ALREADY = ("func_name",)       # details the ops line itself says
ADDRESS_FLOOR = 1 << 48              # kernel addresses in hex, ids and counts in decimal


def _detail(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}" if value >= ADDRESS_FLOOR else str(value)
    if isinstance(value, dict):
        return " ".join(f"{key}={_detail(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        separator = "; " if any(isinstance(item, dict) for item in value) else ", "
        return separator.join(_detail(item) for item in value)
    return str(value)


def _detail_words(key: str, value: object) -> str:
    """`key: value` in the words kp-list -v uses: flags joined by |, no underscores."""
    if key == "flag_names" and isinstance(value, (list, tuple)):
        return f"flags: {'|'.join(map(str, value)) or '0'}"
    return f"{key.replace('_', ' ')}: {_detail(value)}"


def ops_lines(hook: OpsHook, palette: Palette = PLAIN) -> list[str]:
    ops = hook.ops
    func = hook.func_name or (f"{ops.func:#x}" if ops.func else "-")
    text = f"{INDENT}ftrace_ops {ops.kind}  owner: {ops.owner}  ops: {ops.address:#x}  " \
           f"func: {func}"
    if ops.filter_all:
        text += "  " + palette.flag("[ALL FUNCTIONS]")
    lines = [text]
    details = {key: value for key, value in ops.details.items() if key not in SHOWN_ALREADY}
    if details:
        lines.append(SUB + "  ".join(_detail_words(key, value)
                                     for key, value in details.items()))
    lines += [f"{SUB}warning: {warning.note}" for warning in hook.warnings]
    return lines


def hooks_report(report: HooksReport, palette: Palette = PLAIN) -> str:
    """kp-hooks: each function's block, a blank line between blocks; damage and notes last."""
    blocks = []
    for hooks in report.functions:
        lines = [function_heading(hooks, palette)]
        for hook in hooks.kprobes:
            lines += kprobe_lines(hooks, hook, palette)
        for ops in hooks.ftrace_ops:
            lines += ops_lines(ops, palette)
        blocks.append("".join(line + "\n" for line in lines))
    out = "\n".join(blocks)
    if report.target is None and not report.functions:
        out = "no function is hooked: no kprobe is registered and no ftrace_ops is on a " \
              "call site\n"
    out += "".join(f"!! damaged: {note}\n" for note in report.damage)
    out += "".join(f"note: {note}\n" for note in report.notes)
    return out
