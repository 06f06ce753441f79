"""Would the kernel accept a kprobe at a place? Its checks, replayed in order, for each of the
two ways in: register_kprobe() from a module (kernel/register_checks.py), and a `p PLACE` line
written to kprobe_events (kernel/trace_kprobe.py: its own rules first, then the same
registration). tests/e2e/test_oracle.py holds both against the guest kernel on hundreds of
generated places.
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


def check(spec: str, checker: RegisterChecker | None = None) -> Verdict:
    """The kernel's verdicts on `spec`: through register_kprobe() and through kprobe_events.
    One `checker` may serve many places read at the same stop (kp-locals --offsets)."""
    checker = checker or RegisterChecker()
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
