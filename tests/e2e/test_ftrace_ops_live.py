"""kernel/ftrace_ops (issue #16) against the guest's own /sys/kernel/tracing/enabled_functions.

At run time the guest gets the function tracer with set_ftrace_filter on a seeded draw from
available_filter_functions, kprobe_events entry probes (ftrace-based kprobes) on one of those
functions and on one of no other hook, a tracing instance's function tracer, and on 6.12
an fprobe event (dynamic_events) on another. Then, at one stop, every function enabled_functions lists must be in hooked_ips()
with as many ops as its count, with the same callback and trampoline it prints, with the R/I
flags its ops ask for, and nothing more; site_at() must show the call enabled_functions
implies (the one ops' trampoline, else ftrace_caller/ftrace_regs_caller) and a nop on
functions nothing hooks.
"""
from __future__ import annotations

import json
import os
import random
import re

import pytest

SEED = int(os.environ.get("KP_FTRACE_OPS_SEED", "16"))
TRACING = "/sys/kernel/tracing"
FILTERED = 24                    # functions handed to set_ftrace_filter
SAVE_REGS, IPMODIFY = 1 << 2, 1 << 12

# What gdb computes at the stop: one JSON line per hooked ip, and site_at() of a few others.
PROBE = r'''
import json
from gdb_kprobe.kernel import ftrace, ftrace_ops, kallsyms
from gdb_kprobe.target import symbols
symbolizer = kallsyms.Symbolizer()

def name(address):
    found = symbolizer.lookup(address)
    if found is None:
        return None
    return found.symbol + (f" [{found.module}]" if found.module else "")

def named(address):
    found = symbolizer.lookup(address)
    return None if found is None else str(found)

print("KP-OPS " + json.dumps([dict(address=o.address, kind=o.kind, owner=o.owner,
      func=named(o.func), trampoline=o.trampoline, flags=o.flags) for o in ftrace_ops.ops_list()]))
for ip, ops in ftrace_ops.hooked_ips().items():
    site = ftrace_ops.site_at(ip)
    print("KP-HOOK " + json.dumps(dict(ip=ip, name=name(ip), ops=[o.address for o in ops],
          site=site.kind, target=site.target, target_name=site.target_name,
          expected=ftrace_ops.expected_site(ip, ops).target, on=[o.address for o in ftrace_ops.ops_on(ip)],
          target_kallsyms=named(site.target) if site.target else None)))
for function in __QUIET_NAMES__:
    start = symbols.kernel().address_of(function)
    ip = ftrace.location_range(start, start + symbols.kernel().lookup(start)[2] - 1)
    site = ftrace_ops.site_at(ip)
    print("KP-QUIET " + json.dumps(dict(ip=ip, name=name(ip), site=site.kind, words=site.words)))
'''

LINE = re.compile(r"^(?P<name>\S+(?: \[\S+\])?) \((?P<count>\d+)\)(?P<flags>[ RIDOM]*?)"
                  r"(?:\s+tramp: (?P<tramp>\S+(?: \[\S+\])?) \((?P<func>[^)]*)\))?"
                  r"(?: ->(?P<arrow>\S+))?\s*$")


def parse_enabled(text: str) -> list[dict]:
    """enabled_functions' lines (t_show()): name, (count), R/I/D flags, tramp and callback;
    a `\\tdirect-->` continuation line is kept with its function."""
    rows: list[dict] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("\t") and rows:
            rows[-1]["more"] = line.strip()
            continue
        match = LINE.match(line)
        assert match, f"an enabled_functions line this test cannot read: {line!r}"
        row = match.groupdict()
        row["count"] = int(row["count"])
        row["flags"] = set(row["flags"].split())
        rows.append(row)
    return rows


def _draw(session) -> dict[str, object]:
    """The seeded choice of functions from the guest's available_filter_functions: kernel
    functions whose name is listed once (set_ftrace_filter takes every function of a name)."""
    listing = session.guest(f"cat {TRACING}/available_filter_functions", timeout=120)
    names = [line.strip() for line in listing.splitlines()]
    counts: dict[str, int] = {}
    for entry in names:
        counts[entry] = counts.get(entry, 0) + 1
    unique = sorted(n for n, c in counts.items() if c == 1 and " " not in n and
                    re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n))
    rng = random.Random(f"{SEED}-{session.lab.kernel_name}")
    rng.shuffle(unique)
    return {"pool": unique}


def _plant(session, kernel: str) -> dict[str, object]:
    """Set the hooks up in the guest; return what was asked for."""
    pool = list(_draw(session)["pool"])
    filtered = pool[:FILTERED]
    rest = pool[FILTERED:]
    session.guest(f"echo > {TRACING}/set_ftrace_filter")
    for name in filtered:
        session.guest(f"echo {name} >> {TRACING}/set_ftrace_filter", check=False)
    session.guest(f"echo function > {TRACING}/current_tracer")
    # a tracing instance has an ops of its own (trace_array.ops, kmalloc'ed)
    instance = f"{TRACING}/instances/kp_ops"
    session.guest(f"mkdir -p {instance}")
    for name in filtered[:2] + rest[200:202]:
        session.guest(f"echo {name} >> {instance}/set_ftrace_filter", check=False)
    session.guest(f"echo function > {instance}/current_tracer")

    def probe(line: str, event: str, candidates: list[str]) -> str | None:
        """The first candidate the kernel takes (some are blacklisted or refused)."""
        for name in candidates[:40]:
            out = session.guest(f"echo '{line.format(name=name)}' >> {TRACING}/{event}",
                                check=False)
            if "rror" not in out and "nvalid" not in out:
                return name
        return None

    shared = probe("p:kprobes/kp_ops_shared {name}", "kprobe_events", filtered)
    alone = probe("p:kprobes/kp_ops_alone {name}", "kprobe_events", rest)
    fprobe = None
    if kernel == "6.12":
        fprobe = probe("f:fprobes/kp_ops_fprobe {name}", "dynamic_events", rest[40:])
    for event in ("kprobes/kp_ops_shared", "kprobes/kp_ops_alone", "fprobes/kp_ops_fprobe"):
        session.guest(f"test -d {TRACING}/events/{event} && "
                      f"echo 1 > {TRACING}/events/{event}/enable || true")
    return {"filtered": filtered, "shared": shared, "alone": alone, "fprobe": fprobe,
            "quiet": rest[100:106]}


def _stop_and_read(session, probe_file, quiet: list[str]) -> tuple[str, str]:
    """enabled_functions and the plugin's view at the same stop (retried while it moves)."""
    probe_file.write_text(PROBE.replace("__QUIET_NAMES__", repr(quiet)))
    for _ in range(5):
        session.resume()
        before = session.lab.guest.run(f"cat {TRACING}/enabled_functions")
        ours = session.gdb_cmd(f"source {probe_file}")
        after = session.guest(f"cat {TRACING}/enabled_functions")
        if before == after:
            return before, ours
    raise AssertionError("enabled_functions changed around every stop")


def _kallsyms_runtime(session) -> dict[int, str]:
    """address → name of /proc/kallsyms' run-time code entries ([__builtin__*], [bpf])."""
    text = session.guest("grep -E '\\[(__builtin__[a-z]+|bpf)\\]$' /proc/kallsyms || true")
    found = {}
    for line in text.splitlines():
        address, _type, name, _module = line.split()
        found[int(address, 16)] = name
    return found


def test_runtime_code_names_match_kallsyms(session, kernel, tmp_path):
    """runtime_code_name() of every run-time code entry /proc/kallsyms lists: the default
    scenario's probes give kprobe_insn_page, kprobe_optinsn_page and ftrace_trampoline."""
    runtime = _kallsyms_runtime(session)
    assert "kprobe_insn_page" in runtime.values() and "ftrace_trampoline" in runtime.values()
    script = tmp_path / "names.py"
    script.write_text("from gdb_kprobe.kernel import ftrace_ops\n"
                      f"for address in {sorted(runtime)!r}:\n"
                      "    print('KP-NAME', hex(address), ftrace_ops.runtime_code_name(address),"
                      " ftrace_ops.runtime_code_name(address + 1))\n")
    out = session.gdb_cmd(f"source {script}")
    assert runtime == _kallsyms_runtime(session), "kallsyms changed around the stop"
    ours = {int(a, 16): (n, n1) for _tag, a, n, n1 in
            (line.split() for line in out.splitlines() if line.startswith("KP-NAME "))}
    assert {a: n for a, (n, _n1) in ours.items()} == runtime, out
    assert all(n1 == f"{n}+0x1" for n, n1 in ours.values()), out
    print(f"\n[{kernel}] runtime_code_name() = /proc/kallsyms for {len(runtime)} entries: " +
          ", ".join(sorted(set(runtime.values()))))


def _lines(ours: str, tag: str) -> list[dict]:
    return [json.loads(line[len(tag) + 1:]) for line in ours.splitlines()
            if line.startswith(tag + " ")]


def test_enabled_functions_agree(session, kernel, tmp_path):
    planted = _plant(session, kernel)
    runtime = _kallsyms_runtime(session)
    assert planted["shared"] and planted["alone"], f"no kprobe could be placed: {planted}"
    enabled, ours = _stop_and_read(session, tmp_path / "probe.py", planted["quiet"])
    assert "Traceback" not in ours and "Error" not in ours, ours
    rows = parse_enabled(enabled)
    ops = {o["address"]: o for o in _lines(ours, "KP-OPS")[0]}
    hooks = _lines(ours, "KP-HOOK")
    context = f"(seed {SEED})\n--- enabled_functions\n{enabled}--- ours\n{ours}"

    # the same functions, nothing more, nothing less
    assert sorted(r["name"] for r in rows) == sorted(h["name"] for h in hooks), context
    by_name = {h["name"]: h for h in hooks}
    for row in rows:
        hook = by_name[row["name"]]
        mine = [ops[a] for a in hook["ops"]]
        where = f"{row['name']}: {row} vs {hook} {mine} {context}"
        assert row["count"] == len(mine), where
        assert ("R" in row["flags"]) == any(o["flags"] & SAVE_REGS for o in mine), where
        assert ("I" in row["flags"]) == any(o["flags"] & IPMODIFY for o in mine), where
        assert hook["site"] == "call", where
        assert hook["expected"] == hook["target"], where        # expected_site() = site_at()
        assert hook["on"] == hook["ops"], where                 # ops_on() = hooked_ips()
        if row["tramp"]:
            # one ops with its own trampoline: the kernel prints it and its callback
            (only,) = mine
            assert row["func"].split("/")[0] == only["func"], where
            assert only["trampoline"] and hook["target"] == only["trampoline"], where
            if row["tramp"].startswith("0x"):
                assert int(row["tramp"], 16) == only["trampoline"], where
            # else %pS named the trampoline after a module's init function whose freed
            # memory it reuses (ftrace_mod_address_lookup(): ftrace keeps init functions'
            # names for old trace lines); /proc/kallsyms says what it is:
            assert runtime.get(only["trampoline"]) == "ftrace_trampoline", where
            assert hook["target_name"] == "ftrace_trampoline", where
        elif "D" not in row["flags"]:
            caller = "ftrace_regs_caller" if "R" in row["flags"] else "ftrace_caller"
            assert hook["target_name"] == caller, where

    kinds = {ops[a]["kind"] for h in hooks for a in h["ops"]}
    assert {"function_tracer", "kprobes"} <= kinds, context
    owners = {o["owner"] for o in ops.values()}
    assert {"function tracer (top instance)", "function tracer (instance kp_ops)"} <= owners, \
        context
    shared = by_name[planted["shared"]]
    # the kprobe's function is also in the function tracer's filter (and maybe the instance's)
    assert {"function_tracer", "kprobes"} <= {ops[a]["kind"] for a in shared["ops"]}, context
    if planted["fprobe"]:
        fprobe = [ops[a] for a in by_name[planted["fprobe"]]["ops"]]
        assert [o["owner"] for o in fprobe] == ["fprobe event fprobes/kp_ops_fprobe"], context
    for quiet in _lines(ours, "KP-QUIET"):
        assert quiet["site"] == "nop", f"{quiet} {context}"
    print(f"\n[{kernel}] seed {SEED}: {len(rows)} functions in enabled_functions, "
          f"{len(hooks)} in hooked_ips(); ops: " +
          "; ".join(f"{o['kind']}={o['owner']}" for o in ops.values()))


# Every struct field ftrace_owners follows to an owner, for the owners the lab cannot plant
# here (BPF kprobe_multi links and trampolines, livepatch, direct calls: another helper's
# guest programs): the paths must exist in each kernel's DWARF, or the owner degrades to
# "unknown". 6.1's cloud kernel has no CONFIG_FPROBE: no struct fprobe users there.
FIELDS = {
    "struct ftrace_ops": ["func", "next", "flags", "private", "func_hash", "trampoline",
                          "trampoline_size", "list", "ops_func"],
    "struct ftrace_ops_hash": ["filter_hash", "notrace_hash"],
    "struct ftrace_hash": ["size_bits", "buckets", "count"],
    "struct ftrace_func_entry": ["hlist.next", "ip", "direct"],
    "struct trace_array": ["list", "name", "ops"],
    "struct klp_ops": ["fops", "func_stack"],
    "struct klp_func": ["old_name", "new_func", "stack_node"],
    "struct bpf_trampoline": ["fops", "key", "cur_image", "progs_hlist"],
    "struct bpf_tramp_image": ["image"],
    "struct bpf_tramp_link": ["link.id", "link.prog", "tramp_hlist.next"],
    "struct bpf_prog": ["aux", "tag"],
    "struct bpf_prog_aux": ["id", "name"],
    "struct bpf_ksym": ["start", "end", "name", "lnode"],
    "struct kprobe_insn_cache": ["sym", "pages"],
    "struct kprobe_insn_page": ["list", "insns"],
}
FPROBE_FIELDS = {
    "struct fprobe": ["ops", "entry_handler", "exit_handler"],
    "struct trace_fprobe": ["fp", "tp.event"],
    "struct bpf_kprobe_multi_link": ["fp", "link.id", "link.prog"],
}


def test_owner_fields_are_in_dwarf(session, kernel, tmp_path):
    wanted = dict(FIELDS)
    if kernel == "6.12":
        wanted.update(FPROBE_FIELDS)
    script = tmp_path / "fields.py"
    script.write_text("from gdb_kprobe.target import layouts\n"
                      f"for name, paths in {wanted!r}.items():\n"
                      "    layout = layouts.try_layout(name)\n"
                      "    for path in paths:\n"
                      "        ok = layout is not None and layout.has_field(path)\n"
                      "        print('KP-FIELD', name.split()[1], path, layout is not None, ok)\n"
                      "print('KP-ENUM', sorted(f.name for f in layouts.lookup_type("
                      "'enum bpf_tramp_prog_type').fields()))\n")
    out = session.gdb_cmd(f"source {script}")
    rows = [line.split()[1:] for line in out.splitlines() if line.startswith("KP-FIELD")]
    # the Debian kernels have livepatch and BPF; 6.1-fp (tinyconfig) has neither: a struct
    # missing whole is fine there (its owners read as "unknown"), a field of a present one not
    debian = kernel in ("6.1", "6.12")
    missing = [row for row in rows if row[3] == "False" and (debian or row[2] == "True")]
    assert not missing and len(rows) == sum(map(len, wanted.values())), out
    if debian:
        assert "BPF_TRAMP_FENTRY" in out and "BPF_TRAMP_FEXIT" in out, out
