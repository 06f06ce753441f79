"""Whose a `struct ftrace_ops` is: classified by identity and callback, then followed to the
object around it (kernel/trace/ftrace.c and its users):

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
  unknown         a struct or field this kernel's DWARF lacks (ftrace_ops.py says why)
"""
from __future__ import annotations

import dataclasses
import struct

from gdb_kprobe import arch
from gdb_kprobe.errors import KpError
from gdb_kprobe.kernel import ftrace_hash, owners
from gdb_kprobe.kernel import modules as kmodules
from gdb_kprobe.kernel.runtime_code import code_name, symbol_at
from gdb_kprobe.target import layouts, memory

__all__ = ["KINDS", "FTRACE_OPS_FL", "flag_names", "OpsFields", "OpsFacts", "classify",
           "decide"]

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



def flag_names(flags: int) -> list[str]:
    """FTRACE_OPS_FL_* names set in `flags` (unknown bits as hex)."""
    names = [name for name, bit in FTRACE_OPS_FL.items() if flags & bit]
    rest = flags & ~sum(FTRACE_OPS_FL.values())
    return names + ([f"{rest:#x}"] if rest else [])




@dataclasses.dataclass(frozen=True)
class OpsFields:
    """The fields of one `struct ftrace_ops` the classification reads (its hashes through
    ops->func_hash)."""

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




def _region_owner(address: int, modules: list[kmodules.Module]) -> tuple[str, str]:
    """(kind, words) for code at `address` by region: module / unlisted / kernel."""
    region = owners.region_of(address, modules)
    if region.kind == owners.KERNEL_IMAGE:
        return "kernel", "kernel"
    if region.kind == owners.MODULE:
        return "module", f"module {region.module}"
    # kp-list -v's flagged words: module space of no listed module, or code elsewhere
    kind = "unlisted_module" if region.kind == owners.MODULE_SPACE else "foreign_code"
    return "unlisted", str(owners.Owner(kind, None, address, region.kind, "code"))


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


def _fprobe_owner(raw: OpsFields, modules: list[kmodules.Module]) -> tuple[str, str, dict]:
    """The `struct fprobe` around the ops, and around it a trace_fprobe or a BPF kprobe_multi
    link, told apart by the fprobe's handlers."""
    fprobe = layouts.layout("struct fprobe")
    address = raw.address - fprobe.offset("ops")
    view = fprobe.view(memory.read(address, fprobe.size), address)
    entry, exit_ = view.ptr("entry_handler"), view.ptr("exit_handler")
    names = {symbol_at(entry), symbol_at(exit_)}
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
        details["entry_handler"] = code_name(entry, modules)
        details["exit_handler"] = code_name(exit_, modules)
        if kind == "unlisted":
            return "unlisted", f"fprobe with handlers {words}", details
        return "fprobe", f"fprobe of {words}", details
    return "fprobe", "fprobe without handlers", details


def _livepatch_owner(raw: OpsFields, modules: list[kmodules.Module]) -> tuple[str, str, dict]:
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
               "new_func": code_name(new_func, modules)}
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


def _bpf_trampoline_owner(raw: OpsFields) -> tuple[str, str, dict]:
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


def decide(raw: OpsFields, trace_arrays: dict[int, str],
            modules: list[kmodules.Module]) -> tuple[str, str, dict]:
    facts = OpsFacts(ops_symbol=symbol_at(raw.address), func_symbol=symbol_at(raw.func),
                     ops_func_symbol=symbol_at(raw.ops_func),
                     func_region=owners.region_of(raw.func, modules).kind if raw.func
                     else owners.UNKNOWN,
                     flags=raw.flags, trace_array_ops=raw.address in trace_arrays,
                     has_direct_call=bool(raw.direct_call))
    kind = classify(facts)
    details: dict[str, object] = {"func_name": code_name(raw.func, modules),
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
        # 6.12: ops->direct_call; 6.1: each of the ops' ips in direct_functions
        direct = ftrace_hash.direct_functions()
        mine = [raw.direct_call] if raw.direct_call else sorted(
            {direct[ip] for ip in ftrace_hash.hash_ips(raw.filter_hash) if direct.get(ip)})
        names = [code_name(t, modules) for t in mine]
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

