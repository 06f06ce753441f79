"""qemu/hooks_oracle.py's parsers on what the real guests printed: tests/data/hooks/collect-*.txt
are qemu.hooks_oracle.collect() of the hooks scenario on Debian's 6.1 and 6.12 cloud kernels."""
from __future__ import annotations

import pathlib

import pytest

from qemu import hooks_oracle as oracle

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "hooks"


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def captured(request) -> tuple[str, oracle.HooksView]:
    return request.param, oracle.parse((DATA / f"collect-{request.param}.txt").read_text())


def test_kprobes_list_rows(captured):
    kernel, view = captured
    rows = view.function("inet_csk_accept").kprobe_rows
    assert sorted(row.kind for row in rows) == ["k", "k", "k", "r", "r", "r"]
    assert all(row.flags == ("FTRACE",) and row.module is None for row in rows)
    # 6.12's probe on an ftrace site sits after endbr64, +0x4
    assert {row.offset for row in rows} == ({0} if kernel == "6.1" else {4})
    assert [row.kind for row in view.function("vfs_statx").kprobe_rows] == ["k"]


def test_enabled_functions_both_formats(captured):
    kernel, view = captured
    read = view.function("vfs_read").ftrace
    assert read.count == (4 if kernel == "6.1" else 6)
    assert read.flags == {"R", "D"}
    assert read.call_target == "arch_ftrace_ops_list_func+0x0/0x1d0"
    assert read.trampolines == () and read.ops is None
    assert read.direct.startswith("bpf_trampoline_")
    fentry = next(h for h in view.hookload if h.kind == "fentry")
    assert read.direct_btf_id == fentry.btf_id
    assert read.direct_key >> 32 == 1            # vmlinux's BTF object
    patched = view.function("cmdline_proc_show").ftrace
    assert patched.count == 1 and "I" in patched.flags
    assert [t.func for t in patched.trampolines] == ["klp_ftrace_handler+0x0/0x100"
                                                     if kernel == "6.12" else
                                                     "klp_ftrace_handler+0x0/0x110"]
    assert patched.call_target.startswith("klp_ftrace_handler+")
    assert ("M" in patched.flags) == (kernel == "6.12")
    statx = view.function("vfs_statx").ftrace
    assert statx.trampolines[0].func.startswith("kprobe_ftrace_handler+")
    assert statx.trampolines[0].trampoline == "0xffffffffc0201000"


def test_enabled_functions_stale_trampoline_symbol_on_61():
    """6.1 prints a livepatch trampoline that reuses freed module init memory with that
    memory's old symbol: the parser keeps the text and still finds the ops' func."""
    view = oracle.parse((DATA / "collect-6.1.txt").read_text())
    tramp = view.function("cmdline_proc_show").ftrace.trampolines[0]
    assert tramp.trampoline == "kp_ftrace_ops_init+0x0/0x1000 [kp_ftrace_ops]"


def test_enabled_functions_other_shapes():
    """Shapes the captures do not have: a module's function, 6.12's `ops:` (CALL_OPS_EN),
    several trampolines on one record."""
    text = ("kp_lab_target [kp_lab_kprobe] (1) R         \ttramp: 0xffffffffc0201000 "
            "(kprobe_ftrace_handler+0x0/0x1d0) ->kprobe_ftrace_handler+0x0/0x1d0\n"
            "vfs_write (1)       O    \tops: kp_ops+0x0/0xa0 [kp_ftrace_ops] "
            "(kp_ftrace_ops_callback+0x0/0x10 [kp_ftrace_ops]) ->ftrace_caller+0x0/0x90\n"
            "ksys_read (2) R  \ttramp: 0xffffffffc0201000 (a+0x0/0x1)\ttramp: 0xffffffffc0202000 "
            "(b+0x0/0x1) ->ftrace_regs_caller+0x0/0x90\n")
    first, second, third = oracle.parse_enabled_functions(text)
    assert (first.function, first.module, first.count) == ("kp_lab_target", "kp_lab_kprobe", 1)
    assert second.flags == {"O"}
    assert second.ops == ("kp_ops+0x0/0xa0 [kp_ftrace_ops]",
                          "kp_ftrace_ops_callback+0x0/0x10 [kp_ftrace_ops]")
    assert [t.func for t in third.trampolines] == ["a+0x0/0x1", "b+0x0/0x1"]
    assert third.call_target == "ftrace_regs_caller+0x0/0x90"


def test_dynamic_events(captured):
    kernel, view = captured
    by_name = {f"{e.group}/{e.event}": e for e in view.dynamic_events}
    ret = by_name["kprobes/kp_hook_read_ret"]
    assert (ret.type, ret.maxactive, ret.function, ret.is_return, ret.enabled) == \
        ("r", 10, "vfs_read", True, True)
    assert ret.args == ("ret=$retval",)
    if kernel == "6.12":
        fexit = by_name["fprobes/kp_hook_faccept_ret"]
        assert (fexit.type, fexit.function, fexit.is_return) == ("f", "inet_csk_accept", True)
        assert not by_name["fprobes/kp_hook_fread"].is_return
    else:
        assert all(e.group == "kprobes" for e in view.dynamic_events)


def test_dynamic_event_places():
    event, = oracle.parse_dynamic_events("p:kprobes/x kp_lab_kprobe:kp_lab_target+0x4 a=%di\n")
    assert event.function == "kp_lab_target" and event.enabled is None


def test_hookload_lines_and_fdinfo_agree(captured):
    kernel, view = captured
    kinds = [h.kind for h in view.hookload]
    expected = ["perf", "perftask", "perfret", "fentry", "fexit"]
    if kernel == "6.12":
        expected.insert(3, "multi")
    assert kinds == expected
    assert bool(view.hookload_unavailable) == (kernel == "6.1")
    assert view.hookload_pid
    for hook in view.hookload:
        prog = view.fdinfo[hook.prog_fd]
        assert prog.target == "anon_inode:bpf-prog"
        assert int(prog.fields["prog_id"]) == hook.prog_id
        assert prog.fields["prog_tag"] == hook.prog_tag
        if hook.perf_fd is not None:
            assert view.fdinfo[hook.perf_fd].target == "anon_inode:[perf_event]"
        if hook.link_fd is not None:
            link = view.fdinfo[hook.link_fd]
            assert link.target == "anon_inode:bpf_link"
            assert int(link.fields["link_id"]) == hook.link_id
            assert int(link.fields["prog_id"]) == hook.prog_id
            if hook.kind in ("fentry", "fexit"):
                assert link.fields["link_type"] == "tracing"
                assert link.fields["attach_type"] == ("24" if hook.kind == "fentry" else "25")
                # bpf_tracing_link_show_fdinfo() prints the target only since 6.2
                assert ("target_btf_id" in link.fields) == (kernel == "6.12")
                assert int(link.fields.get("target_btf_id", hook.btf_id)) == hook.btf_id
            else:
                assert link.fields["link_type"] == "kprobe_multi"
    task = next(h for h in view.hookload if h.kind == "perftask")
    assert (task.pid, task.cpu) == (view.hookload_pid, -1)


def test_module_lines(captured):
    _, view = captured
    by_module = {h.module: h for h in view.module_hooks}
    assert by_module["kp_lab_kprobe"].function == "inet_csk_accept"
    assert by_module["kp_lab_kretprobe"].kind == "module_kretprobe"
    assert by_module["kp_hidden"].function == "vfs_statx"
    assert by_module["kp_ftrace_ops"].kind == "module_ftrace_ops"
    assert by_module["kp_ftrace_ops"].function == "vfs_read"
    assert "kp_hidden" not in view.modules and "kp_ftrace_ops" in view.modules


def test_grouped_hooks_per_function(captured):
    kernel, view = captured
    read = view.function("vfs_read").kinds()
    accept = view.function("inet_csk_accept").kinds()
    common = {"trace_kprobe", "trace_kretprobe", "function_tracer", "kprobes_ftrace_ops"}
    assert read == common | {"perf_kprobe", "fentry", "module_ftrace_ops"} | (
        {"fprobe_event", "kprobe_multi"} if kernel == "6.12" else set())
    assert accept == common | {"module_kprobe", "module_kretprobe", "perf_kprobe",
                               "perf_kretprobe", "fexit"} | (
        {"fprobe_event", "kprobe_multi"} if kernel == "6.12" else set())
    hidden, ops = view.function("vfs_statx").hooks
    assert (hidden.kind, hidden.owner, hidden.facts["listed"]) == \
        ("module_kprobe", "module kp_hidden", False)
    assert (ops.kind, ops.owner, ops.facts["probes"]) == ("kprobes_ftrace_ops", "kprobes", 1)
    assert view.function("inet_csk_accept").of_kind("kprobes_ftrace_ops")[0].facts["probes"] == 6
    patch, = view.function("cmdline_proc_show").hooks
    assert (patch.kind, patch.owner) == ("livepatch", "livepatch kp_livepatch")
    assert all(hook.kind in oracle.KINDS for f in view.functions.values() for hook in f.hooks)


def test_expected_hooks_explain_the_guests_counts(captured):
    """Nothing missing, nothing invented, in the oracle itself: its kprobe-kind hooks are
    exactly the kprobes/list rows of each function, and its ftrace_ops account for each
    enabled_functions count."""
    _, view = captured
    kprobe_kinds = {"trace_kprobe": "k", "module_kprobe": "k", "perf_kprobe": "k",
                    "trace_kretprobe": "r", "module_kretprobe": "r", "perf_kretprobe": "r"}
    for name, hooks in view.functions.items():
        ours = sorted(kprobe_kinds[h.kind] for h in hooks.hooks if h.kind in kprobe_kinds)
        assert ours == sorted(row.kind for row in hooks.kprobe_rows), name
        if hooks.ftrace:
            assert oracle.ftrace_ops_expected(hooks) == hooks.ftrace.count, name


def test_render_lists_every_function(captured):
    _, view = captured
    text = oracle.render(view)
    for name in ("vfs_read", "inet_csk_accept", "vfs_statx", "cmdline_proc_show"):
        assert f"\n{name}: " in f"\n{text}"
