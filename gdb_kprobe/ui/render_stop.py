"""Text of what is seen at a stop: kp-sim's hits, kp-locals' report, kp-where's answer.
No gdb calls here (ui/render.py has the listings)."""
from __future__ import annotations

from gdb_kprobe import arch

__all__ = ["sim_intro", "sim_hit", "sim_return_intro", "sim_return_hit", "locals_report",
           "where"]


# -- kp-sim -------------------------------------------------------------------------------

def sim_intro(place, original, live, continuation, armed) -> str:
    lines = [f"kp-sim: breakpoint at {place} ({place.address:#x}): `{original.asm}`"]
    if armed:
        lines.append(f"kp-sim: live code here is `{live.asm}`, not the original: {armed}.")
        lines.append(f"kp-sim: post view at {continuation:#x}.")
    lines.append("kp-sim: waiting for a hit (Ctrl-C stops and removes the breakpoints) ...")
    return "".join(line + "\n" for line in lines)


def sim_hit(hit, address: int) -> str:
    task = f", task {hit.task}" if hit.task else ""
    out = [f"hit {hit.number} on cpu{hit.cpu}{task}"]
    out.append(f"  {'reg':<6} {'pre (pre_handler)':<20} {'post (post_handler)':<20}")
    for name, before in hit.pre.items():
        after = hit.post.get(name) if hit.post else None
        changed = " *" if after is not None and after != before else ""
        out.append(f"  {name:<6} {before:#018x}   {after:#018x}{changed}" if after is not None
                   else f"  {name:<6} {before:#018x}")
    executed = hit.executed[0]
    raw = " ".join(f"{b:02x}" for b in executed.raw)
    out.append(f"  executed: {executed.address:#x}: {raw}  {executed.asm}  ({hit.how})")
    next_address = executed.address + len(executed.raw)
    pc = arch.PT_REGS_PC
    post_ip = hit.post[pc] if hit.post else None
    if post_ip == next_address:
        out.append(f"  post {pc} {post_ip:#x} is the next instruction")
    elif post_ip is not None:
        out.append(f"  post {pc} {post_ip:#x} (the next instruction would be {next_address:#x}: "
                   "a branch, or the kernel ran more than one instruction)")
    out.append(f"  gdb stopped at {address:#x}; the pre {pc} is what a kprobe's pre_handler sees "
               f"there: {arch.PRE_HANDLER_PC_TEXT}; its post_handler sees the post {pc}")
    return "".join(line + "\n" for line in out)


def sim_return_intro(place) -> str:
    return (f"kp-sim --ret: breakpoint at {place} ({place.address:#x}); each entry records sp, "
            "the return address, the arguments and the guest clock, and a breakpoint on the "
            "return address reports that call's return (matched by sp).\n"
            "kp-sim: elapsed time is an estimate: the guest's clock read from kernel memory "
            "at both stops, the newest per-CPU runqueue clock (rq->clock, sched_clock ns). It "
            "moves only at scheduler events, so each end may lag by up to a scheduler tick; a "
            "kretprobe's own ktime_get() at entry and return measures the call itself. Host "
            "time spent stopped in gdb does not count.\n"
            "kp-sim: waiting for a hit (Ctrl-C stops and removes the breakpoints) ...\n")


def sim_return_hit(hit) -> str:
    task = f", task {hit.task}" if hit.task else ""
    args = " ".join(f"{k}={v:#x}" for k, v in hit.args.items())
    elapsed = f"{hit.elapsed_ns} ns" if hit.elapsed_ns is not None else "unknown"
    signed = hit.retval - (1 << 64) if hit.retval >> 63 else hit.retval
    errno = f" ({signed})" if -4095 <= signed < 0 else ""
    return (f"return on cpu{hit.cpu}{task}: returned {hit.retval:#x}{errno} to "
            f"{hit.return_address:#x}, took about {elapsed} (estimate: guest rq->clock)\n"
            f"  at entry: sp={hit.entry_sp:#x} {args}\n")


# -- kp-locals ------------------------------------------------------------------------------

def locals_report(report) -> str:
    place = report.place
    facts = report.facts
    out = [f"{place} ({place.address:#x}), {report.function_line}"]
    pushes = ", ".join(facts.pushes) or "none"
    fp = (f"yes: CFA = %{facts.frame_register}{facts.frame_offset:+#x}" if facts.frame_pointer
          else f"no: CFA = %{facts.stack_register}{facts.cfa_from_rsp:+#x}")
    # no push, frame-pointer mov or sub %rsp at all: a function without a prologue
    end = (f"the prologue ends at +{facts.end - (place.address - place.offset):#x}"
           if facts.end else "the function has no prologue (it pushes and allocates nothing)")
    out.append(f"prologue at this PC: pushed {pushes}; allocated {facts.allocated:#x}; frame size "
               f"{facts.frame_size:#x}; frame pointer {fp}; {end}")
    if report.frame_level is not None:
        out.append(f"values: frame #{report.frame_level}, CFA {report.cfa:#x}")
    else:
        out.append("values: not stopped here (kp-locals --break stops at the place first)")
    header = f"  {'kind':<6} {'name':<14} {'type':<26} {'where at this PC':<34}"
    out.append(header + (" value" if report.values is not None else ""))
    for variable in report.variables:
        kind = "param" if variable.is_argument else "local"
        row = (f"  {kind:<6} {variable.name:<14} {variable.type_name[:26]:<26} "
               f"{report.placement[variable.name]:<34}")
        if report.values is not None:
            row += " " + report.values.get(variable.name, "")
        out.append(row.rstrip())
    out.append("stack slots the code touches before this PC (as in the disassembly):")
    if not report.slots:
        out.append("  none")
    for slot, owner, value in report.slots:
        written = f"{slot.offset:+#x}(%{slot.register})"
        line = f"  {written:<14} CFA{slot.cfa_offset:+#x}"
        if value is not None:
            line += f"  {value}"
        line += f"  {owner or '(no local: saved register or temporary)'}"
        out.append(line)
    out.append(f"kprobe_events: {report.fetch_line}")
    for item in report.not_expressible:
        out.append(f"  not expressible as a fetch arg: {item}")
    return "".join(line + "\n" for line in out)


# -- kp-where -------------------------------------------------------------------------------

def where(found) -> str:
    if not found.handling:
        lines = [f"cpu{found.cpu} is not handling a kprobe (current_kprobe is NULL)"]
    else:
        probe = str(found.probe_location) if found.probe_location else f"{found.current:#x}"
        lines = [f"cpu{found.cpu} is handling a kprobe: {probe} (current_kprobe "
                 f"{found.current:#x}, kprobe_status {found.status})",
                 f"  stage: {found.stage}"]
    for frame in found.frames:
        # the unwinder's labels read as a suffix ("f [probed at ...]"), the others as a role
        what = f"{frame.function or '??'} {frame.note}" if frame.kind == "unwound" \
            else f"{frame.function}: {frame.note}"
        lines.append(f"  frame #{frame.level}: {what}")
    return "".join(line + "\n" for line in lines)
