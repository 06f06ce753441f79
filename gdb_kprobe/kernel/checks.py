"""Would the kernel accept a kprobe at a place? Its checks, replayed in order, for each of the
two ways in: register_kprobe() from a module, and a `p` line written to kprobe_events.

register_kprobe() (kernel/kprobes.c, 6.1 and later):
  1. _kprobe_addr(): the symbol through kallsyms (-ENOENT if none), sym+off re-based on the
     symbol that contains it (-ENOENT if none), +0 moved past an entry marker (IBT);
  2. check_kprobe_address_safe(): kernel or module text, not in the kprobe blacklist (with
     `.`-suffixed copies of blacklisted functions), not a jump label, static call, BUG()
     or CFI-preamble site (-EINVAL);
  3. a place that already has a probe joins its aggregate;
  4. prepare_kprobe(): an fentry call site becomes an ftrace-based probe; anything else must
     be an instruction boundary decoded from the function start (can_probe(): -EILSEQ).
kprobe_events (kernel/trace/trace_kprobe.c) parses the place first (kernel/probe_spec.py),
wants a unique symbol, an entry for %return, refuses a function without an ftrace call site
(within_notrace_func(), unless CONFIG_KPROBE_EVENTS_ON_NOTRACE) and then registers the same
way; a symbol of a module that is not loaded yet is accepted and waits for it.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe.kernel import probe_spec
from gdb_kprobe.kernel.register_checks import Answer, RegisterChecker, Registered
from gdb_kprobe.kernel.trace_kprobe import EventsChecker

__all__ = ["Answer", "Verdict", "check"]


@dataclasses.dataclass
class Verdict:
    """The kernel's answers on one place: register_kprobe()'s (None where a module cannot
    express the place: a negative or too large offset, %return) and kprobe_events'."""

    spec: str
    address: int | None
    place: str | None
    register_kprobe: Answer | None
    kprobe_events: Answer
    notes: list[str]


def check(spec: str) -> Verdict:
    """The kernel's verdicts on `spec`: through register_kprobe() and through kprobe_events."""
    checker = RegisterChecker()
    text = spec.strip()
    parsed = probe_spec.parse_event_place(text)
    notes: list[str] = []
    module: Registered | None = None
    if parsed.error is None and not parsed.is_return:
        module = checker.register(parsed.kallsyms_name, parsed.address, parsed.offset)
    events = EventsChecker(checker).events(parsed, notes)
    shown = module if module is not None else events
    for note in (module.notes if module else []) + events.notes:
        if note not in notes:
            notes.append(note)
    place = shown.place or events.place
    return Verdict(spec, place.address if place else None, str(place) if place else None,
                   module.answer if module else None, events.answer, notes)
