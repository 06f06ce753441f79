"""Who hooks a function through ftrace: the `struct ftrace_ops` on `ftrace_ops_list`
(kernel/trace/ftrace.c), which functions each one traces, and whose it is.

An ops traces the call sites its hashes select (hash_contains_ip(), ftrace_ops_test()):
those in `func_hash->filter_hash` (an empty filter hash: every function ftrace can trace)
and not in `func_hash->notrace_hash`. Each `struct ftrace_hash` is read once per stop
(`size_bits`, an array of hlist heads of `struct ftrace_func_entry` {ip}).

An ops is classified by identity and callback, then followed to its owner:

  kprobes         kprobe_ftrace_ops / kprobe_ipmodify_ops, func kprobe_ftrace_handler
  fprobe          func fprobe_handler / fprobe_kprobe_handler: the ops is `struct fprobe.ops`,
                  itself in a `struct trace_fprobe` (fprobe event) or a
                  `struct bpf_kprobe_multi_link` (BPF kprobe_multi), told by its handlers
  livepatch       func klp_ftrace_handler: `struct klp_ops.fops`, its func_stack's klp_func
  bpf_trampoline  ops_func bpf_tramp_ftrace_ops_func: `struct bpf_trampoline` (ops->private),
                  its programs per kind from tr->progs_hlist
  direct          other direct calls (call_direct_funcs, FTRACE_OPS_FL_DIRECT)
  function_tracer a tracing instance's trace_array.ops (global_ops for the top instance)
  kernel          another callback of the kernel image (function graph, perf, stack tracer)
  module          a callback in a listed module's memory
  unlisted        a callback in neither the kernel image nor a listed module (flagged)
  unknown         a struct or field this kernel's DWARF lacks (the reason in details)

`site_at(ip)` decodes the live bytes at a function's fentry site, and `runtime_code_name()`
names code allocated at run time the way /proc/kallsyms does (ftrace trampolines, kprobe
instruction pages, BPF trampolines and programs).
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Callable

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import ftrace, lists, owners
from gdb_kprobe.kernel import modules as kmodules
from gdb_kprobe.target import cache, layouts, memory, symbols

__all__ = ["KINDS", "FTRACE_OPS_FL", "FtraceOps", "OpsFacts", "HashLayout", "read_hash_ips",
           "hash_contains", "classify", "ops_list", "ops_on", "hooked_ips", "SiteContents",
           "site_at", "runtime_code_name", "flag_names"]

KINDS = ("function_tracer", "kprobes", "fprobe", "livepatch", "bpf_trampoline", "direct",
         "module", "kernel", "unlisted", "unknown")

# enum FTRACE_OPS_FL_* of include/linux/ftrace.h (each bit kept since it came; SUBOP came
# with "ftrace: Add subops logic to allow one ops to manage many", v6.11: 6.12 has it)
FTRACE_OPS_FL = {"ENABLED": 1 << 0, "DYNAMIC": 1 << 1, "SAVE_REGS": 1 << 2,
                 "SAVE_REGS_IF_SUPPORTED": 1 << 3, "RECURSION": 1 << 4, "STUB": 1 << 5,
                 "INITIALIZED": 1 << 6, "DELETED": 1 << 7, "ADDING": 1 << 8,
                 "REMOVING": 1 << 9, "MODIFYING": 1 << 10, "ALLOC_TRAMP": 1 << 11,
                 "IPMODIFY": 1 << 12, "PID": 1 << 13, "RCU": 1 << 14, "TRACE_ARRAY": 1 << 15,
                 "PERMANENT": 1 << 16, "DIRECT": 1 << 17, "SUBOP": 1 << 18}

MAX_HASH_BITS = 20          # FTRACE_HASH_MAX_BITS is 12; anything far past it is damage
MAX_OPS = 10_000
PAGE_SIZE = 4096            # a kprobe instruction page (alloc_insn_page(): one page)

_KPROBES_OPS = ("kprobe_ftrace_ops", "kprobe_ipmodify_ops")
_FPROBE_FUNCS = ("fprobe_handler", "fprobe_kprobe_handler")
# trace_fprobe's handlers (kernel/trace/trace_fprobe.c, fprobe events since v6.7; 6.1 has
# none): fentry_dispatcher, fexit_dispatcher, and trace_fprobe_entry_handler for an fprobe
# on a tracepoint
_TRACE_FPROBE_HANDLERS = ("fentry_dispatcher", "fexit_dispatcher", "trace_fprobe_entry_handler")
_KPROBE_MULTI_HANDLERS = ("kprobe_multi_link_handler", "kprobe_multi_link_exit_handler")
_KERNEL_OPS_WORDS = {"graph_ops": "function graph tracer (graph_ops)",
                     "ftrace_profile_ops": "function profiler (ftrace_profile_ops)",
                     "trace_ops": "trace event self-test (trace_ops)",
                     "direct_ops": "direct calls (direct_ops)"}
_KERNEL_FUNC_WORDS = {"perf_ftrace_function_call": "perf function event",
                      "stack_trace_call": "stack tracer",
                      "ftrace_graph_func": "function graph tracer",
                      "function_profile_call": "function profiler"}


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


def flag_names(flags: int) -> list[str]:
    """FTRACE_OPS_FL_* names set in `flags` (unknown bits as hex)."""
    names = [name for name, bit in FTRACE_OPS_FL.items() if flags & bit]
    rest = flags & ~sum(FTRACE_OPS_FL.values())
    return names + ([f"{rest:#x}"] if rest else [])


# ---------------------------------------------------------------- hashes (pure, testable)

@dataclasses.dataclass(frozen=True)
class HashLayout:
    """Offsets in `struct ftrace_hash` and `struct ftrace_func_entry` (kernel/trace/trace.h,
    include/linux/ftrace.h), from DWARF."""

    size: int                  # sizeof(struct ftrace_hash)
    size_bits: int
    buckets: int
    count: int
    entry_size: int            # sizeof(struct ftrace_func_entry)
    entry_next: int            # hlist.next
    entry_ip: int
    entry_direct: int | None   # ftrace_func_entry.direct: "ftrace: Add
                               # register_ftrace_direct()" (v5.5)


def read_hash_ips(address: int, layout: HashLayout, read: Callable[[int, int], bytes],
                  with_direct: bool = False) -> dict[int, int]:
    """The ips of the `struct ftrace_hash` at `address` (a NULL hash: none), each with its
    entry's `direct` (0 unless asked for), as __ftrace_lookup_ip() would find them. A damaged
    hash raises KpError saying where."""
    if not address:
        return {}
    head = read(address, layout.size)
    bits = struct.unpack_from("<Q", head, layout.size_bits)[0]
    buckets = struct.unpack_from("<Q", head, layout.buckets)[0]
    count = struct.unpack_from("<Q", head, layout.count)[0]
    if bits > MAX_HASH_BITS:
        raise KpError(f"ftrace hash at {address:#x}: size_bits {bits} is not a hash's")
    if not count or not buckets:
        return {}                               # ftrace_hash_empty()
    heads = read(buckets, 8 << bits)
    found: dict[int, int] = {}
    for index in range(1 << bits):
        node = struct.unpack_from("<Q", heads, index * 8)[0]
        steps = 0
        while node:
            if not arch.is_canonical(node) or steps > count:
                raise KpError(f"ftrace hash at {address:#x}: bucket {index} is damaged "
                              f"at {node:#x}")
            entry = read(node, layout.entry_size)
            ip = struct.unpack_from("<Q", entry, layout.entry_ip)[0]
            direct = struct.unpack_from("<Q", entry, layout.entry_direct)[0] \
                if with_direct and layout.entry_direct is not None else 0
            found[ip] = direct
            node = struct.unpack_from("<Q", entry, layout.entry_next)[0]
            steps += 1
    return found


def hash_contains(filter_ips: frozenset[int] | set[int], notrace_ips: frozenset[int] | set[int],
                  ip: int) -> bool:
    """hash_contains_ip(): an empty filter hash takes every ip, an empty notrace hash none."""
    return (not filter_ips or ip in filter_ips) and ip not in notrace_ips


# ---------------------------------------------------------- classification (pure, testable)

@dataclasses.dataclass(frozen=True)
class OpsFacts:
    """What classify() decides from: names of the kernel-image symbols the ops, its func and
    its ops_func are (None when not a kernel-image symbol start), where func lies, and whether
    the ops is some tracing instance's trace_array.ops."""

    ops_symbol: str | None
    func_symbol: str | None
    ops_func_symbol: str | None
    func_region: str                   # owners.KERNEL_IMAGE, MODULE, MODULE_SPACE, ...
    flags: int
    trace_array_ops: bool = False
    has_direct_call: bool = False      # 6.12: ops->direct_call set


def classify(facts: OpsFacts) -> str:
    """The kind of an ops, identity before callback, callback before its region."""
    if facts.ops_symbol in _KPROBES_OPS or facts.func_symbol == "kprobe_ftrace_handler":
        return "kprobes"
    if facts.trace_array_ops or facts.ops_symbol == "global_ops":
        return "function_tracer"
    if facts.func_symbol in _FPROBE_FUNCS:
        return "fprobe"
    if facts.func_symbol == "klp_ftrace_handler":
        return "livepatch"
    if facts.ops_func_symbol == "bpf_tramp_ftrace_ops_func":
        return "bpf_trampoline"
    if facts.func_symbol == "call_direct_funcs" or facts.has_direct_call or \
            facts.flags & FTRACE_OPS_FL["DIRECT"]:
        return "direct"
    if facts.func_region == owners.KERNEL_IMAGE:
        return "kernel"
    if facts.func_region == owners.MODULE:
        return "module"
    return "unlisted"


# ------------------------------------------------------------------ reading the kernel

@cache.cache_until(*cache.OBJFILE)
def _hash_layout() -> HashLayout:
    hash_layout = layouts.layout("struct ftrace_hash")
    entry = layouts.layout("struct ftrace_func_entry")
    return HashLayout(size=hash_layout.size, size_bits=hash_layout.offset("size_bits"),
                      buckets=hash_layout.offset("buckets"), count=hash_layout.offset("count"),
                      entry_size=entry.size, entry_next=entry.offset("hlist.next"),
                      entry_ip=entry.offset("ip"),
                      entry_direct=entry.offset("direct") if entry.has_field("direct") else None)


@cache.cache_until(*cache.MEMORY)
def _hash(address: int) -> frozenset[int]:
    """The ips of one ftrace_hash, read once per stop (ops share hashes: global_ops'
    local_hash serves every ops whose func_hash points at it)."""
    return frozenset(read_hash_ips(address, _hash_layout(), memory.read))


@cache.cache_until(*cache.MEMORY)
def _direct_functions() -> dict[int, int]:
    """ip → direct trampoline of every direct call, from the `direct_functions` hash that
    ftrace_find_rec_direct() reads, on 6.1 and 6.12 alike (6.12's per-ops
    ops->direct_call holds the same address)."""
    table = symbols.kernel()
    where = table.address_of("direct_functions")
    if where is None:
        return {}
    try:
        return read_hash_ips(memory.read_u64(where), _hash_layout(), memory.read,
                             with_direct=True)
    except KpError:
        return {}


def _symbol_at(address: int) -> str | None:
    """The kernel-image symbol starting exactly at `address`, else None."""
    if not address or not symbols.in_kernel_image(address):
        return None
    found = symbols.kernel().lookup(address)
    return found[0] if found and found[1] == 0 else None


def _code_name(address: int, modules: list[kmodules.Module]) -> str:
    """`symbol` / `symbol [module]` / runtime code name / hex, for details."""
    if not address:
        return "0"
    if symbols.in_kernel_image(address):
        found = symbols.kernel().lookup(address)
        if found:
            return found[0] if not found[1] else f"{found[0]}+{found[1]:#x}"
    runtime = runtime_code_name(address)       # exact allocations: before module ranges
    if runtime is not None:
        return runtime
    module = kmodules.module_for(address, modules)
    if module is not None:
        try:
            found = module.symbol(address)
        except KpError:
            found = None
        if found:
            text = found[0] if not found[1] else f"{found[0]}+{found[1]:#x}"
            return f"{text} [{module.name}]"
        return f"{address:#x} [{module.name}]"
    return f"{address:#x}"


@dataclasses.dataclass(frozen=True)
class _Raw:
    address: int
    func: int
    flags: int
    private: int
    ops_func: int
    trampoline: int
    trampoline_size: int
    filter_hash: int
    notrace_hash: int
    direct_call: int


@cache.cache_until(*cache.MEMORY)
def _raw_ops() -> tuple[tuple[_Raw, ...], str | None]:
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

    def fetch(node: int) -> tuple[_Raw, int]:
        view = ops.view(memory.read(node, ops.size), node)
        func_hash = view.ptr("func_hash")
        filter_hash = notrace_hash = 0
        if func_hash:
            pair = hash_pair.view(memory.read(func_hash, hash_pair.size), func_hash)
            filter_hash, notrace_hash = pair.ptr("filter_hash"), pair.ptr("notrace_hash")
        raw = _Raw(node, view.ptr("func"), view.int("flags"), view.ptr("private"),
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


def _region_owner(address: int, modules: list[kmodules.Module]) -> tuple[str, str]:
    """(kind, words) for code at `address` by region: module / unlisted / kernel."""
    region = owners.region_of(address, modules)
    if region.kind == owners.KERNEL_IMAGE:
        return "kernel", "kernel"
    if region.kind == owners.MODULE:
        return "module", f"module {region.module}"
    kind = "unlisted_module" if region.kind == owners.MODULE_SPACE else "foreign_code"
    words = str(owners.Owner(kind, None, address, region.kind, "code"))
    return "unlisted", words.lower() if kind == "foreign_code" else words


def _bpf_prog(prog: int) -> dict[str, object]:
    """id, name and tag of a `struct bpf_prog` (prog->aux->id/name, prog->tag)."""
    layout = layouts.layout("struct bpf_prog")
    view = layout.view(memory.read(prog, layout.size), prog)
    aux_layout = layouts.layout("struct bpf_prog_aux")
    aux = view.ptr("aux")
    aux_view = aux_layout.view(memory.read(aux, aux_layout.size), aux)
    return {"prog_id": aux_view.int("id"), "prog_name": aux_view.string("name"),
            "prog_tag": view.bytes("tag").hex()}


def _prog_words(prog: dict[str, object]) -> str:
    return f"prog {prog['prog_id']} {prog['prog_name']}".rstrip()


def _fprobe_owner(raw: _Raw, modules: list[kmodules.Module]) -> tuple[str, str, dict]:
    """The `struct fprobe` around the ops, and around it a trace_fprobe or a BPF kprobe_multi
    link, told apart by the fprobe's handlers."""
    fprobe = layouts.layout("struct fprobe")
    address = raw.address - fprobe.offset("ops")
    view = fprobe.view(memory.read(address, fprobe.size), address)
    entry, exit_ = view.ptr("entry_handler"), view.ptr("exit_handler")
    names = {_symbol_at(entry), _symbol_at(exit_)}
    details: dict[str, object] = {"fprobe": address}
    if names & set(_TRACE_FPROBE_HANDLERS):
        tf = layouts.layout("struct trace_fprobe")
        outer = address - tf.offset("fp")
        tf_view = tf.view(memory.read(outer, tf.size), outer)
        event_ptr = tf_view.ptr("tp.event")
        event = layouts.layout("struct trace_probe_event")
        event_view = event.view(memory.read(event_ptr, event.size), event_ptr)
        group = layouts.printable(memory.read_cstring(event_view.ptr("class.system"), 64))
        name = layouts.printable(memory.read_cstring(event_view.ptr("call.name"), 64))
        details.update(trace_fprobe=outer, event=f"{group}/{name}")
        return "fprobe", f"fprobe event {group}/{name}", details
    if names & set(_KPROBE_MULTI_HANDLERS):
        link_layout = layouts.layout("struct bpf_kprobe_multi_link")
        outer = address - link_layout.offset("fp")
        link = link_layout.view(memory.read(outer, link_layout.size), outer)
        prog = _bpf_prog(link.ptr("link.prog"))
        details.update(link=outer, link_id=link.int("link.id"), **prog)
        return "fprobe", f"BPF kprobe_multi link {link.int('link.id')} " \
                         f"({_prog_words(prog)})", details
    handler = entry or exit_
    if handler:
        kind, words = _region_owner(handler, modules)
        details["entry_handler"] = _code_name(entry, modules)
        details["exit_handler"] = _code_name(exit_, modules)
        if kind == "unlisted":
            return "unlisted", f"fprobe with handlers {words}", details
        return "fprobe", f"fprobe of {words}", details
    return "fprobe", "fprobe without handlers", details


def _livepatch_owner(raw: _Raw, modules: list[kmodules.Module]) -> tuple[str, str, dict]:
    """struct klp_ops around the ops; the klp_func on top of its func_stack is the one that
    runs (klp_ftrace_handler() takes list_first_or_null_rcu())."""
    klp_ops = layouts.layout("struct klp_ops")
    address = raw.address - klp_ops.offset("fops")
    head = address + klp_ops.offset("func_stack")
    func_layout = layouts.layout("struct klp_func")
    first = memory.read_u64(head)
    if first == head:
        return "livepatch", "livepatch (no function on its stack)", {"klp_ops": address}
    func = first - func_layout.offset("stack_node")
    view = func_layout.view(memory.read(func, func_layout.size), func)
    old_name_ptr, new_func = view.ptr("old_name"), view.ptr("new_func")
    old_name = layouts.printable(memory.read_cstring(old_name_ptr, 128)) if old_name_ptr else "?"
    kind, words = _region_owner(new_func, modules)
    patch = words[len("module "):] if kind == "module" else words
    details = {"klp_ops": address, "klp_func": func, "old_name": old_name,
               "new_func": _code_name(new_func, modules)}
    if kind == "module":
        details["module"] = patch
    return ("unlisted" if kind == "unlisted" else "livepatch"), \
        f"livepatch {patch}: {old_name}", details


def _tramp_kind_names() -> dict[int, str]:
    """enum bpf_tramp_prog_type from DWARF: BPF_TRAMP_FENTRY → "fentry", ..."""
    try:
        fields = layouts.lookup_type("enum bpf_tramp_prog_type").strip_typedefs().fields()
    except KpError:
        return {}
    return {int(f.enumval): f.name[len("BPF_TRAMP_"):].lower() for f in fields
            if f.name.startswith("BPF_TRAMP_") and f.name != "BPF_TRAMP_MAX"}


def _bpf_trampoline_owner(raw: _Raw) -> tuple[str, str, dict]:
    """struct bpf_trampoline at ops->private (bpf_trampoline_lookup() sets
    tr->fops->private = tr), its programs from tr->progs_hlist per kind."""
    layout = layouts.layout("struct bpf_trampoline")
    tr = raw.private
    view = layout.view(memory.read(tr, layout.size), tr)
    if view.ptr("fops") != raw.address:
        raise KpError(f"ops->private {tr:#x} is not the bpf_trampoline of this ops")
    key = view.int("key")
    image = 0
    cur = view.ptr("cur_image")
    if cur:
        image_layout = layouts.layout("struct bpf_tramp_image")
        image = memory.read_u64(cur + image_layout.offset("image"))
    link_layout = layouts.layout("struct bpf_tramp_link")
    node_offset = link_layout.offset("tramp_hlist")
    heads = layout.field("progs_hlist")
    kinds = _tramp_kind_names()
    progs: list[dict[str, object]] = []
    for index in range(heads.size // 8):
        node = struct.unpack_from("<Q", view.data, heads.offset + index * 8)[0]
        seen = 0
        while node and seen < 1000 and arch.is_canonical(node):
            link = node - node_offset
            link_view = link_layout.view(memory.read(link, link_layout.size), link)
            prog = _bpf_prog(link_view.ptr("link.prog"))
            progs.append({"kind": kinds.get(index, str(index)), "link_id":
                          link_view.int("link.id"), **prog})
            node = link_view.ptr("tramp_hlist.next")
            seen += 1
    name = f"bpf_trampoline_{key}"
    details: dict[str, object] = {"trampoline_struct": tr, "key": key, "image": image,
                                  "image_name": name, "progs": progs}
    words = ", ".join(f"{p['kind']} {_prog_words(p)}" for p in progs) or "no programs"
    return "bpf_trampoline", f"BPF trampoline: {words}", details


def _decide(raw: _Raw, trace_arrays: dict[int, str],
            modules: list[kmodules.Module]) -> tuple[str, str, dict]:
    facts = OpsFacts(ops_symbol=_symbol_at(raw.address), func_symbol=_symbol_at(raw.func),
                     ops_func_symbol=_symbol_at(raw.ops_func),
                     func_region=owners.region_of(raw.func, modules).kind if raw.func
                     else owners.UNKNOWN,
                     flags=raw.flags, trace_array_ops=raw.address in trace_arrays,
                     has_direct_call=bool(raw.direct_call))
    kind = classify(facts)
    details: dict[str, object] = {"func_name": _code_name(raw.func, modules),
                                  "flag_names": flag_names(raw.flags)}
    if facts.ops_symbol:
        details["ops_symbol"] = facts.ops_symbol
    if kind == "kprobes":
        return kind, f"kprobes ({facts.ops_symbol or 'kprobe_ftrace_handler'})", details
    if kind == "function_tracer":
        words = trace_arrays.get(raw.address, "top instance")
        details["instance"] = words
        return kind, f"function tracer ({words})", details
    if kind == "fprobe":
        found = _fprobe_owner(raw, modules)
    elif kind == "livepatch":
        found = _livepatch_owner(raw, modules)
    elif kind == "bpf_trampoline":
        found = _bpf_trampoline_owner(raw)
    elif kind == "direct":
        targets = sorted({d for d in _direct_functions().values() if d} |
                         ({raw.direct_call} if raw.direct_call else set()))
        mine = [raw.direct_call] if raw.direct_call else targets
        names = [_code_name(t, modules) for t in mine]
        details["direct_calls"] = names
        region_kind, words = _region_owner(mine[0], modules) if mine else ("kernel", "kernel")
        if region_kind == "unlisted":
            return "unlisted", f"direct call into {words}", details
        return kind, f"direct call to {', '.join(names) or '?'} ({words})", details
    elif kind == "kernel":
        words = _KERNEL_OPS_WORDS.get(facts.ops_symbol or "") or \
            _KERNEL_FUNC_WORDS.get(facts.func_symbol or "") or \
            f"kernel ({facts.func_symbol or details['func_name']})"
        return kind, words, details
    else:                                   # module / unlisted: the callback's region says
        _region, words = _region_owner(raw.func, modules)
        return kind, words, details
    found[2].update(details)
    return found


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
        try:
            filter_ips = _hash(raw.filter_hash)
            filter_all = not filter_ips
        except KpError:
            filter_all = False
        try:
            kind, owner, details = _decide(raw, trace_arrays, modules)
        except KpError as exc:
            kind, owner, details = "unknown", "unknown", {"reason": str(exc)}
        if damage:
            details["list_damage"] = damage
        found.append(FtraceOps(address=raw.address, func=raw.func, flags=raw.flags,
                               trampoline=raw.trampoline or None, kind=kind, owner=owner,
                               details=details, filter_all=filter_all))
    return tuple(found)


def _hashes(ops: FtraceOps) -> tuple[frozenset[int], frozenset[int]]:
    raw = next(r for r in _raw_ops()[0] if r.address == ops.address)
    return _hash(raw.filter_hash), _hash(raw.notrace_hash)


def ops_on(ip: int) -> tuple[FtraceOps, ...]:
    """The ops whose filter hash takes `ip` (an empty one takes all) and whose notrace hash
    does not: ftrace_ops_test() for every ops on the list, in list order."""
    found = []
    for ops in ops_list():
        try:
            filter_ips, notrace_ips = _hashes(ops)
        except KpError:
            continue
        if hash_contains(filter_ips, notrace_ips, ip):
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
    kprobe's int3, an optprobe's jmp, or something else."""
    data = memory.read(ip, arch.MCOUNT_INSN_SIZE)
    if data == arch.NOP5:
        return SiteContents(ip, "nop", None, "", "nop (ftrace does not call anything here)")
    if data[0] == arch.INT3:
        return SiteContents(ip, "int3", None, "", "int3 (a kprobe, or ftrace patching it now)")
    if data[0] in (arch.CALL32, arch.JMP32):
        target = arch.u64(ip + arch.MCOUNT_INSN_SIZE + struct.unpack_from("<i", data, 1)[0])
        modules, _damage = _modules()
        name = _code_name(target, modules)
        if data[0] == arch.JMP32:
            return SiteContents(ip, "jmp", target, name, f"jmp {name} (an optimized kprobe)")
        base = name.split("+")[0].split(" ")[0]
        if base in _CALLERS:
            words = f"call {name}: {_CALLERS[base]}"
        elif base == "ftrace_trampoline":
            words = f"call {name}: one ops' own trampoline"
        elif base.startswith("bpf_trampoline_"):
            words = f"call {name}: a BPF trampoline (direct call)"
        elif target in set(_direct_functions().values()):
            words = f"call {name}: a direct call"
        else:
            words = f"call {name}"
        return SiteContents(ip, "call", target, name, words)
    return SiteContents(ip, "other", None, "", f"other code ({data.hex(' ')})")


# ------------------------------------------------------------ code allocated at run time

@cache.cache_until(*cache.MEMORY)
def _runtime_code() -> tuple[tuple[int, int, str], ...]:
    """(start, end, name) of code the kernel allocated at run time, as /proc/kallsyms lists
    it: ftrace_get_trampoline_kallsym() (ops on ftrace_ops_trampoline_list, "ftrace_trampoline"
    of [__builtin__ftrace]), kprobe_cache_get_kallsym() (kprobe_insn_slots and
    kprobe_optinsn_slots pages, named by the cache's sym), bpf_get_kallsym() (bpf_kallsyms:
    programs, trampolines, dispatchers, each `struct bpf_ksym` with its name)."""
    table = symbols.kernel()
    found: list[tuple[int, int, str]] = []
    ops = layouts.try_layout("struct ftrace_ops")
    head = table.address_of("ftrace_ops_trampoline_list")
    if ops is not None and head is not None and ops.has_field("trampoline_size"):
        walk = lists.for_each_entry(head, ops, "list",
                                    lambda v: (v.ptr("trampoline"), v.int("trampoline_size")),
                                    "ftrace_ops_trampoline_list")
        found += [(start, start + max(size, 1), "ftrace_trampoline")
                  for start, size in walk.items if start]
    insn_cache = layouts.try_layout("struct kprobe_insn_cache")
    page = layouts.try_layout("struct kprobe_insn_page")
    for slots in ("kprobe_insn_slots", "kprobe_optinsn_slots"):
        where = table.address_of(slots)
        if where is None or insn_cache is None or page is None:
            continue
        try:
            view = insn_cache.view(memory.read(where, insn_cache.size), where)
            sym_ptr = view.ptr("sym")
            name = layouts.printable(memory.read_cstring(sym_ptr, 64)) if sym_ptr else slots
        except KpError:
            continue
        walk = lists.for_each_entry(where + insn_cache.offset("pages"), page, "list",
                                    lambda v: v.ptr("insns"), slots)
        found += [(insns, insns + PAGE_SIZE, name) for insns in walk.items if insns]
    ksym = layouts.try_layout("struct bpf_ksym")
    head = table.address_of("bpf_kallsyms")
    if ksym is not None and head is not None:
        walk = lists.for_each_entry(head, ksym, "lnode",
                                    lambda v: (v.ptr("start"), v.ptr("end"), v.string("name")),
                                    "bpf_kallsyms")
        found += [item for item in walk.items if item[0]]
    return tuple(sorted(found))


def runtime_code_name(address: int) -> str | None:
    """The name /proc/kallsyms gives the run-time code holding `address` ("ftrace_trampoline",
    "kprobe_insn_page", "kprobe_optinsn_page", "bpf_trampoline_<key>", "bpf_prog_<tag>_<name>"),
    with +offset when inside; None when no such code holds it."""
    try:
        ranges = _runtime_code()
    except KpError:
        return None
    for start, end, name in ranges:
        if start <= address < end:
            return name if address == start else f"{name}+{address - start:#x}"
    return None
