"""The guest's own view of every dynamic hook on its functions (issue 16, kp-hooks' oracle).

The lab's hooks scenario (qemu/scenarios/hooks-6.1, hooks-6.12) puts every kind of hook the
kernel has on vfs_read and inet_csk_accept: kprobe_events probes, the lab modules' kprobes,
the function tracer, a module's own ftrace_ops (qemu/modules/kp_ftrace_ops.c), a livepatch
(kp_livepatch.c), BPF and perf hooks from user space (qemu/guest/kp_hookload.c: kprobe perf
events with programs, a kprobe_multi link, fentry/fexit trampolines) and on 6.12 fprobe
events. collect() asks the guest, in one shell command over the console, for the files that
say what is hooked, and parse() turns that text into typed records:

  /sys/kernel/debug/kprobes/list     every registered kprobe (KprobeRow)
  /sys/kernel/tracing/enabled_functions
                                     every function ftrace patched, how many ftrace_ops are on
                                     it, its flags and the trampoline/callback it shows (FtraceSite)
  /sys/kernel/tracing/dynamic_events kprobe, kretprobe and fprobe events (DynamicEvent)
  /sys/kernel/tracing/events/{kprobes,fprobes}/*/enable
  /sys/kernel/tracing/current_tracer, set_ftrace_filter   the function tracer and its filter
  /sys/kernel/livepatch/<patch>/<object>/<function,sympos>  livepatched functions
  /proc/modules                      which modules are listed
  /tmp/kp_hookload.out               kp_hookload's one line per hook it attached (HookloadHook)
  /proc/<pid>/fd/*, fdinfo/*         its perf event, BPF program and BPF link fds (FdInfo)
  dmesg                              the lab modules' "planted" lines (ModuleHook)

HooksView.functions groups them per function into ExpectedHook entries: what a correct
kp-hooks must list there, each with its kind, owner and the facts the guest gives. Nothing is
derived from kernel memory: this is what the guest says, for the e2e tests to compare with.

`python3 -m qemu.hooks_oracle --kernel 6.12` boots the hooks scenario and prints the view.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from typing import Iterable

HOOKLOAD_OUT = "/tmp/kp_hookload.out"      # qemu/guest/kp-scenario's spawn verb writes it
SECTION = "=== "

# One guest command; each section starts with a line "=== NAME" (qemu.lab.Guest.run output).
# No tabs: the console shell would take them for completion.
COLLECT_SCRIPT = r"""
T=/sys/kernel/tracing
sec() { echo "=== $*"; }
sec kprobes/list; cat /sys/kernel/debug/kprobes/list
sec enabled_functions; cat $T/enabled_functions
sec dynamic_events; cat $T/dynamic_events
sec event_enable
for f in $T/events/kprobes/*/enable $T/events/fprobes/*/enable; do
    [ -f "$f" ] && echo "${f#$T/events/} $(cat $f)"
done
sec current_tracer; cat $T/current_tracer
sec set_ftrace_filter; cat $T/set_ftrace_filter
sec livepatch; [ -d /sys/kernel/livepatch ] && find /sys/kernel/livepatch -mindepth 3 -maxdepth 3 -type d
sec modules; cut -d' ' -f1 /proc/modules
sec kp_hookload; cat /tmp/kp_hookload.out 2>/dev/null
pid=$(pidof kp_hookload)
if [ -n "$pid" ]; then
    for fd in /proc/$pid/fd/*; do
        n=${fd##*/}
        sec "fdinfo $n $(readlink $fd)"; cat /proc/$pid/fdinfo/$n
    done
fi
sec dmesg
dmesg | grep -E '(kp_lab_kprobe|kp_lab_kretprobe|kp_hidden): planted|kp_ftrace_ops: ftrace_ops at'
true
"""

# The kinds of ExpectedHook.kind, in the order kp-hooks is expected to think of them.
KINDS = (
    "trace_kprobe",        # a `p:` kprobe_events/dynamic_events line (trace_kprobe)
    "trace_kretprobe",     # an `r:` line (a kretprobe made by trace_kprobe)
    "module_kprobe",       # register_kprobe() by a module (its dmesg line)
    "module_kretprobe",    # register_kretprobe() by a module
    "perf_kprobe",         # a kprobe PMU perf event (perf_kprobe_init), BPF program on it
    "perf_kretprobe",      # the same with the PMU's retprobe bit
    "fprobe_event",        # an `f:` dynamic_events line (trace_fprobe, 6.12)
    "kprobe_multi",        # a BPF_TRACE_KPROBE_MULTI link (an fprobe, 6.12)
    "fentry",              # a BPF_TRACE_FENTRY program on a BPF trampoline (direct call)
    "fexit",               # a BPF_TRACE_FEXIT program on a BPF trampoline
    "kprobes_ftrace_ops",  # kprobes' own ftrace_ops, there when kprobes ride on ftrace at the
                           # function ([FTRACE] rows; kprobe_ftrace_handler in enabled_functions)
    "function_tracer",     # current_tracer=function with the function in set_ftrace_filter
    "module_ftrace_ops",   # a module's own ftrace_ops (kp_ftrace_ops's dmesg line)
    "livepatch",           # a livepatched function (/sys/kernel/livepatch)
)


@dataclasses.dataclass(frozen=True)
class KprobeRow:
    """One row of /sys/kernel/debug/kprobes/list (kernel/kprobes.c report_probe()):
    `ADDR  k|r  SYM+0xOFF  [MODULE] [GONE][DISABLED][OPTIMIZED][FTRACE]`."""
    address: int
    kind: str                   # "k" kprobe, "r" kretprobe ("p" never appears)
    function: str
    offset: int
    module: str | None          # the probed code's module, not the probe's owner
    flags: tuple[str, ...]      # ("FTRACE",), ("DISABLED", "FTRACE"), ...


@dataclasses.dataclass(frozen=True)
class FtraceTrampoline:
    """`\\ttramp: TRAMPOLINE (FUNC)` of an enabled_functions line: the ftrace_ops' own
    trampoline (%pS: on 6.1 a trampoline in freed module init memory prints as that old
    symbol, e.g. `kp_ftrace_ops_init+0x0/0x1000 [kp_ftrace_ops]`) and its ops->func."""
    trampoline: str
    func: str


@dataclasses.dataclass(frozen=True)
class FtraceSite:
    """One function of /sys/kernel/tracing/enabled_functions (kernel/trace/ftrace.c t_show()):
    `NAME [MODULE] (COUNT) FLAGS [\\ttramp: T (F)]... [ ->TARGET] [\\tops: OPS (F)]`, then
    `\\tdirect-->TRAMPOLINE` on its own line when a direct call (a BPF trampoline) is there.
    6.1 prints the flags R I D; 6.12 also O (call ops) and M (modified)."""
    function: str
    module: str | None
    count: int                  # ftrace_rec_count(): how many ftrace_ops (direct included)
    flags: frozenset[str]       # R regs, I ipmodify, D direct, O call ops, M modified
    trampolines: tuple[FtraceTrampoline, ...]
    call_target: str | None     # ` ->X`: what the patched site calls (arch_ftrace_ops_list_func
                                # when several ops share it)
    ops: tuple[str, str] | None  # 6.12 `\tops: OPS (FUNC)`: the one ops (CALL_OPS_EN)
    direct: str | None          # `direct-->X`: the direct-call target

    @property
    def direct_key(self) -> int | None:
        """The BPF trampoline key in `bpf_trampoline_KEY` (kernel/bpf/trampoline.c
        bpf_trampoline_compute_key(): BTF object id << 32 | 0x80000000 | btf id for a kernel
        function, the target program's id << 32 | btf id for a BPF program's)."""
        found = re.match(r"bpf_trampoline_(\d+)\+", self.direct or "")
        return int(found.group(1)) if found else None

    @property
    def direct_btf_id(self) -> int | None:
        """The target function's BTF id in the direct trampoline's name."""
        key = self.direct_key
        return None if key is None else key & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class DynamicEvent:
    """One line of /sys/kernel/tracing/dynamic_events (kprobe_events' lines are in it too):
    `p[N]:GROUP/EVENT PLACE ARGS`, `r[N]:...`, `f[N]:... SYM[%return]`, `t:...`."""
    type: str                   # "p", "r", "f", "t", or another dynamic event's letter
    maxactive: int | None       # the N of r10:
    group: str
    event: str
    place: str                  # as written: `vfs_read`, `inet_accept+0x14`, `SYM%return`
    args: tuple[str, ...]
    enabled: bool | None        # events/GROUP/EVENT/enable, None when not collected
    line: str

    @property
    def function(self) -> str:
        """The probed function (the place without `+OFF`, `%return` or a `MOD:` prefix)."""
        place = self.place.split("%", 1)[0]
        return re.split(r"[+]", place.split(":")[-1], maxsplit=1)[0]

    @property
    def is_return(self) -> bool:
        return self.type == "r" or self.place.endswith("%return")


@dataclasses.dataclass(frozen=True)
class HookloadHook:
    """One line kp_hookload (qemu/guest/kp_hookload.c) printed to /tmp/kp_hookload.out:
    `kp_hookload: KIND MECHANISM FUNCTIONS key=value...`."""
    kind: str                   # perf, perfret, perftask, multi, fentry, fexit
    mechanism: str              # kprobe (perf event), kprobe_multi (link), trampoline
    functions: tuple[str, ...]
    prog_id: int
    prog_name: str
    prog_tag: str
    prog_fd: int
    perf_fd: int | None         # perf kinds: the perf event fd
    pid: int | None             # perf kinds: the task the event is bound to, -1 for every task
    cpu: int | None             # perf kinds: the CPU, -1 for every CPU (a task-bound event)
    link_id: int | None         # multi, fentry, fexit
    link_fd: int | None
    btf_id: int | None          # fentry, fexit: the target's BTF id in /sys/kernel/btf/vmlinux


@dataclasses.dataclass(frozen=True)
class FdInfo:
    """One of kp_hookload's open fds: `readlink /proc/PID/fd/N` (anon_inode:[perf_event],
    anon_inode:bpf-prog, anon_inode:bpf_link) and `/proc/PID/fdinfo/N`'s `key:\\tvalue` lines
    (bpf_prog_show_fdinfo(): prog_type, prog_tag, prog_id ...; bpf_link_show_fdinfo():
    link_type, link_id, prog_id; a tracing link adds attach_type (24 fentry, 25 fexit) and,
    since 6.2, target_obj_id and target_btf_id). A perf event fd shows no BPF fields: which
    program is on it is only in kp_hookload's line (and in kernel memory)."""
    fd: int
    target: str
    fields: dict[str, str]


@dataclasses.dataclass(frozen=True)
class ModuleHook:
    """A lab module's dmesg line naming what it registered (qemu/modules/*.c)."""
    module: str
    kind: str                   # module_kprobe, module_kretprobe, module_ftrace_ops
    function: str
    offset: int
    address: int | None         # the probed address (kprobes), None for ftrace_ops
    detail: str                 # the rest of the line


@dataclasses.dataclass(frozen=True)
class ExpectedHook:
    """One hook a correct kp-hooks must list on `function`, as the guest shows it.

    `owner` is a readable name (`kprobes/kp_hook_read`, `module kp_lab_kprobe`,
    `kp_hookload pid 154`, `function tracer`, `livepatch kp_livepatch`); `facts` holds what
    the guest gives to match on: prog_id, prog_name, link_id, pid, cpu, btf_id, enabled,
    address, maxactive, event, module. `source` names the guest file(s) it comes from."""
    function: str
    kind: str                   # one of KINDS
    owner: str
    facts: dict[str, object]
    source: str


@dataclasses.dataclass
class FunctionHooks:
    """Everything the guest shows on one function."""
    function: str
    hooks: list[ExpectedHook]
    kprobe_rows: list[KprobeRow]        # its kprobes/list rows
    ftrace: FtraceSite | None           # its enabled_functions entry, if ftrace patched it

    def kinds(self) -> set[str]:
        return {hook.kind for hook in self.hooks}

    def of_kind(self, kind: str) -> list[ExpectedHook]:
        return [hook for hook in self.hooks if hook.kind == kind]


@dataclasses.dataclass
class HooksView:
    """The parsed sections of one collect() and the hooks grouped per function."""
    kprobes_list: list[KprobeRow]
    enabled_functions: list[FtraceSite]
    dynamic_events: list[DynamicEvent]
    current_tracer: str
    ftrace_filter: list[str]             # set_ftrace_filter; [] when it traces everything
    livepatched: list[tuple[str, str, str]]   # (patch, object, function) under /sys/kernel/livepatch
    modules: list[str]                   # /proc/modules names
    hookload: list[HookloadHook]
    hookload_pid: int | None             # kp_hookload's "ready pid=N"
    hookload_unavailable: list[str]      # its "unavailable" lines (multi: on 6.1)
    fdinfo: dict[int, FdInfo]
    module_hooks: list[ModuleHook]
    functions: dict[str, FunctionHooks]

    def function(self, name: str) -> FunctionHooks:
        return self.functions.get(name) or FunctionHooks(name, [], [], None)


# -- parsers of the single files ----------------------------------------------------------

KPROBE_ROW = re.compile(r"^([0-9a-f]+)  ([kr])  (\S+?)\+0x([0-9a-f]+)  (\S*)\s*((?:\[[A-Z]+\])*)\s*$")


def parse_kprobes_list(text: str) -> list[KprobeRow]:
    """debugfs kprobes/list; rows without a symbol (`%pS` of an address) are skipped."""
    rows = []
    for line in text.splitlines():
        found = KPROBE_ROW.match(line)
        if not found:
            continue
        address, kind, function, offset, module, flags = found.groups()
        rows.append(KprobeRow(int(address, 16), kind, function, int(offset, 16),
                              module or None, tuple(re.findall(r"\[([A-Z]+)\]", flags))))
    return rows


FTRACE_HEAD = re.compile(r"^(\S+)(?: \[([^\]]+)\])? \((\d+)\)(.*)$")


def parse_enabled_functions(text: str) -> list[FtraceSite]:
    """tracing/enabled_functions of 6.1 and 6.12 (see FtraceSite)."""
    sites: list[FtraceSite] = []
    for line in text.splitlines():
        if line.startswith("\tdirect-->") and sites:
            sites[-1] = dataclasses.replace(sites[-1], direct=line[len("\tdirect-->"):].strip())
            continue
        found = FTRACE_HEAD.match(line)
        if not found:
            continue
        function, module, count, rest = found.groups()
        cut = min((i for i in (rest.find("\ttramp:"), rest.find("->"), rest.find("\tops:"))
                   if i >= 0), default=len(rest))
        flags = frozenset(rest[:cut].split())
        rest = rest[cut:]
        trampolines = tuple(FtraceTrampoline(t.strip(), f) for t, f in
                            re.findall(r"\ttramp: (.*?) \(([^()]*)\)", rest))
        target = re.search(r" ?->(\S+)", rest)
        ops = re.search(r"\tops: (.*?) \(([^()]*)\)", rest)
        sites.append(FtraceSite(function, module, int(count), flags, trampolines,
                                target.group(1) if target else None,
                                (ops.group(1), ops.group(2)) if ops else None, None))
    return sites


DYNAMIC_EVENT = re.compile(r"^([a-z])(\d*):([^/\s]+)/(\S+) (\S+)(.*)$")


def parse_dynamic_events(text: str, enabled: dict[str, bool] | None = None) -> list[DynamicEvent]:
    """tracing/dynamic_events (or kprobe_events); `enabled` maps GROUP/EVENT to its state."""
    events = []
    for line in text.splitlines():
        found = DYNAMIC_EVENT.match(line.strip())
        if not found:
            continue
        letter, maxactive, group, event, place, args = found.groups()
        events.append(DynamicEvent(letter, int(maxactive) if maxactive else None, group, event,
                                   place, tuple(args.split()),
                                   None if enabled is None else enabled.get(f"{group}/{event}"),
                                   line.strip()))
    return events


def parse_event_enable(text: str) -> dict[str, bool]:
    """`GROUP/EVENT/enable 0|1` lines (the collect script's event_enable section)."""
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("/enable"):
            states[parts[0][:-len("/enable")]] = parts[1] == "1"
    return states


HOOKLOAD_LINE = re.compile(r"^kp_hookload: (perf|perfret|perftask|multi|fentry|fexit) "
                           r"(\S+) (\S+)((?: \S+=\S*)*)\s*$")


def parse_hookload(text: str) -> tuple[list[HookloadHook], int | None, list[str]]:
    """kp_hookload's output: its hooks, its pid (the `ready` line), its `unavailable` lines.
    Its `error` lines are not hooks (the scenario fails on them)."""
    hooks, pid, unavailable = [], None, []
    for line in text.splitlines():
        ready = re.match(r"^kp_hookload: ready pid=(\d+)", line)
        if ready:
            pid = int(ready.group(1))
            continue
        if re.match(r"^kp_hookload: \S+ unavailable ", line):
            unavailable.append(line)
            continue
        found = HOOKLOAD_LINE.match(line)
        if not found:
            continue
        kind, mechanism, functions, pairs = found.groups()
        fields = dict(pair.split("=", 1) for pair in pairs.split())

        def number(key: str) -> int | None:
            value = fields.get(key)
            return int(value) if value not in (None, "", "?") else None

        hooks.append(HookloadHook(kind, mechanism, tuple(functions.split(",")),
                                  number("prog_id") or 0, fields.get("name", ""),
                                  fields.get("prog_tag", ""), number("prog_fd") or -1,
                                  number("fd"), number("pid"), number("cpu"), number("link_id"),
                                  number("link_fd"), number("btf_id")))
    return hooks, pid, unavailable


def parse_fdinfo(header: str, body: str) -> FdInfo:
    """A `fdinfo N TARGET` section: /proc/PID/fdinfo/N's `key:\\tvalue` lines."""
    _, fd, *target = header.split(" ", 2)
    fields = {}
    for line in body.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return FdInfo(int(fd), target[0] if target else "", fields)


MODULE_LINES = (
    # kp_lab_kprobe.c: "planted kprobe at %px (%s+0x%x) flags=0x%x"
    (re.compile(r"(kp_lab_kprobe): planted kprobe at ([0-9a-f]+) \((\S+?)\+0x([0-9a-f]+)\)(.*)"),
     "module_kprobe"),
    # kp_lab_kretprobe.c: "planted return probe at %s: %px maxactive=%d"
    (re.compile(r"(kp_lab_kretprobe): planted return probe at (?P<sym>\S+): ([0-9a-f]+)(.*)"),
     "module_kretprobe"),
    # kp_hidden.c: "planted kprobe at %px, struct kprobe at %px, pre_handler at %px" (vfs_statx)
    (re.compile(r"(kp_hidden): planted kprobe at ([0-9a-f]+)(,.*)"), "module_kprobe"),
    # kp_ftrace_ops.c: "ftrace_ops at %px on %s, callback at %px"
    (re.compile(r"(kp_ftrace_ops): ftrace_ops at [0-9a-f]+ on (\S+?),(.*)"), "module_ftrace_ops"),
)


def parse_module_lines(text: str) -> list[ModuleHook]:
    hooks = []
    for line in text.splitlines():
        for pattern, kind in MODULE_LINES:
            found = pattern.search(line)
            if not found:
                continue
            module = found.group(1)
            if module == "kp_lab_kprobe":
                hooks.append(ModuleHook(module, kind, found.group(3), int(found.group(4), 16),
                                        int(found.group(2), 16), found.group(5).strip()))
            elif module == "kp_lab_kretprobe":
                hooks.append(ModuleHook(module, kind, found.group("sym"), 0,
                                        int(found.group(3), 16), found.group(4).strip()))
            elif module == "kp_hidden":     # its symbol is fixed in kp_hidden.c
                hooks.append(ModuleHook(module, kind, "vfs_statx", 0, int(found.group(2), 16),
                                        found.group(3).strip(", ")))
            else:
                hooks.append(ModuleHook(module, kind, found.group(2), 0, None,
                                        found.group(3).strip()))
            break
    return hooks


def split_sections(text: str) -> list[tuple[str, str]]:
    """The collect script's output as (section name, body) pairs, in order."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(SECTION):
            sections.append((line[len(SECTION):].strip(), []))
        elif sections:
            sections[-1][1].append(line)
    return [(name, "\n".join(body) + ("\n" if body else "")) for name, body in sections]


# -- the view ------------------------------------------------------------------------------

def parse(text: str) -> HooksView:
    """The whole collect() output: every section parsed, then grouped per function."""
    sections = split_sections(text)
    named = {name: body for name, body in sections}
    enabled = parse_event_enable(named.get("event_enable", ""))
    hookload, pid, unavailable = parse_hookload(named.get("kp_hookload", ""))
    fdinfo = {}
    for name, body in sections:
        if name.startswith("fdinfo "):
            info = parse_fdinfo(name, body)
            fdinfo[info.fd] = info
    filter_lines = [line.strip() for line in named.get("set_ftrace_filter", "").splitlines()
                    if line.strip() and not line.startswith("#")]
    livepatched = []
    for line in named.get("livepatch", "").splitlines():
        parts = line.strip().split("/")
        if len(parts) >= 7:     # /sys/kernel/livepatch/PATCH/OBJECT/FUNC,SYMPOS
            livepatched.append((parts[4], parts[5], parts[6].split(",")[0]))
    view = HooksView(
        kprobes_list=parse_kprobes_list(named.get("kprobes/list", "")),
        enabled_functions=parse_enabled_functions(named.get("enabled_functions", "")),
        dynamic_events=parse_dynamic_events(named.get("dynamic_events", ""), enabled),
        current_tracer=named.get("current_tracer", "").strip(),
        ftrace_filter=filter_lines,
        livepatched=livepatched,
        modules=[line.strip() for line in named.get("modules", "").splitlines() if line.strip()],
        hookload=hookload, hookload_pid=pid, hookload_unavailable=unavailable, fdinfo=fdinfo,
        module_hooks=parse_module_lines(named.get("dmesg", "")),
        functions={})
    view.functions = group(view)
    return view


def _expected(view: HooksView) -> Iterable[ExpectedHook]:
    for event in view.dynamic_events:
        if event.type in ("p", "r"):
            kind = "trace_kretprobe" if event.is_return else "trace_kprobe"
        elif event.type == "f":
            kind = "fprobe_event"
        else:
            continue
        facts: dict[str, object] = {"event": f"{event.group}/{event.event}",
                                    "place": event.place, "enabled": event.enabled,
                                    "return": event.is_return}
        if event.maxactive is not None:
            facts["maxactive"] = event.maxactive
        yield ExpectedHook(event.function, kind, f"{event.group}/{event.event}", facts,
                           "tracing/dynamic_events, events/*/*/enable")
    for hook in view.module_hooks:
        facts = {"module": hook.module, "listed": hook.module in view.modules}
        if hook.address is not None:
            facts["address"] = hook.address
        yield ExpectedHook(hook.function, hook.kind, f"module {hook.module}", facts,
                           "dmesg (the module's own line), /proc/modules")
    owner = f"kp_hookload pid {view.hookload_pid}"
    for hook in view.hookload:
        facts = {"prog_id": hook.prog_id, "prog_name": hook.prog_name, "prog_tag": hook.prog_tag}
        if hook.kind.startswith("perf"):
            kind = "perf_kretprobe" if hook.kind == "perfret" else "perf_kprobe"
            facts.update(pid=hook.pid, cpu=hook.cpu, holder_pid=view.hookload_pid)
        elif hook.kind == "multi":
            kind = "kprobe_multi"
            facts.update(link_id=hook.link_id, holder_pid=view.hookload_pid)
        else:
            kind = hook.kind
            facts.update(link_id=hook.link_id, btf_id=hook.btf_id, holder_pid=view.hookload_pid)
        for function in hook.functions:
            yield ExpectedHook(function, kind, owner, dict(facts),
                               f"{HOOKLOAD_OUT}, /proc/<pid>/fdinfo")
    for function, rows in _ftrace_kprobe_rows(view).items():
        yield ExpectedHook(function, "kprobes_ftrace_ops", "kprobes",
                           {"probes": len(rows), "addresses": sorted({r.address for r in rows})},
                           "kprobes/list [FTRACE] rows")
    if view.current_tracer == "function":
        for function in view.ftrace_filter:
            yield ExpectedHook(function, "function_tracer", "function tracer",
                               {"tracer": "function"}, "tracing/current_tracer, set_ftrace_filter")
    for patch, obj, function in view.livepatched:
        yield ExpectedHook(function, "livepatch", f"livepatch {patch}",
                           {"patch": patch, "object": obj}, "/sys/kernel/livepatch")


def _ftrace_kprobe_rows(view: HooksView) -> dict[str, list[KprobeRow]]:
    rows: dict[str, list[KprobeRow]] = {}
    for row in view.kprobes_list:
        if "FTRACE" in row.flags and "GONE" not in row.flags:
            rows.setdefault(row.function, []).append(row)
    return rows


def group(view: HooksView) -> dict[str, FunctionHooks]:
    """Every ExpectedHook per function, with the function's kprobes/list rows and its
    enabled_functions entry (functions that only appear in those two are kept too)."""
    functions: dict[str, FunctionHooks] = {}

    def entry(name: str) -> FunctionHooks:
        return functions.setdefault(name, FunctionHooks(name, [], [], None))

    for hook in _expected(view):
        entry(hook.function).hooks.append(hook)
    for row in view.kprobes_list:
        entry(row.function).kprobe_rows.append(row)
    for site in view.enabled_functions:
        entry(site.function).ftrace = site
    return functions


def ftrace_ops_expected(hooks: FunctionHooks) -> int:
    """How many ftrace_ops the ExpectedHooks account for on a function: one per function
    tracer, module ftrace_ops, livepatch, fprobe event and kprobe_multi link (each fprobe
    has its own ftrace_ops up to 6.12; 6.14 moved fprobe onto fgraph), one for the BPF
    trampoline (fentry and fexit programs share it), one for kprobes' own ops (the probes
    at one address are one aggregate, armed once; kprobe_ipmodify_ops would be a second one
    for a probe with a post_handler armed alone, not in the lab's scenario). Compare with
    FtraceSite.count."""
    kinds = [hook.kind for hook in hooks.hooks]
    count = sum(kinds.count(k) for k in ("function_tracer", "module_ftrace_ops", "livepatch",
                                          "fprobe_event", "kprobes_ftrace_ops"))
    # one kprobe_multi link is one fprobe, whatever number of functions it covers
    count += len({hook.facts.get("link_id") for hook in hooks.of_kind("kprobe_multi")})
    count += 1 if {"fentry", "fexit"} & set(kinds) else 0
    return count


def collect(guest) -> str:
    """Run the collect script in the guest (a qemu.lab.Guest); the raw sectioned text."""
    return guest.run(COLLECT_SCRIPT.strip(), timeout=60)


def view_of(guest) -> HooksView:
    return parse(collect(guest))


def _shown(value: object) -> str:
    """Kernel addresses in hex, everything else as is."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 32:
        return f"{value:#x}"
    if isinstance(value, list):
        return ",".join(_shown(item) for item in value)
    return str(value)


def render(view: HooksView) -> str:
    """A plain listing of the view, per function (for `python3 -m qemu.hooks_oracle`)."""
    lines = []
    for name, hooks in sorted(view.functions.items()):
        site = hooks.ftrace
        ftrace = (f"ftrace count {site.count} flags {''.join(sorted(site.flags)) or '-'}"
                  if site else "not patched by ftrace")
        lines.append(f"{name}: {len(hooks.kprobe_rows)} kprobes/list rows, {ftrace}")
        for hook in sorted(hooks.hooks, key=lambda h: KINDS.index(h.kind)):
            facts = " ".join(f"{k}={_shown(v)}" for k, v in hook.facts.items())
            lines.append(f"    {hook.kind:18} {hook.owner:28} {facts}")
    for line in view.hookload_unavailable:
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from qemu.lab import Lab
    parser = argparse.ArgumentParser(prog="python3 -m qemu.hooks_oracle", description=(
        "Boot the lab's hooks scenario and print every hook the guest shows, per function."))
    parser.add_argument("--kernel", default="6.12")
    parser.add_argument("--raw", action="store_true", help="print the collected text as is")
    options = parser.parse_args(argv)
    with Lab(options.kernel, "hooks") as lab:
        text = collect(lab.guest)
    print(text if options.raw else render(parse(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
