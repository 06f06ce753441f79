"""Who hooks a function through ftrace: the `struct ftrace_ops` on `ftrace_ops_list`
(kernel/trace/ftrace.c), which functions each one traces, and whose it is.

An ops traces the call sites its hashes select (hash_contains_ip(), ftrace_ops_test()):
those in `func_hash->filter_hash` (an empty filter hash: every function ftrace can trace)
and not in `func_hash->notrace_hash`. Each `struct ftrace_hash` is read once per stop
(`size_bits`, an array of hlist heads of `struct ftrace_func_entry` {ip}).

Each ops is classified by identity and callback and followed to its owner (kprobes, function
tracer instance, fprobe event or BPF kprobe_multi link, livepatch, BPF trampoline, direct
call, kernel, module, or code of no listed owner): kernel/ftrace_owners.py.

`site_at(ip)` decodes the live bytes at a function's fentry site (one memory read per site:
in a listing of every hooked function it costs more than all the ops and hashes together),
and `runtime_code_name()` (kernel/runtime_code.py) names code allocated at run time the way
/proc/kallsyms does (ftrace trampolines, kprobe instruction pages, BPF code).
"""
from __future__ import annotations

import dataclasses
import struct

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import ftrace, ftrace_hash, lists
from gdb_kprobe.kernel import modules as kmodules
from gdb_kprobe.kernel.ftrace_owners import FTRACE_OPS_FL, KINDS, OpsFields, decide, flag_names
from gdb_kprobe.kernel.runtime_code import code_name, runtime_code_name
from gdb_kprobe.target import cache, layouts, memory, symbols

__all__ = ["KINDS", "FtraceOps", "ops_list", "ops_on", "hooked_ips", "SiteContents",
           "site_at", "expected_site", "runtime_code_name", "flag_names"]

MAX_OPS = 10_000


@dataclasses.dataclass(frozen=True)
class FtraceOps:
    """One `struct ftrace_ops` on ftrace_ops_list, classified and attributed."""

    address: int               # struct ftrace_ops *
    func: int                  # ops->func, the callback
    flags: int                 # ops->flags (FTRACE_OPS_FL_*)
    trampoline: int | None     # ops->trampoline when it has its own
    kind: str                  # one of KINDS
    owner: str                 # who, in words
    details: dict[str, object] # JSON-ready specifics
    filter_all: bool           # empty filter hash: every function ftrace can trace

    def __hash__(self) -> int:           # details is a dict: identity is the ops' address
        return hash(self.address)



@cache.cache_until(*cache.MEMORY)
def _raw_ops() -> tuple[tuple[OpsFields, ...], str | None]:
    """ftrace_ops_list in list order (ops->next, up to &ftrace_list_end), with each ops'
    hashes read through ops->func_hash; and a note when the walk stopped early."""
    table = symbols.kernel()
    head, end = table.address_of("ftrace_ops_list"), table.address_of("ftrace_list_end")
    if head is None or end is None:
        return (), "this kernel has no ftrace_ops_list (CONFIG_FUNCTION_TRACER off?)"
    ops = layouts.layout("struct ftrace_ops")
    hash_pair = layouts.layout("struct ftrace_ops_hash")
    # ops->direct_call: "ftrace: Store direct called addresses in their ops" (v6.4; in 6.12,
    # not in 6.1, which keeps them only in direct_functions)
    has_direct = ops.has_field("direct_call")

    def fetch(node: int) -> tuple[OpsFields, int]:
        view = ops.view(memory.read(node, ops.size), node)
        func_hash = view.ptr("func_hash")
        filter_hash = notrace_hash = 0
        if func_hash:
            pair = hash_pair.view(memory.read(func_hash, hash_pair.size), func_hash)
            filter_hash, notrace_hash = pair.ptr("filter_hash"), pair.ptr("notrace_hash")
        raw = OpsFields(node, view.ptr("func"), view.int("flags"), view.ptr("private"),
                   view.ptr("ops_func"), view.ptr("trampoline"), view.int("trampoline_size"),
                   filter_hash, notrace_hash, view.ptr("direct_call") if has_direct else 0)
        return raw, view.ptr("next")

    walk = lists.walk(memory.read_u64(head), end, fetch, "ftrace_ops_list", limit=MAX_OPS)
    return tuple(walk.items), walk.damage


@cache.cache_until(*cache.MEMORY)
def _trace_arrays() -> dict[int, str]:
    """trace_array.ops → instance words, for every tracing instance (`ftrace_trace_arrays`,
    struct trace_array linked through `list`; the top one, global_trace, has no name)."""
    table = symbols.kernel()
    head = table.address_of("ftrace_trace_arrays")
    layout = layouts.try_layout("struct trace_array")
    # trace_array.ops is there only with CONFIG_FUNCTION_TRACER (kernel/trace/trace.h, 6.1
    # and 6.12 alike); without it no instance traces functions
    if head is None or layout is None or not layout.has_field("ops"):
        return {}

    def decode(view: layouts.View) -> tuple[int, str]:
        name_ptr = view.ptr("name")
        name = layouts.printable(memory.read_cstring(name_ptr, 64)) if name_ptr else None
        return view.ptr("ops"), "top instance" if name is None else f"instance {name}"

    walk = lists.for_each_entry(head, layout, "list", decode, "ftrace_trace_arrays")
    return {ops: words for ops, words in walk.items if ops}


@cache.cache_until(*cache.MEMORY)
def _modules() -> tuple[list[kmodules.Module], str | None]:
    walk = kmodules.read_modules()
    return walk.items, walk.damage



@cache.cache_until(*cache.MEMORY)
def ops_list() -> tuple[FtraceOps, ...]:
    """ftrace_ops_list in list order, minus ftrace_list_end. An ops whose owner cannot be
    read (a struct or field missing from this kernel's DWARF, unreadable memory) is kind
    "unknown" with the reason in details["reason"]."""
    raws, damage = _raw_ops()
    if damage and not raws:
        if damage.startswith("this kernel has no"):
            return ()
        raise KpError(f"cannot read ftrace's ops: {damage}")
    try:
        trace_arrays = _trace_arrays()
    except KpError:
        trace_arrays = {}
    modules, _damage = _modules()
    found = []
    for raw in raws:
        hash_damage = None
        try:
            filter_all = not ftrace_hash.hash_ips(raw.filter_hash)
            ftrace_hash.hash_ips(raw.notrace_hash)
        except KpError as exc:          # ops_on() and hooked_ips() leave this ops out
            filter_all, hash_damage = False, str(exc)
        try:
            kind, owner, details = decide(raw, trace_arrays, modules)
        except KpError as exc:
            kind, owner, details = "unknown", "unknown", {"reason": str(exc)}
        if hash_damage:
            details["hash_damage"] = hash_damage
        if damage:
            details["list_damage"] = damage
        found.append(FtraceOps(address=raw.address, func=raw.func, flags=raw.flags,
                               trampoline=raw.trampoline or None, kind=kind, owner=owner,
                               details=details, filter_all=filter_all))
    return tuple(found)


def _hashes(ops: FtraceOps) -> tuple[frozenset[int], frozenset[int]]:
    raw = next(r for r in _raw_ops()[0] if r.address == ops.address)
    return ftrace_hash.hash_ips(raw.filter_hash), ftrace_hash.hash_ips(raw.notrace_hash)


def ops_on(ip: int) -> tuple[FtraceOps, ...]:
    """The ops whose filter hash takes `ip` (an empty one takes all) and whose notrace hash
    does not: ftrace_ops_test() for every ops on the list, in list order."""
    found = []
    for ops in ops_list():
        try:
            filter_ips, notrace_ips = _hashes(ops)
        except KpError:
            continue
        if ftrace_hash.hash_contains(filter_ips, notrace_ips, ip):
            found.append(ops)
    return tuple(found)


def _all_site_ips() -> list[int]:
    """Every dyn_ftrace record's ip, one read per ftrace page (for ops that trace all)."""
    record = layouts.layout("struct dyn_ftrace")
    ip_offset = record.offset("ip")
    ips: list[int] = []
    for page in ftrace.pages():
        data = memory.read(page.records, page.count * record.size)
        ips.extend(struct.unpack_from("<Q", data, index * record.size + ip_offset)[0]
                   for index in range(page.count))
    return ips


@cache.cache_until(*cache.MEMORY)
def hooked_ips() -> dict[int, tuple[FtraceOps, ...]]:
    """Every hooked ip with its ops (list order), in one pass over the ops' hashes. Only
    when some ops traces every function are the call-site records read (one read per
    ftrace page)."""
    per_ip: dict[int, list[FtraceOps]] = {}
    everything: list[int] | None = None
    for ops in ops_list():
        try:
            filter_ips, notrace_ips = _hashes(ops)
        except KpError:
            continue
        if not filter_ips:
            if everything is None:
                everything = _all_site_ips()
            chosen = everything
        else:
            chosen = filter_ips
        for ip in chosen:
            if ip not in notrace_ips:
                per_ip.setdefault(ip, []).append(ops)
    order = {ops.address: index for index, ops in enumerate(ops_list())}
    return {ip: tuple(sorted(found, key=lambda o: order[o.address]))
            for ip, found in sorted(per_ip.items())}


# ------------------------------------------------------------------------ the call site

@dataclasses.dataclass(frozen=True)
class SiteContents:
    """The live bytes at a function's fentry site, decoded."""

    ip: int
    kind: str        # "nop", "call", "int3", "jmp", "other"
    target: int | None
    target_name: str
    words: str


_CALLERS = {"ftrace_caller": "ftrace's list caller (every ops through ftrace_ops_list_func "
                             "or the one ops' func)",
            "ftrace_regs_caller": "ftrace's regs caller (every ops through "
                                  "ftrace_ops_list_func or the one ops' func)"}


def site_at(ip: int) -> SiteContents:
    """What the fentry call site at `ip` holds now: ftrace's nop, a call into
    ftrace_caller/ftrace_regs_caller, an ops' own trampoline or a direct trampoline, a
    kprobe's int3, an optprobe's jmp, or something else. One memory read."""
    data = memory.read(ip, arch.MCOUNT_INSN_SIZE)
    if data == arch.NOP5:
        return SiteContents(ip, "nop", None, "", "nop (ftrace does not call anything here)")
    if data[0] == arch.INT3:
        return SiteContents(ip, "int3", None, "", "int3 (a kprobe, or ftrace patching it now)")
    if data[0] in (arch.CALL32, arch.JMP32):
        target = arch.u64(ip + arch.MCOUNT_INSN_SIZE + struct.unpack_from("<i", data, 1)[0])
        if data[0] == arch.JMP32:
            name = code_name(target, _modules()[0])
            return SiteContents(ip, "jmp", target, name, f"jmp {name} (an optimized kprobe)")
        return _call_site(ip, target, "")
    return SiteContents(ip, "other", None, "", f"other code ({data.hex(' ')})")


def _call_site(ip: int, target: int, note: str) -> SiteContents:
    name = code_name(target, _modules()[0])
    base = name.split("+")[0].split(" ")[0]
    if base in _CALLERS:
        words = f"call {name}: {_CALLERS[base]}"
    elif base == "ftrace_trampoline":
        words = f"call {name}: one ops' own trampoline"
    elif base.startswith("bpf_trampoline_"):
        words = f"call {name}: a BPF trampoline (direct call)"
    elif target in set(ftrace_hash.direct_functions().values()):
        words = f"call {name}: a direct call"
    else:
        words = f"call {name}"
    return SiteContents(ip, "call", target, name, words + note)


def expected_site(ip: int, ops: tuple[FtraceOps, ...]) -> SiteContents:
    """The call ftrace puts at `ip` for these ops (those ops_on(ip) gives), without reading
    the site: ftrace_get_addr_new() of kernel/trace/ftrace.c. One ops that is a direct call:
    its trampoline (direct_functions); one ops with a trampoline of its own: that one;
    otherwise ftrace_regs_caller when an ops wants registers (FTRACE_FL_REGS), else
    ftrace_caller. For listings of every hooked function, where site_at()'s one read per
    function would cost more than the whole ops walk; site_at() says what is really there."""
    if not ops:
        return SiteContents(ip, "nop", None, "", "nop (no ops traces it; not read)")
    note = " (expected from the ops; not read)"
    direct = ftrace_hash.direct_functions().get(ip)
    if len(ops) == 1 and direct and ops[0].flags & FTRACE_OPS_FL["DIRECT"]:
        return _call_site(ip, direct, note)
    if len(ops) == 1 and ops[0].trampoline:
        return _call_site(ip, ops[0].trampoline, note)
    caller = "ftrace_regs_caller" if any(o.flags & FTRACE_OPS_FL["SAVE_REGS"] for o in ops) \
        else "ftrace_caller"
    return _call_site(ip, symbols.kernel_address(caller), note)


# ------------------------------------------------------------ code allocated at run time
