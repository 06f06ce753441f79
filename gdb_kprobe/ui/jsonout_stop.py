"""JSON output of what is seen at a stop: kp-where's answer and kp-sim's hits, from the
model objects ui/render_stop.py prints, with ui/jsonout.py's conventions (docs/json.md).
No gdb calls here, and never colour."""
from __future__ import annotations

from gdb_kprobe import arch
from gdb_kprobe.ui.jsonout import head, hexed, instructions, located

__all__ = ["where", "sim_probe", "sim_return"]


def where(found) -> dict:
    """kp-where: the CPU, the probe it handles (if any), the stage, the telling frames."""
    document = head("kp-where")
    document["cpu"] = found.cpu
    document["handling"] = found.handling
    document["current_kprobe"] = hexed(found.current) if found.current else None
    document["probe"] = None if found.probe_address is None else \
        located(found.probe_address, found.probe_location)
    document["kprobe_status"] = found.status
    document["stage"] = found.stage
    document["frames"] = [{"level": frame.level, "function": frame.function,
                           "kind": frame.kind, "note": frame.note} for frame in found.frames]
    return document


def _place(place) -> dict:
    return {"address": hexed(place.address), "symbol": place.symbol,
            "offset": place.offset if place.symbol is not None else None,
            "module": place.module}


def _registers(values: dict[str, int] | None) -> dict | None:
    return None if values is None else {name: hexed(value) for name, value in values.items()}


def _hit(hit) -> dict:
    executed = hit.executed[0]
    following = executed.address + len(executed.raw)
    post_ip = hit.post[arch.PT_REGS_PC] if hit.post else None
    return {"number": hit.number, "cpu": hit.cpu, "task": hit.task,
            "pre": _registers(hit.pre), "post": _registers(hit.post),
            "changed": [name for name, value in hit.pre.items()
                        if hit.post and hit.post.get(name, value) != value],
            "executed": instructions(hit.executed), "how": hit.how,
            "next_insn": hexed(following),
            "post_ip_is_next": None if post_ip is None else post_ip == following}


def sim_probe(plan, hits) -> dict:
    """kp-sim PLACE: the place, its instruction in the file and live, where the post view
    is taken, and each hit's pre and post registers."""
    document = head("kp-sim")
    document["mode"] = "probe"
    document.update(_place(plan.place))
    document["original"] = instructions([plan.original])[0]
    document["live"] = instructions([plan.live])[0]
    document["post_view"] = None if plan.after is None else {
        "address": hexed(plan.after.address), "why": plan.after.why}
    document["registers"] = list(plan.regs)
    document["hits"] = [_hit(hit) for hit in hits]
    return document


def _return(hit) -> dict:
    signed = hit.retval - (1 << 64) if hit.retval >> 63 else hit.retval
    return {"cpu": hit.cpu, "task": hit.task, "entry_sp": hexed(hit.entry_sp),
            "return_address": hexed(hit.return_address),
            "args": _registers(hit.args), "retval": hexed(hit.retval),
            # the text's "(-11)": a return value in the errno range
            "errno": signed if -4095 <= signed < 0 else None,
            "elapsed_ns": hit.elapsed_ns}


def sim_return(place, hits) -> dict:
    """kp-sim --ret FUNCTION: each call's arguments at entry and its return."""
    document = head("kp-sim")
    document["mode"] = "return"
    document.update(_place(place))
    document["hits"] = [_return(hit) for hit in hits]
    return document
