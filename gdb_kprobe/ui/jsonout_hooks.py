"""kp-hooks --json: the same model objects ui/render_hooks.py prints, shaped with
ui/jsonout.py's conventions (docs/json.md, docs/schema/kp-hooks.json). No gdb calls, no colour.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe.kernel.hooks import FunctionHooks, HooksReport, KprobeHook, OpsHook
from gdb_kprobe.kernel.probe_owners import BpfProg, PerfEvent
from gdb_kprobe.ui.jsonout import head, hexed, probe_entry

__all__ = ["hooks_report", "detail_value"]

ADDRESS_FLOOR = 1 << 48          # an integer this large is a kernel address: a hex string


def _prog(prog: BpfProg | None) -> dict | None:
    if prog is None:
        return None
    return {"address": hexed(prog.address), "id": prog.id, "name": prog.name, "tag": prog.tag,
            "type": prog.type}


def _perf(event: PerfEvent) -> dict:
    return {"address": hexed(event.address), "id": event.id, "cpu": event.cpu,
            "owner_pid": event.owner_pid, "owner_comm": event.owner_comm,
            "task_pid": event.task_pid, "task_comm": event.task_comm,
            "bpf_prog": _prog(event.prog)}


def _kprobe(hook: KprobeHook, index: int) -> dict:
    owner = hook.owner
    entry = probe_entry(dataclasses.replace(hook.row, details=owner.details), index)
    entry["mechanism"] = hook.mechanism
    entry["owner"] = {"kind": owner.kind, "text": owner.text, "flagged": owner.flagged,
                      "perf_refcount": owner.perf_refcount,
                      "perf_events": [_perf(event) for event in owner.perf_events],
                      "bpf_progs": [_prog(prog) for prog in owner.bpf_progs],
                      "notes": list(owner.notes)}
    return entry


def detail_value(value: object) -> object:
    """A detail of an ftrace_ops as JSON: kernel addresses as hex strings, lists and dicts
    item by item, other numbers, booleans and strings as they are, anything else as text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hexed(value) if value >= ADDRESS_FLOOR else value
    if isinstance(value, (list, tuple)):
        return [detail_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): detail_value(item) for key, item in value.items()}
    return str(value)


def _ops(hook: OpsHook) -> dict:
    ops = hook.ops
    return {"ops": hexed(ops.address), "kind": ops.kind, "owner": ops.owner,
            "func": hexed(ops.func) if ops.func else None, "func_name": hook.func_name,
            "flags": ops.flags, "trampoline": hexed(ops.trampoline),
            "filter_all": ops.filter_all,
            "details": {str(key): detail_value(value) for key, value in ops.details.items()},
            "warnings": [{"pointer": w.pointer, "address": hexed(w.address), "region": w.region,
                          "note": w.note} for w in hook.warnings]}


def _function(hooks: FunctionHooks, index: int) -> dict:
    function = hooks.function
    site = hooks.site
    return {
        "function": None if function is None else {
            "address": hexed(function.address), "symbol": function.symbol,
            "module": function.module, "size": function.size},
        "address": hexed(hooks.address),
        "ftrace_ip": hexed(hooks.ftrace_ip),
        "site": None if site is None else {
            "ip": hexed(site.ip), "kind": site.kind, "target": hexed(site.target),
            "target_name": site.target_name, "words": site.words},
        "kprobes": [_kprobe(hook, index + n) for n, hook in enumerate(hooks.kprobes, 1)],
        "ftrace_ops": [_ops(hook) for hook in hooks.ftrace_ops],
    }


def hooks_report(report: HooksReport) -> dict:
    """kp-hooks: one object per function in address order; kprobes numbered through the
    whole document ("index")."""
    document = head("kp-hooks")
    document["target"] = report.target
    functions, index = [], 0
    for hooks in report.functions:
        functions.append(_function(hooks, index))
        index += len(hooks.kprobes)
    document["functions"] = functions
    document["damage"] = list(report.damage)
    document["notes"] = list(report.notes)
    return document
