"""Who owns each `struct kprobe`, beyond kp-list -v's one word: the trace event, the perf
events on it and their tasks, the BPF programs attached, or the module (kernel/owners.py).

A kprobe whose pre_handler is kprobe_dispatcher (kretprobe: handler kretprobe_dispatcher) is
embedded in a `struct trace_kprobe` (kernel/trace/trace_kprobe.c). Two kinds exist:
- a kprobe_events / dynamic_events probe, on `dyn_event_list` through `trace_kprobe.devent`;
- a perf kprobe PMU probe (perf_event_open() with the "kprobe" PMU type, which BPF kprobe
  attachments and `perf record -e` use), made by create_local_trace_kprobe(): never added to
  `dyn_event_list`, so its `devent.list` points at itself (dyn_event_init() does
  INIT_LIST_HEAD) and it is in neither kprobe_events nor dynamic_events.
Its `struct trace_event_call` (tp.event->call) holds the perf events on it
(`perf_events`, a per-CPU hlist of `struct perf_event` through `hlist_entry`, filled by
perf_trace_add() while the event is scheduled on that CPU; `perf_refcount` counts them all:
a task-bound event whose task is not running now is found in that task's perf context)
and the BPF programs attached to it (`prog_array`, a `struct bpf_prog_array` of
`struct bpf_prog_array_item`, NULL-terminated; perf_event_attach_bpf_prog()).
Anything else is owned as owners.attribute() decides (a module's handlers, or flagged code).

Every field is looked up in DWARF; a field this kernel lacks degrades to a note, never a crash.
"""
from __future__ import annotations

import dataclasses

from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import kprobes, lists, percpu
from gdb_kprobe.kernel.kallsyms import Symbolizer
from gdb_kprobe.kernel.kprobes_list import Details, ProbeRow, details_for
from gdb_kprobe.target import layouts, memory, symbols

__all__ = ["BpfProg", "PerfEvent", "ProbeOwner", "owner_of", "bpf_prog", "prog_array",
           "MAX_PROGS", "MAX_PERF_EVENTS"]

MAX_PROGS = 64                   # BPF_TRACE_MAX_PROGS (kernel/trace/bpf_trace.c)
MAX_PERF_EVENTS = 1024           # per CPU: a walk past it is a damaged list


@dataclasses.dataclass(frozen=True)
class BpfProg:
    """One `struct bpf_prog`: id and name from its `struct bpf_prog_aux` (as bpftool prints
    them), the tag (prog->tag, hex) and the program type number (enum bpf_prog_type)."""

    address: int
    id: int | None
    name: str
    tag: str
    type: int | None

    def __str__(self) -> str:
        name = f" {self.name}" if self.name else ""
        return f"bpf prog {self.id if self.id is not None else '?'}{name} tag {self.tag}"


@dataclasses.dataclass(frozen=True)
class PerfEvent:
    """One `struct perf_event` on the trace event: its owner task (event->owner, the task
    that opened it; NULL for an in-kernel counter), its CPU (-1: any), the task it counts
    (event->hw.target; None for a CPU-wide event) and its BPF program (event->prog)."""

    address: int
    id: int | None
    cpu: int | None
    owner_pid: int | None
    owner_comm: str | None
    prog: BpfProg | None
    task_pid: int | None = None
    task_comm: str | None = None

    def __str__(self) -> str:
        who = f"pid {self.owner_pid} ({self.owner_comm})" if self.owner_pid is not None \
            else "no owner task (in-kernel)"
        cpu = "any CPU" if self.cpu in (None, -1) else f"CPU {self.cpu}"
        task = f", task {self.task_pid} ({self.task_comm})" if self.task_pid is not None \
            else ""
        return f"perf event {self.id if self.id is not None else '?'} of {who}, {cpu}{task}"


@dataclasses.dataclass(frozen=True)
class ProbeOwner:
    """Who owns one probe. kind: "trace_event" (kprobe_events/dynamic_events), "perf_kprobe"
    (the perf kprobe PMU: a local trace_kprobe), or owners.Owner's kind for the rest
    ("module", "kernel", "unlisted_module", "foreign_code", "unknown")."""

    kind: str
    text: str                                # the owner in words
    details: Details                         # kp-list -v's: handlers, owners.Owner, warnings
    perf_refcount: int | None = None
    perf_events: tuple[PerfEvent, ...] = ()
    bpf_progs: tuple[BpfProg, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return self.details.owner.flagged or bool(self.details.warnings)


def bpf_prog(address: int) -> BpfProg:
    """A `struct bpf_prog` and its `aux` (struct bpf_prog_aux: id, name)."""
    prog = layouts.layout("struct bpf_prog")
    view = prog.view(memory.read(address, prog.size), address)
    tag = view.bytes("tag").hex() if prog.has_field("tag") else ""
    kind = view.int("type") if prog.has_field("type") else None
    aux_at = view.ptr("aux") if prog.has_field("aux") else 0
    prog_id, name = None, ""
    aux = layouts.try_layout("struct bpf_prog_aux")
    if aux_at and aux is not None:
        aux_view = aux.view(memory.read(aux_at, aux.size), aux_at)
        prog_id = aux_view.int("id") if aux.has_field("id") else None
        name = aux_view.string("name") if aux.has_field("name") else ""
    return BpfProg(address, prog_id, name, tag, kind)


def _dummy_prog() -> int | None:
    """&dummy_bpf_prog.prog (kernel/bpf/core.c): what bpf_prog_array_delete_safe() leaves in
    a slot whose program was detached; it is no program of anyone."""
    dummy = symbols.kernel().address_of("dummy_bpf_prog")
    return dummy     # .prog is its first member (struct bpf_prog_dummy)


def prog_array(address: int) -> list[BpfProg]:
    """The programs of a `struct bpf_prog_array` (items[] up to the NULL prog)."""
    if not address:
        return []
    array = layouts.layout("struct bpf_prog_array")
    item = layouts.layout("struct bpf_prog_array_item")
    start, dummy = address + array.offset("items"), _dummy_prog()
    found = []
    for index in range(MAX_PROGS + 1):
        prog = memory.read_u64(start + index * item.size + item.offset("prog"))
        if not prog:
            break
        if prog != dummy:
            found.append(bpf_prog(prog))
    return found


def _perf_events(call: layouts.View, notes: list[str]) -> list[PerfEvent]:
    """The perf events on the per-CPU `call->perf_events` hlists."""
    heads = call.ptr("perf_events")
    if not heads:
        return []
    event = layouts.layout("struct perf_event")
    node_offset = event.offset("hlist_entry")
    found: list[PerfEvent] = []
    for cpu, offset in enumerate(percpu.offsets()):
        first = memory.read_u64(heads + offset)

        def fetch(node: int) -> tuple[PerfEvent, int]:
            address = node - node_offset
            view = event.view(memory.read(address, event.size), address)
            return _perf_event(view), view.ptr("hlist_entry.next")

        walk = lists.walk(first, 0, fetch, f"perf_events of CPU {cpu}", limit=MAX_PERF_EVENTS)
        found += [e for e in walk.items if e.address not in {f.address for f in found}]
        if walk.damage:
            notes.append(walk.damage)
    return found


MAX_TASKS = 100_000              # a task list walk past it is a damaged list


def _tasks(notes: list[str]) -> list[int]:
    """Every `struct task_struct`: the processes on init_task.tasks, each with its threads
    (signal->thread_head through thread_node, v3.14 on); the processes alone without it."""
    task = layouts.layout("struct task_struct")
    init = symbols.kernel().address_of("init_task")
    if init is None:
        return []
    tasks_offset = task.offset("tasks")

    def fetch(node: int) -> tuple[int, int]:
        return node - tasks_offset, memory.read_u64(node)

    head = init + tasks_offset
    walk = lists.walk(memory.read_u64(head), head, fetch, "init_task.tasks", limit=MAX_TASKS)
    if walk.damage:
        notes.append(walk.damage)
    processes = [init] + walk.items
    signal = layouts.try_layout("struct signal_struct")
    if signal is None or not signal.has_field("thread_head") or \
            not task.has_field("thread_node"):
        return processes
    node_offset = task.offset("thread_node")
    found: list[int] = []
    for leader in processes:
        signal_at = memory.read_u64(leader + task.offset("signal"))
        threads: list[int] = []
        if signal_at:
            thread_head = signal_at + signal.offset("thread_head")
            threads = lists.walk(memory.read_u64(thread_head), thread_head,
                                 lambda n: (n - node_offset, memory.read_u64(n)),
                                 "signal->thread_head", limit=MAX_TASKS).items
        found += threads or [leader]
    return found


def _task_bound_events(call_at: int, notes: list[str]) -> list[PerfEvent]:
    """The perf events on the trace event `call_at` (event->tp_event) in the tasks' perf
    contexts: task->perf_event_ctxp (an array of contexts before v6.2, one after:
    bd2756811766 "perf: Rewrite core context handling"), ctx->event_list through
    event->event_entry. Walked only when a CPU's list lacks some of perf_refcount's events."""
    task = layouts.layout("struct task_struct")
    event = layouts.layout("struct perf_event")
    context = layouts.try_layout("struct perf_event_context")
    if context is None or not task.has_field("perf_event_ctxp") or \
            not event.has_field("tp_event") or not event.has_field("event_entry"):
        return []
    slots = task.field("perf_event_ctxp")
    found: list[PerfEvent] = []
    try:
        tasks = _tasks(notes)
    except KpError as exc:
        notes.append(f"task list unreadable: {exc}")
        return []
    for task_at in tasks:
        try:
            raw = memory.read(task_at + slots.offset, slots.size)
        except KpError:
            continue
        contexts = {int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)}
        for ctx in sorted(contexts - {0}):
            walk = lists.for_each_entry(ctx + context.offset("event_list"), event,
                                        "event_entry", lambda v: v, "perf_event_context")
            found += [_perf_event(view) for view in walk.items
                      if view.ptr("tp_event") == call_at]
    return found


def _perf_event(view: layouts.View) -> PerfEvent:
    layout = view.layout
    owner = view.ptr("owner") if layout.has_field("owner") else 0
    pid, comm = _pid_comm(owner)
    # hw.target: perf_event_alloc() sets it for an event bound to a task (pid >= 0)
    target = view.ptr("hw.target") if layout.has_field("hw.target") else 0
    task_pid, task_comm = _pid_comm(target)
    # event->prog: CONFIG_BPF_SYSCALL with CONFIG_EVENT_TRACING
    prog = view.ptr("prog") if layout.has_field("prog") else 0
    cpu = view.int("cpu") if layout.has_field("cpu") else None
    if cpu is not None and cpu >= 1 << 31:
        cpu -= 1 << 32
    return PerfEvent(view.address, view.int("id") if layout.has_field("id") else None, cpu,
                     pid, comm, bpf_prog(prog) if prog else None, task_pid, task_comm)


def _pid_comm(task_at: int) -> tuple[int | None, str | None]:
    """pid and comm of a `struct task_struct`, (None, None) for NULL; comm escaped (a task
    names itself)."""
    if not task_at:
        return None, None
    task = layouts.layout("struct task_struct")
    comm = layouts.printable(memory.read_cstring(task_at + task.offset("comm"), 16))
    pid = int.from_bytes(memory.read(task_at + task.offset("pid"), 4), "little", signed=True)
    return pid, comm


def owner_of(row: ProbeRow, table: kprobes.KprobeTable, symbolizer: Symbolizer,
             details: Details | None = None) -> ProbeOwner:
    """The owner of `row`'s probe: for a trace_kprobe its event, perf events and BPF
    programs; otherwise kp-list -v's owner (owners.attribute()), flagged code included."""
    details = details if details is not None else details_for(row, table, symbolizer)
    if details.event is None:
        return ProbeOwner(details.owner.kind, str(details.owner), details)
    event = details.event
    notes: list[str] = []
    kind, text = details.owner.kind, str(details.owner)     # owners.attribute()'s words
    refcount, perf, progs = None, [], []
    try:
        tk = layouts.layout("struct trace_kprobe")
        event_ptr = memory.read_u64(event.address + tk.offset("tp.event"))
        probe_event = layouts.layout("struct trace_probe_event")
        call_at = event_ptr + probe_event.offset("call")
        call = layouts.layout("struct trace_event_call")
        view = call.view(memory.read(call_at, call.size), call_at)
        # perf_refcount, perf_events, prog_array: CONFIG_PERF_EVENTS only
        if call.has_field("perf_events"):
            refcount = view.int("perf_refcount")
            perf = _perf_events(view, notes)
            if refcount and len(perf) < refcount:
                # a task-bound event is on a CPU's list only while its task runs: the
                # others are in their task's perf context
                known = {event.address for event in perf}
                perf += [event for event in _task_bound_events(call_at, notes)
                         if event.address not in known]
            if refcount and len(perf) < refcount:
                notes.append(f"{refcount - len(perf)} more perf event(s) on no CPU's list and "
                             "in no task's perf context")
        if call.has_field("prog_array"):
            progs = prog_array(view.ptr("prog_array"))
    except KpError as exc:
        notes.append(f"perf/BPF users of {event.name} unreadable: {exc}")
    return ProbeOwner(kind, text, details, refcount, tuple(perf), tuple(progs), tuple(notes))
