"""JSON output of kp-list, kp-show, kp-locals and kp-check: the same model objects the text
renderer gets, shaped into plain dicts. No gdb calls here, and never colour. The other
commands' documents (ui/jsonout_listings.py, ui/jsonout_stop.py) use the helpers here.

Conventions (docs/json.md; JSON Schemas in docs/schema/):
- every document starts with "schema" (the command) and "version" (an integer bumped
  when a field is removed or changes meaning; new fields may appear without a bump);
- addresses, pointers and raw struct field values are strings, "0x" + lower-case hex
  (64-bit kernel addresses do not fit the 2**53 integers JavaScript and older jq keep
  exactly); counts, sizes, offsets and flag words are numbers, booleans or strings;
- a code location is {"address", "symbol", "offset", "module"}; symbol/offset/module
  are null when no symbol covers the address; a NULL pointer is null;
- keys come in a fixed order (the order they are built in) and the document is one line.
"""
from __future__ import annotations

import json

from gdb_kprobe.kernel.anatomy import KPROBE_STATUS
from gdb_kprobe.kernel.kallsyms import Location
from gdb_kprobe.kernel.kprobes_list import Details, ProbeRow

__all__ = ["VERSION", "dumps", "hexed", "head", "located", "instructions", "probe_entry",
           "probe_list", "probe_anatomy", "probes_shown", "locals_report", "verdicts", "answer"]

VERSION = 1


def dumps(document: dict) -> str:
    """One line of JSON and a newline: ready for `pipe kp-list --json | jq`."""
    return json.dumps(document, ensure_ascii=True) + "\n"


def hexed(value: int | None) -> str | None:
    """An address or raw value as "0x..." (None stays None)."""
    return None if value is None else f"{value:#x}"


def head(command: str) -> dict:
    """The start of every document: which command, which version of its fields."""
    return {"schema": command, "version": VERSION}


def located(address: int, location: Location | None) -> dict:
    """The four location keys: the address and the kallsyms symbol+offset [module] of it."""
    return {"address": hexed(address),
            "symbol": location.symbol if location else None,
            "offset": location.offset if location else None,
            "module": location.module if location else None}


def _pointer(address: int, location: Location | None) -> dict | None:
    """A code pointer: null when NULL, else where it points."""
    return located(address, location) if address else None


def _owner(details: Details) -> dict:
    """kernel/owners.Owner: kind and name; where (address, region) for the kinds that are
    not a trace event, a module or the kernel image."""
    owner = details.owner
    shaped = {"kind": owner.kind, "name": owner.name}
    if owner.address is not None:
        shaped.update({"address": hexed(owner.address), "region": owner.region,
                       "text": str(owner)})
    return shaped


def _warnings(details: Details) -> list[dict]:
    return [{"pointer": w.pointer, "address": hexed(w.address), "region": w.region,
             "note": w.note} for w in details.warnings]


def _details(row: ProbeRow, details: Details | None) -> dict | None:
    if details is None:
        return None
    probe = row.probe
    kret = details.kretprobe
    return {
        "owner": _owner(details),
        "trace_event": None if details.event is None else {
            "name": details.event.name, "trace_kprobe": hexed(details.event.address)},
        "kprobe_flags": probe.flags,
        "kprobe_flag_names": probe.flag_names(),
        "nmissed": probe.nmissed,
        "pre_handler": _pointer(probe.pre_handler, details.pre_handler),
        "post_handler": _pointer(probe.post_handler, details.post_handler),
        "kretprobe": None if kret is None else {
            "address": hexed(kret.address),
            "handler": _pointer(kret.handler, details.ret_handler),
            "entry_handler": _pointer(kret.entry_handler, details.entry_handler),
            "maxactive": kret.maxactive,
            "nmissed": kret.nmissed,
            "data_size": kret.data_size,
            "rethook": hexed(kret.rethook) if kret.rethook else None,
        },
        "warnings": _warnings(details),
    }


# -- kp-list --------------------------------------------------------------------------------

def probe_entry(row: ProbeRow, index: int) -> dict:
    """One kprobes/list line as an object; `index` is kp-list -n's N (kp-show #N)."""
    entry = {"index": index, "type": row.kind}
    entry.update(located(row.probe.addr, row.location))
    entry["flags"] = row.listed_flags()
    entry["kprobe"] = hexed(row.probe.address)
    entry["aggregate"] = hexed(row.aggregate.address) if row.aggregate else None
    entry["details"] = _details(row, row.details)
    return entry


def probe_list(rows) -> dict:
    """kp-list: probes in debugfs order; damage notes say after how many probes they came."""
    probes, damage = [], []
    for row in rows:
        if isinstance(row, ProbeRow):
            probes.append(probe_entry(row, len(probes) + 1))
        else:
            damage.append({"after": len(probes), "note": row.note})
    document = head("kp-list")
    document["probes"] = probes
    document["damage"] = damage
    return document


# -- kp-show --------------------------------------------------------------------------------

def instructions(insns) -> list[dict]:
    """Instructions as {"address", "bytes" (hex, no spaces), "asm"}."""
    return [{"address": hexed(insn.address), "bytes": insn.raw.hex(), "asm": insn.asm}
            for insn in insns]


def _field(field) -> dict:
    if isinstance(field.value, list):
        return {"name": field.name, "value": None,
                "members": [{"name": name, "value": hexed(value)} for name, value in field.value],
                "location": None, "string": None}
    location = None if field.location is None else {
        "symbol": field.location.symbol, "offset": field.location.offset,
        "module": field.location.module}
    return {"name": field.name, "value": hexed(field.value), "members": None,
            "location": location, "string": field.string}


def _probe_anatomy(index: int, probe) -> dict:
    row, details = probe.row, probe.details
    entry = {"index": index, "type": row.kind}
    entry.update(located(row.probe.addr, row.location))
    entry["flags"] = row.listed_flags()
    entry["kprobe"] = hexed(row.probe.address)
    entry["details"] = _details(row, details)     # kp-show keeps them beside the row
    # a trace event's counts as kprobe_profile shows them (render.probe_anatomy says the same)
    kret = details.kretprobe
    entry["trace_hits"] = probe.trace_hits if details.event is not None else None
    entry["trace_misses"] = row.probe.nmissed + (kret.nmissed if kret else 0) \
        if details.event is not None else None
    instances = probe.instances
    entry["instances"] = None if instances is None else {
        "total": instances.total, "free": instances.free, "in_use": instances.in_use,
        "pool": instances.pool}
    if instances is not None and probe.holders is not None and probe.holders.holders:
        entry["instances"]["holders"] = [
            {"task": hexed(h.task), "name": h.name, "ret_addr": located(h.ret_addr, h.location),
             "frame": hexed(h.frame)} for h in probe.holders.holders]
    entry["fields"] = [_field(field) for field in probe.fields]
    return entry


def probe_anatomy(anatomy) -> dict:
    """kp-show: what render.probe_anatomy() prints, as data."""
    document = head("kp-show")
    document.update(located(anatomy.address, anatomy.location))
    document["aggregate"] = None if not anatomy.aggregate else {
        "kprobe": hexed(anatomy.entry.address), "kprobe_flags": anatomy.entry.flags,
        "kprobe_flag_names": anatomy.entry.flag_names()}
    patch = anatomy.patch
    document["mechanism"] = patch.mechanism
    document["explanation"] = patch.explanation
    document["original"] = None if patch.original is None else instructions(patch.original)
    document["live"] = instructions(patch.live)
    document["jump_target"] = None if patch.target is None else \
        located(patch.target, patch.target_location)
    document["saved_opcode"] = anatomy.saved_opcode
    step = anatomy.single_step
    document["single_step"] = None if step is None else {
        "slot": hexed(step.slot), "size": step.size, "boostable": step.boostable,
        "insns": instructions(step.insns)}
    if step is not None and step.handler:           # arm64: simulated, no slot
        document["single_step"]["simulated_by"] = located(step.handler, step.handler_location)
    opt = anatomy.optimized
    document["optimized"] = None if opt is None else {
        "optimized_kprobe": hexed(opt.address), "detour": hexed(opt.detour),
        "copied_size": opt.copied_size, "insns": instructions(opt.detour_code)}
    document["probes"] = [_probe_anatomy(index, probe)
                          for index, probe in enumerate(anatomy.probes, start=1)]
    document["cpus"] = [{"cpu": cpu.cpu, "current_kprobe": hexed(cpu.current) if cpu.current
                         else None,
                         "kprobe_status": cpu.status,
                         "kprobe_status_name": KPROBE_STATUS.get(cpu.status),
                         "this_probe": cpu.is_this_probe} for cpu in anatomy.cpus]
    document["damage"] = list(anatomy.damage)
    return document


def probes_shown(shown) -> dict:
    """kp-show: the first place's keys as version 1 had them, then the function, every place
    shown (a whole function: all of them) and the function's probes elsewhere."""
    document = probe_anatomy(shown.places[0])
    document["damage"] += shown.damage
    function = shown.function
    document["function"] = None if function is None else {
        "address": hexed(function.address), "symbol": function.symbol,
        "module": function.module, "size": function.size}
    document["whole_function"] = shown.whole_function
    document["places"] = []
    for place in shown.places:
        entry = probe_anatomy(place)
        del entry["schema"], entry["version"]
        document["places"].append(entry)
    document["also_in_function"] = [_elsewhere(row) for row in shown.others]
    return document


def _elsewhere(row: ProbeRow) -> dict:
    entry = {"type": row.kind}
    entry.update(located(row.probe.addr, row.location))
    entry["flags"] = row.listed_flags()
    entry["kprobe"] = hexed(row.probe.address)
    entry["aggregate"] = hexed(row.aggregate.address) if row.aggregate else None
    return entry


# -- kp-locals ------------------------------------------------------------------------------

def _variable(variable, report) -> dict:
    return {
        "name": variable.name,
        "kind": "param" if variable.is_argument else "local",
        "type": variable.type_name,
        "size": variable.size,
        "where": variable.where,
        "register": variable.register,
        "offset": variable.offset if variable.where in ("cfa", "regoffset") else None,
        "address": hexed(variable.address),
        "placement": report.placement[variable.name],
        "value": None if report.values is None else report.values.get(variable.name),
    }


def locals_report(report) -> dict:
    """kp-locals: what render_stop.locals_report() prints, as data."""
    place, facts = report.place, report.facts
    document = head("kp-locals")
    document.update(located(place.address, None if place.symbol is None else
                             Location(place.symbol, place.offset, place.size, place.module)))
    document["source"] = report.function_line if report.function_line != "no line info" \
        else None
    start = place.address - place.offset
    document["prologue"] = {
        "pushes": list(facts.pushes),
        "allocated": facts.allocated,
        "frame_size": facts.frame_size,
        "frame_pointer": facts.frame_pointer,
        "cfa_register": facts.frame_register if facts.frame_pointer else facts.stack_register,
        "cfa_offset": facts.frame_offset if facts.frame_pointer else facts.cfa_from_rsp,
        "end_offset": facts.end - start if facts.end else None,
    }
    document["frame"] = report.frame_level
    document["cfa"] = hexed(report.cfa)
    document["variables"] = [_variable(variable, report) for variable in report.variables]
    document["slots"] = [{"register": slot.register, "offset": slot.offset,
                          "cfa_offset": slot.cfa_offset, "insn_address": hexed(slot.insn_address),
                          "asm": slot.asm, "value": value, "owner": owner}
                         for slot, owner, value in report.slots]
    document["kprobe_events"] = report.fetch_line
    document["not_expressible"] = list(report.not_expressible)
    return document


# -- kp-check -------------------------------------------------------------------------------

def answer(given) -> dict | None:
    """One interface's answer (kernel/register_checks.Answer) as {accepted, errno, reason}."""
    if given is None:
        return None
    return {"accepted": given.accepted, "errno": given.errno_name or None,
            "reason": given.reason}


def verdicts(results) -> dict:
    """kp-check: each place's address and both interfaces' answers."""
    document = head("kp-check")
    document["places"] = [{"spec": result.spec, "address": hexed(result.address),
                           "place": result.place,
                           "register_kprobe": answer(result.register_kprobe),
                           "kprobe_events": answer(result.kprobe_events),
                           "notes": list(result.notes)} for result in results]
    return document
