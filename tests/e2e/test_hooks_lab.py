"""Issue 16, the lab side of kp-hooks: the hooks scenario (qemu/scenarios/hooks-6.1,
hooks-6.12) boots with every kind of dynamic hook its kernel has, and qemu/hooks_oracle.py
sees each of them in the guest's own files. A loader that broke (kp_hookload, a lab module,
a scenario line) fails here, before kp-hooks' own tests would compare against a view with
a kind missing. Kernels without a hooks scenario (6.1-fp: no BPF, no livepatch) are skipped."""
from __future__ import annotations

import pytest

from conftest import LIST, Session
from qemu import build
from qemu import hooks_oracle as oracle
from qemu.lab import Lab

COMMON = {"trace_kprobe", "trace_kretprobe", "function_tracer", "kprobes_ftrace_ops"}
# What each kernel must show on each function. 6.1 (Debian cloud) has no CONFIG_FPROBE: no
# fprobe events and no kprobe_multi links.
EXPECTED = {
    "6.1": {
        "vfs_read": COMMON | {"perf_kprobe", "fentry", "module_ftrace_ops"},
        "inet_csk_accept": COMMON | {"module_kprobe", "module_kretprobe", "perf_kprobe",
                                     "perf_kretprobe", "fexit"},
        "vfs_statx": {"module_kprobe", "kprobes_ftrace_ops"},
        "cmdline_proc_show": {"livepatch"},
    },
}
EXPECTED["6.12"] = {name: kinds | ({"fprobe_event", "kprobe_multi"}
                                   if name in ("vfs_read", "inet_csk_accept") else set())
                    for name, kinds in EXPECTED["6.1"].items()}


@pytest.fixture(scope="module")
def hooks(kernel, gdb_binary):
    if not (build.SCENARIOS / f"hooks-{kernel}").is_file():
        pytest.skip(f"no hooks scenario for {kernel}")
    lab = Lab(kernel, "hooks")
    lab.start()                 # fails on KP-LAB-SCENARIO-FAILED: a hook did not attach
    try:
        yield Session(lab, lab.gdb(gdb_binary=gdb_binary))
    finally:                       # also when attaching gdb failed
        lab.stop()


@pytest.fixture(scope="module")
def view(hooks) -> oracle.HooksView:
    hooks.resume()
    return oracle.view_of(hooks.lab.guest)


def test_every_kind_is_there(kernel, view):
    for function, kinds in EXPECTED[kernel].items():
        assert view.function(function).kinds() == kinds, (function, oracle.render(view))
    assert bool(view.hookload_unavailable) == (kernel == "6.1"), view.hookload_unavailable


def test_the_guests_files_agree_with_each_other(view):
    """kprobes/list rows are exactly the kprobe-kind hooks, enabled_functions counts exactly
    the ftrace_ops the hooks account for, per function."""
    kprobe_kinds = {"trace_kprobe": "k", "module_kprobe": "k", "perf_kprobe": "k",
                    "trace_kretprobe": "r", "module_kretprobe": "r", "perf_kretprobe": "r"}
    for name, hooks in view.functions.items():
        ours = sorted(kprobe_kinds[h.kind] for h in hooks.hooks if h.kind in kprobe_kinds)
        assert ours == sorted(row.kind for row in hooks.kprobe_rows), name
        assert hooks.ftrace is not None or not hooks.kprobe_rows, name
        if hooks.ftrace:
            assert oracle.ftrace_ops_expected(hooks) == hooks.ftrace.count, (name, hooks)


def test_bpf_ids_agree_with_fdinfo_and_the_trampoline(view):
    for hook in view.hookload:
        prog = view.fdinfo[hook.prog_fd]
        assert int(prog.fields["prog_id"]) == hook.prog_id and hook.prog_id > 0
        if hook.link_fd is not None:
            assert int(view.fdinfo[hook.link_fd].fields["link_id"]) == hook.link_id
        if hook.kind in ("fentry", "fexit"):
            site = view.function(hook.functions[0]).ftrace
            assert "D" in site.flags and site.direct_btf_id == hook.btf_id, site


def test_the_hooks_fire(hooks, view):
    """They are live, not only registered: the trace events record calls made now."""
    hooks.resume()
    hooks.lab.guest.run("echo > /sys/kernel/tracing/trace; cat /proc/version > /dev/null")
    trace = hooks.lab.guest.run("cat /sys/kernel/tracing/trace")
    assert "kp_hook_read:" in trace and "kp_hook_read_ret:" in trace
    assert "vfs_read <-" in trace            # the function tracer
    if any(e.type == "f" for e in view.dynamic_events):
        assert "kp_hook_fread:" in trace
    assert "live patched" in hooks.lab.guest.run("cat /proc/cmdline")


def test_kp_list_still_equals_debugfs(hooks):
    """Perf-event kprobes (no kprobe_events line) and everything else around them change
    nothing in kp-list: byte for byte the debugfs list."""
    hooks.resume()
    debugfs = hooks.lab.guest.settled(f"cat {LIST}")
    assert hooks.gdb_cmd("kp-list") == debugfs
