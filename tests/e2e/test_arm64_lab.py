"""The lab on arm64 (`--kernels 6.1-arm64,6.12-arm64`): Debian's cloud-arm64 kernel under
qemu-system-aarch64 (TCG, pointer authentication on), gdb-multiarch attached.

kp-list against the guest's own /sys/kernel/debug/kprobes/list; kp-show's BRK sites, their
out-of-line slots or simulate_*() handlers and kretprobe instances against the guest's live
memory, /proc/kallsyms and its tasks; kp-check against the guest's kprobe_events on seeded
places; and the one-line refusal of the commands whose arch seam (gdb_kprobe/arch/) is not
written for aarch64 yet. The x86
files (test_kp_list.py ...) ask for x86 shapes ([FTRACE], [OPTIMIZED], int3): `make test`
runs this file alone on ARM64_KERNELS.
"""
from __future__ import annotations

import collections
import json
import pathlib
import random
import re
import time

import jsonschema

import pytest

from qemu import kernels, oracle
from qemu.lab import ACCEPT_TRAFFIC

EVENTS = "/sys/kernel/tracing/kprobe_events"
SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema"
# every command whose answer rests on instruction decoders, the memory map or the unwinder
SEAM_COMMANDS = ["kp-hooks inet_csk_accept"]


@pytest.fixture(autouse=True)
def _arm64_only(kernel):
    if kernels.arch_of(kernel) != "arm64":
        pytest.skip(f"{kernel} is not an arm64 kernel (this file runs on 6.1-arm64, 6.12-arm64)")


def assert_same(session) -> str:
    debugfs, ours = session.list_pair()
    assert ours == debugfs, f"kp-list differs from debugfs:\n--- debugfs\n{debugfs}--- kp-list\n{ours}"
    return debugfs


def test_guest_is_arm64_with_pointer_authentication(session):
    assert session.guest("uname -m").strip() == "aarch64"
    # -cpu max,pauth-impdef=on: the kernel signs its return addresses (ARM64_PTR_AUTH_KERNEL)
    features = session.guest("grep -m1 Features /proc/cpuinfo").split()
    assert "paca" in features and "pacg" in features, features


def test_default_scenario_matches_debugfs(session):
    lines = assert_same(session).splitlines()
    assert any("  r  " in line for line in lines), "a return probe"
    assert any("[DISABLED]" in line for line in lines), "a disabled probe"
    addresses = [line.split()[0] for line in lines]
    assert any(addresses.count(a) >= 2 for a in addresses), "an aggregate"
    assert sum("inet_csk_accept+0x" in line for line in lines) == 3, "the lab modules' probes"
    # no ftrace-based or optimized kprobes on arm64: every armed one is a BRK
    assert not any(flag in line for line in lines for flag in ("[FTRACE]", "[OPTIMIZED]"))


def test_module_filter(session):
    out = session.gdb_cmd("kp-list -m kp_lab_kprobe")
    assert len(out.splitlines()) == 2, out


@pytest.mark.parametrize("command", SEAM_COMMANDS)
def test_unwritten_seam_refuses_in_one_line(session, command):
    out = session.gdb_cmd(command).strip()
    name = command.split()[0]
    assert out.startswith(f"{name}: not available on aarch64 yet: ") and "\n" not in out, out


# bt and kp-where: tests/e2e/test_arm64_unwind.py


def _thread_at_el0(session) -> int | None:
    """A gdb thread (CPU) stopped at EL0 (PSTATE.M[3:2] = 0), or None."""
    for number in range(1, session.lab.cpus + 1):
        session.gdb.execute(f"thread {number}")
        if int(session.gdb.execute("p ($cpsr >> 2) & 3").split()[-1]) == 0:
            return number
    return None


def test_a_cpu_stopped_in_user_mode_does_not_hide_the_kernel(session, gdb_binary, request):
    """QEMU 7.2's gdbstub reads with the selected CPU's EL0 permissions: kp-list reads
    through a CPU in the kernel instead (guards.kernel_view), and gives the selection back."""
    if "gdb18" in gdb_binary:
        # seen failing in 3 of 5 runs with gdb 18.1 (kp-list still read through the EL0
        # CPU), never with gdb-multiarch 13.1; by hand gdb 18 reads through the other CPU.
        # Not understood yet: it runs, XPASS or XFAIL, not strict.
        request.node.add_marker(pytest.mark.xfail(
            reason="gdb 18.1: kernel_view's thread switch does not always take (open)"))
    debugfs = session.stable_list()
    session.guest("(while :; do :; done & echo $! > /tmp/spin)")     # one CPU spins at EL0
    try:
        tested = 0
        for _ in range(20):
            session.resume()
            time.sleep(0.2)
            session.stop()
            number = _thread_at_el0(session)
            if number is None:
                continue
            session.gdb.execute(f"thread {number}")
            assert session.gdb.execute("kp-list") == debugfs
            assert f"Current thread is {number} " in session.gdb.execute("thread"), \
                "the selection is given back"
            tested += 1
            if tested == 3:
                break
        assert tested, "no stop found a CPU at EL0: nothing was tested"
    finally:
        session.guest("kill $(cat /tmp/spin)")


# asm/debug-monitors.h, asm/brk-imm.h: what a kprobe writes over the instruction, and what
# ends the copy in its out-of-line slot
BRK_KPROBES, BRK_KPROBES_SS = 0xD4200080, 0xD42000C0
LIST = "/sys/kernel/debug/kprobes/list"


def show(session, place: str) -> str:
    out = session.gdb_cmd(f"kp-show {place}")
    assert "Traceback" not in out and "internal error" not in out and \
        "not available" not in out, out
    return out


def word(session, address: int, from_file: bool = False) -> int:
    """The 32-bit word at `address`: live memory, or the vmlinux file's."""
    if from_file:
        session.gdb_cmd("set trust-readonly-sections on")
    try:
        # QEMU 7.2 reads with the selected CPU's permissions: a CPU stopped at EL0 reads no
        # kernel memory (what kp-* commands' kernel_view works around), so try each CPU
        for number in range(1, session.lab.cpus + 1):
            session.gdb.execute(f"thread {number}")
            out = session.gdb_cmd(f"x/wx {address:#x}")
            if "Cannot access memory" not in out:
                return int(out.split()[-1], 16)
        raise AssertionError(f"no CPU reads {address:#x}: {out}")
    finally:
        if from_file:
            session.gdb_cmd("set trust-readonly-sections off")


def kallsyms(session, name: str) -> list[int]:
    """Addresses of `name` in the guest's own /proc/kallsyms."""
    lines = session.guest(f"grep ' {name}' /proc/kallsyms").splitlines()
    return [int(line.split()[0], 16) for line in lines if line.split()[2:3] == [name]]


def listed(session, place: str) -> int:
    """The address of the probe the guest lists at `place` (debugfs kprobes/list)."""
    lines = [line for line in session.guest(f"cat {LIST}").splitlines()
             if f" {place} " in line + " "]
    assert lines, f"{place} not in {LIST}"
    return int(lines[0].split()[0], 16)


def test_brk_stepped_out_of_line(session):
    """The scenario's kp_inner in inet_accept (a mov): brk #0x4 in live text, the copy and
    brk #0x6 in a slot of a kprobe insn page the guest's /proc/kallsyms names."""
    place = re.search(r" (inet_accept\+0x[0-9a-f]+) ", session.guest(f"cat {LIST}")).group(1)
    address = listed(session, place)
    out = show(session, place)
    assert f"{place} ({address:#x}): 1 probe" in out
    assert "mechanism: brk:" in out
    assert word(session, address) == BRK_KPROBES
    live = out.split("live memory:\n")[1].splitlines()[0]
    assert re.search(r"80 00 20 d4\s+brk\s+#0x4$", live), live
    saved = int(re.search(r"saved opcode \(kprobe\.opcode\): (0x[0-9a-f]+)", out).group(1), 16)
    assert saved == word(session, address, from_file=True)
    slot = int(re.search(r"single-step copy \(ainsn\.api\.insn @ (0x[0-9a-f]+)\):", out).group(1),
               16)
    assert (word(session, slot), word(session, slot + 4)) == (saved, BRK_KPROBES_SS)
    assert slot & ~0xFFF in kallsyms(session, "kprobe_insn_page"), hex(slot)


def _first(session, mnemonic: str) -> tuple[str, int]:
    """(function, offset) of the first `mnemonic` in a few functions, from the vmlinux file
    (offsets from the guest's kallsyms: the patchable-entry nops count)."""
    for function in ("inet_accept", "vfs_read", "do_sys_openat2", "inet_csk_accept"):
        start = kallsyms(session, function)[0]
        session.gdb_cmd("set trust-readonly-sections on")
        try:
            listing = session.gdb_cmd(f"x/100i {start:#x}")
        finally:
            session.gdb_cmd("set trust-readonly-sections off")
        for address, label, name in re.findall(r"^\s*(?:=> )?(0x[0-9a-f]+) <([^>+]*)[^:]*:\s+(\S+)",
                                               listing, re.M):
            if name == mnemonic and label == function and int(address, 16) > start:
                return function, int(address, 16) - start
    raise AssertionError(f"no {mnemonic} found")


@pytest.mark.parametrize("mnemonic, handler", [("bl", "simulate_b_bl"),
                                               ("adrp", "simulate_adr_adrp")])
def test_simulated_instruction(session, mnemonic, handler):
    """An instruction that reads the pc has no slot: decode-insn.c gives it a simulate_*()
    handler (ainsn.api.handler), and the guest's trace event on it is armed with brk #0x4."""
    function, offset = _first(session, mnemonic)
    place = f"{function}+{offset:#x}"
    event = f"kp_sim_{mnemonic}"
    answer = session.guest(f"echo 'p:kprobes/{event} {place}' >> {EVENTS} && "
                           f"echo 1 > /sys/kernel/tracing/events/kprobes/{event}/enable && echo ok")
    try:
        assert answer.strip().endswith("ok"), answer
        address = listed(session, place)
        out = show(session, place)
        assert "mechanism: brk:" in out and word(session, address) == BRK_KPROBES
        assert f"single-step copy (ainsn.api.insn): none: simulated by {handler} " in out, out
        file_line = out.split("vmlinux file:\n")[1].splitlines()[0]
        assert re.search(rf"\s{mnemonic}\s", file_line), file_line
        step = document(session, f"kp-show --json {place}")["single_step"]
        assert step["slot"] == "0x0" and step["simulated_by"]["symbol"] == handler, step
    finally:       # the later tests count the probes on inet_csk_accept
        session.guest(f"echo 0 > /sys/kernel/tracing/events/kprobes/{event}/enable; "
                      f"echo '-:kprobes/{event}' >> {EVENTS}")


def _module_kretprobe(out: str) -> str:
    return out.split("owner: module kp_lab_kretprobe")[1].split("\nprobe ")[0]


def test_kretprobe_instances_and_the_tasks_holding_them(session, kernel):
    """The lab module's kretprobe on inet_csk_accept (maxactive 20): none in use, then one
    held by an `nc -l` blocked in accept(), named with its pid and real return address."""
    # arm64 has no rethook (no HAVE_RETHOOK, 6.12 either): the kretprobe's own pool of
    # kretprobe_instance, a freelist on 6.1, an objpool since 6.7
    pool = "kretprobe freelist" if kernel.startswith("6.1-") else "kretprobe objpool"
    block = _module_kretprobe(show(session, "inet_csk_accept+0"))
    assert re.search(rf"0 in use, 20 free of 20 \({pool}\)", block), block
    session.guest("(nc -l -p 5556 > /dev/null &) ; sleep 0.5")
    try:
        pid = int(session.guest("pidof nc").split()[0])
        assert "inet_csk" in session.guest(f"cat /proc/{pid}/wchan; echo")
        block = _module_kretprobe(show(session, "inet_csk_accept+0"))
        assert re.search(rf"1 in use, 19 free of 20 \({pool}\)", block), block
        assert re.search(rf"^      nc\[{pid}\]: returns to inet_accept\+0x[0-9a-f]+ "
                         r"\(frame 0x[0-9a-f]+\)$", block, re.M), block
        shown = document(session, "kp-show --json inet_csk_accept+0")
        instances = next(p["instances"] for p in shown["probes"] if p["instances"])
        assert [h["name"] for h in instances["holders"]] == [f"nc[{pid}]"], instances
    finally:
        session.guest("killall nc; sleep 0.3")
    block = _module_kretprobe(show(session, "inet_csk_accept+0"))
    assert re.search(rf"0 in use, 20 free of 20 \({pool}\)", block), block


def document(session, command: str) -> dict:
    """A kp-show --json document, valid against docs/schema/kp-show.json."""
    out = session.gdb_cmd(command)
    found = json.loads(out)
    schema = json.loads((SCHEMAS / "kp-show.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(found)
    return found


def test_verbose_list_names_each_owner(session):
    """kp-list -v: the memory map is arm64's (vmcoreinfo), so a trace event's struct kprobe
    in the linear map and the modules' in module space are named, none flagged."""
    debugfs, _ = session.list_pair()
    out = session.gdb_cmd("kp-list -v")
    assert "not available" not in out and "warning" not in out, out
    rows = [line for line in out.splitlines() if not line.startswith(" ")]
    assert "\n".join(rows) + "\n" == debugfs
    owners = re.findall(r"owner: (trace event \S+|module \S+)", out)
    assert len(owners) == len(rows), out
    assert {"module kp_lab_kprobe", "module kp_lab_kretprobe", "trace event kprobes/kp_inner"} \
        <= set(owners), owners


def _arm64_places(session) -> list:
    """Places from the vmlinux (System.map, a fixed seed as qemu/oracle.py's): function
    entries, every instruction of a few functions (stepped, simulated, rejected: mrs,
    autiasp, exclusives...) and offsets between instructions."""
    rng = random.Random(oracle.SEED)
    functions = oracle.SymbolMap.read(session.lab.files.system_map).text_functions()
    places = [oracle.Place(name, "entry_sym", addr, "arm64: kp_oracle is not loaded")
              for name, addr, _ in sorted(rng.sample(functions, 30), key=lambda f: f[1])]
    sized = sorted(rng.sample([f for f in functions if 0x40 <= f[2] <= 0x200], 6))
    by_name = {name: (addr, size) for name, addr, size in functions}
    for name, addr, size in [("inet_accept", *by_name["inet_accept"]), *sized]:
        for offset in range(0, min(size, 40 * 4), 4):
            places.append(oracle.Place(f"{name}+{offset:#x}", "boundary", addr + offset,
                                       "arm64: kp_oracle is not loaded"))
        for offset in sorted(rng.sample(range(size), 4)):
            if offset % 4:
                places.append(oracle.Place(f"{name}+{offset:#x}", "mid_insn", addr + offset,
                                           "arm64: kp_oracle is not loaded"))
    return places


def test_kp_check_agrees_with_the_guests_kprobe_events(session):
    """kp-check's kprobe_events verdict against the guest's own on ~300 places: alignment,
    arm_kprobe_decode_insn()'s rejections (mrs, hints, exclusives, ...), ftrace's bl slot
    without KPROBES_ON_FTRACE, functions without an ftrace site."""
    places = _arm64_places(session)
    verdicts = oracle.ask_kernel(session.guest, places)
    schema = json.loads((SCHEMAS / "kp-check.json").read_text())
    ours = oracle.kp_check_documents(session.gdb_cmd, [p.spec for p in places],
                                     validate=jsonschema.Draft202012Validator(schema).validate)
    mismatches = oracle.compare(places, verdicts, ours)
    assert not mismatches, oracle.mismatch_table(mismatches)
    refused = collections.Counter(v["kprobe_events"].errno for v in verdicts
                                  if not v["kprobe_events"].accepted)
    reasons = " ".join((entry.get("kprobe_events") or {}).get("reason") or "" for entry in ours)
    assert sum(v["kprobe_events"].accepted for v in verdicts) > 50 and refused["EINVAL"] > 20
    assert "arm_kprobe_decode_insn" in reasons and "4-byte aligned" in reasons, refused


def test_runtime_changes_and_module_text(session):
    session.guest(f"echo 'p:kprobes/kp_new vfs_readlink' >> {EVENTS}")
    session.guest("echo 1 > /sys/kernel/tracing/events/kprobes/kp_new/enable")
    assert "vfs_readlink+0x" in assert_same(session)
    # a probe in module text: listed with the module's name, then [GONE] when it goes
    session.guest(f"echo 'p:kprobes/kp_modfunc kp_lab_kprobe:kp_lab_target' >> {EVENTS}")
    assert re.search(r"kp_lab_target\+0x[0-9a-f]+  kp_lab_kprobe ", assert_same(session))
    session.guest("rmmod kp_lab_kprobe")
    listing = assert_same(session)
    assert "[GONE]" in listing
    assert sum("inet_csk_accept+0x" in line for line in listing.splitlines()) == 1
