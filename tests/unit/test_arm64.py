"""arm64 lab kernels and the started arm64 arch seam, without booting anything: the resolver
on apt-cache answers recorded after `dpkg --add-architecture arm64` (2026-11-30), the
architecture of each lab kernel name, the arm64 encodings, per-CPU address wrap-around and
the one-line refusal where the seam in use is not the target's."""
from __future__ import annotations

import json
import pathlib
import struct
import types

import pytest

from qemu import kernels
from qemu.debarchive import Archive, replay, resolve_kernel

RECORDED = pathlib.Path(__file__).resolve().parents[1] / "data" / "apt-arm64-2026-11-30.json"


@pytest.fixture
def archive() -> Archive:
    return Archive(replay(json.loads(RECORDED.read_text())))


def test_arm64_kernel_resolves_with_the_hosts_kbuild(archive):
    """apt-cache lists a foreign architecture's packages as NAME:arm64; the headers'
    linux-kbuild-6.1 resolves to the native (amd64) one: the host tools the cross-build runs."""
    resolved = resolve_kernel(archive, "6.1", "cloud-arm64")
    assert resolved.release == "6.1.0-57-cloud-arm64"
    assert resolved.packages == {
        "linux-image-6.1.0-57-cloud-arm64-unsigned": "6.1.192-3",
        "linux-image-6.1.0-57-cloud-arm64-dbg": "6.1.192-3",
        "linux-headers-6.1.0-57-cloud-arm64": "6.1.192-3",
        "linux-headers-6.1.0-57-common": "6.1.192-3",
        "linux-kbuild-6.1": "6.1.192-3",
    }
    assert resolve_kernel(archive, "6.12", "cloud-arm64").abi.startswith("6.12.")


def test_the_arm64_16k_flavour_is_not_cloud_arm64(archive):
    assert "16k" not in resolve_kernel(archive, "6.12", "cloud-arm64").image


@pytest.mark.parametrize("name, arch", [("6.1", "amd64"), ("6.12", "amd64"), ("6.1-fp", "amd64"),
                                        ("6.1-arm64", "arm64"), ("6.12-arm64", "arm64"),
                                        ("6.1/rt-arm64", "arm64"), ("6.12/arm64-16k", "arm64"),
                                        ("6.1/rt-amd64", "amd64")])
def test_architecture_of_kernel_names(name, arch):
    assert kernels.arch_of(name) == arch


def test_encodings():
    from gdb_kprobe.arch import arm64
    assert arm64.BRK64_OPCODE_KPROBES.to_bytes(4, "little") == bytes.fromhex("800020d4")
    assert arm64.brk_imm(arm64.BRK64_OPCODE_KPROBES) == arm64.KPROBES_BRK_IMM
    assert arm64.brk_imm(arm64.BRK64_OPCODE_KPROBES_SS) == arm64.KPROBES_BRK_SS_IMM
    assert arm64.brk_imm(0xAA0003F3) is None                       # mov x19, x0
    assert arm64.site_kind(0xD4200080, insn_slot=0xFFFF800000BF0000, handler=0) == \
        "brk, stepped out of line"
    assert arm64.site_kind(0xD4200080, insn_slot=0, handler=0xFFFF800008037000) == \
        "brk, simulated"
    assert arm64.site_kind(0xAA0003F3, insn_slot=0, handler=0) == "not armed"


def test_pac_is_stripped_to_the_kernel_address():
    from gdb_kprobe.arch import arm64
    # a return address as bt showed it in a pre_handler under -cpu max,pauth-impdef=on
    assert arm64.strip_pac(0x6A89800008BC0020) == 0xFFFF800008BC0020
    assert arm64.strip_pac(0xFFFF800008BC0020) == 0xFFFF800008BC0020
    assert arm64.strip_pac(0x0012000000401000) == 0x0000000000401000      # user half
    assert arm64.is_canonical(0xFFFF800008BC0020) and arm64.is_canonical(0xFFF00000032F7E80)
    assert not arm64.is_canonical(0x6A89800008BC0020)


def test_per_cpu_addresses_wrap_modulo_2_64(fake_gdb, monkeypatch):
    """arm64: __per_cpu_offset[cpu] + &var passes 2**64 (the report's non-canonical
    0x1ffff00003fdbb850); the address is the sum modulo 2**64."""
    from gdb_kprobe.kernel import percpu
    from gdb_kprobe.target import memory, symbols
    table = {"nr_cpu_ids": 0x1000, "__per_cpu_offset": 0x2000,
             "current_kprobe": 0xFFFF800009A3C850}
    words = {0x1000: struct.pack("<I", 2),
             0x2000: struct.pack("<2Q", 0xFFFF7FFFFA5A0000, 0xFFFF7FFFFA5BF000)}
    monkeypatch.setattr(symbols, "kernel_address", table.__getitem__)
    monkeypatch.setattr(memory, "read", lambda address, size: words[address][:size])
    assert percpu.addresses("current_kprobe") == [0xFFFF000003FDC850, 0xFFFF000003FFB850]


def _target(fake_gdb, architecture: str | None):
    fake_gdb.current_progspace = lambda: types.SimpleNamespace(
        filename=None if architecture is None else "/cache/vmlinux")
    arch = types.SimpleNamespace(name=lambda: architecture or "i386")
    fake_gdb.selected_inferior = lambda: types.SimpleNamespace(architecture=lambda: arch)


def test_unwritten_seam_refuses_in_one_line(fake_gdb):
    from gdb_kprobe.target import guards
    _target(fake_gdb, "aarch64")
    with pytest.raises(guards.KpError, match=r"^kp-hooks: not available on aarch64 yet: .*"
                                             r"arm64\.py.*; kp-list( \(without -v\))?, kp-modules"
                                             r"(, kp-[a-z]+)* and kp-[a-z]+ work there$"):
        guards.require_arch_seam("kp-hooks")
    assert guards.arch_seam_fits()          # bt: the unwinder is written for arm64 (issue #18)
    _target(fake_gdb, "i386:x86-64")
    guards.require_arch_seam("kp-locals")
    assert guards.arch_seam_fits()


def test_the_seam_is_chosen_at_run_time(fake_gdb):
    """select() puts the target's names in arch's namespace; a name arm64.py lacks is one
    line saying what is unwritten (a KpError, and an AttributeError for hasattr)."""
    from gdb_kprobe import arch
    from gdb_kprobe.arch import arm64, x86_64
    assert arch.PT_REGS is x86_64.PT_REGS and arch.selected() is x86_64     # the default
    assert arch.select("aarch64") is arm64
    assert arch.PT_REGS is arm64.PT_REGS and arch.STACK_POINTER == "sp"
    assert arch.strip_pac is arm64.strip_pac
    with pytest.raises(arch.Unwritten, match=r"^not available on aarch64 yet: the aarch64 part "
                                             r"of gdb_kprobe/arch/ is only started \(arm64\.py "
                                             r"\(no START_KERNEL_MAP\)\): .*yet$"):
        arch.START_KERNEL_MAP
    assert isinstance(arch.Unwritten("x"), arch.KpError)
    assert not hasattr(arch, "ENDBR64")
    with pytest.raises(AttributeError) as raised:
        arch.no_such_name
    assert not isinstance(raised.value, arch.Unwritten)
    assert arch.select("i386:x86-64") is x86_64
    assert arch.KASLR_ALIGN == x86_64.KASLR_ALIGN and arch.STACK_POINTER == "rsp"
    assert not hasattr(arch, "strip_pac")
    assert arch.select("riscv:rv64") is None
    with pytest.raises(arch.Unwritten, match="has nothing for riscv:rv64"):
        arch.PT_REGS
    arch.select("i386:x86-64")


def test_commands_select_the_targets_seam(fake_gdb):
    """guards (every command, the unwinder) select the seam of the target's architecture;
    without a symbol file (gdb's default i386) the selection stays."""
    from gdb_kprobe import arch
    from gdb_kprobe.target import guards
    _target(fake_gdb, "aarch64")
    assert guards.select_seam() is arch.arm64 and arch.PT_REGS is arch.arm64.PT_REGS
    _target(fake_gdb, None)
    assert guards.select_seam() is arch.arm64
    _target(fake_gdb, "i386:x86-64")
    assert guards.select_seam() is arch.x86_64 and arch.PT_REGS is arch.x86_64.PT_REGS


def test_no_symbol_file_leaves_the_word_to_the_commands_guards(fake_gdb):
    """Without a file gdb's architecture is a default (i386): no refusal from the seam."""
    from gdb_kprobe.target import guards
    _target(fake_gdb, None)
    guards.require_arch_seam("kp-show")


def test_a_kernel_image_of_your_own_says_its_architecture(tmp_path):
    image = tmp_path / "Image"
    image.write_bytes(b"\0" * 0x38 + b"ARM\x64" + b"\0" * 64)
    assert kernels._is_arm64_image(image)
    image.write_bytes(b"\0" * 0x202 + b"HdrS" + b"\0" * 64)
    assert not kernels._is_arm64_image(image)



def _cpus(fake_gdb, architecture: str, cpsrs: list[int]):
    """Threads (one per CPU) whose newest frame's cpsr is given; records switches."""
    state = {"selected": 1, "switches": []}

    def thread(num):
        def switch():
            state["selected"] = num
            state["switches"].append(num)
        return types.SimpleNamespace(num=num, switch=switch)
    threads = [thread(n + 1) for n in range(len(cpsrs))]
    arch = types.SimpleNamespace(name=lambda: architecture)
    fake_gdb.current_progspace = lambda: types.SimpleNamespace(filename="/cache/vmlinux")
    fake_gdb.selected_inferior = lambda: types.SimpleNamespace(
        architecture=lambda: arch, threads=lambda: threads, pid=1)
    fake_gdb.selected_thread = lambda: threads[state["selected"] - 1]
    frame = types.SimpleNamespace(
        read_register=lambda name: cpsrs[state["selected"] - 1], is_valid=lambda: True,
        select=lambda: None)
    fake_gdb.newest_frame = lambda: frame
    fake_gdb.selected_frame = lambda: frame
    return state


def test_x86_asks_the_target_nothing(fake_gdb):
    from gdb_kprobe.target import guards
    _cpus(fake_gdb, "i386:x86-64", [])
    fake_gdb.newest_frame = None                 # any register read would fail
    with guards.kernel_view():
        pass


def test_arm64_reads_through_a_cpu_in_the_kernel(fake_gdb):
    from gdb_kprobe.target import guards
    state = _cpus(fake_gdb, "aarch64", [0x20001000, 0x4003C5])     # EL0t, EL1h
    with guards.kernel_view():
        assert state["selected"] == 2
    assert state["selected"] == 1, "the selection is given back"


def test_arm64_every_cpu_in_user_mode_is_one_line(fake_gdb):
    from gdb_kprobe.target import guards
    state = _cpus(fake_gdb, "aarch64", [0x20001000, 0x60001000])
    with pytest.raises(guards.KpError, match=r"^every CPU is stopped in user mode, .*again$"):
        with guards.kernel_view():
            pass
    assert state["selected"] == 1


@pytest.mark.parametrize("word, asm, verdict", [
    (0xAA0003F4, "mov x20, x0", ("slot", "")),
    (0xD503201F, "nop", ("slot", "")),
    (0xD503233F, "paciasp", ("slot", "")),
    (0xD503245F, "bti c", ("slot", "")),
    (0xD5384104, "mrs x4, sp_el0", ("slot", "")),
    (0xD53B4237, "mrs x23, daif", ("rejected", "an mrs of DAIF")),
    (0xD50323BF, "autiasp", ("rejected", "a hint other than nop, bti, xpaclri and the pac* that sign")),
    (0x94000010, "bl", ("simulated", "simulate_b_bl")),
    (0x90000000, "adrp x0", ("simulated", "simulate_adr_adrp")),
    (0x58000040, "ldr x0, literal", ("simulated", "simulate_ldr_literal")),
    (0x98000040, "ldrsw x0, literal", ("simulated", "simulate_ldrsw_literal")),
    (0x54000040, "b.eq", ("simulated", "simulate_b_cond")),
    (0xB4000040, "cbz x0", ("simulated", "simulate_cbz_cbnz")),
    (0x36000040, "tbz w0, #0", ("simulated", "simulate_tbz_tbnz")),
    (0xD65F03C0, "ret", ("simulated", "simulate_br_blr_ret")),
    (0xD65F0BFF, "retaa", ("rejected", "a branch")),
    (0x885F7C00, "ldxr w0, [x0]", ("rejected", "an exclusive load or store")),
    (0xD4200080, "brk #0x4", ("rejected", "an exception-generating instruction (svc, hvc, smc, "
                                          "brk, hlt)")),
    (0xD51B4220, "msr daif, x0", ("rejected", "an msr")),
])
def test_arm_kprobe_decode_insn(word, asm, verdict):
    """decode-insn.c's verdicts (6.1 and 6.12 have the same rules); the mrs pair was found by
    comparing with the guest's kprobe_events (tests/e2e/test_arm64_lab.py)."""
    from gdb_kprobe.arch import arm64
    assert arm64.decode_insn(word) == verdict, asm


def test_an_exclusive_sequence_is_found_walking_back():
    from gdb_kprobe.arch import arm64
    ldxr, stxr, mov = 0x885F7C00, 0x88007C00, 0xAA0003F4
    assert arm64.in_atomic_sequence([mov, ldxr, mov])          # nearest first
    assert not arm64.in_atomic_sequence([mov, stxr, ldxr])     # the sequence ended before
    assert not arm64.in_atomic_sequence([mov, mov])


def test_memory_map_from_vmcoreinfo():
    """arm64's regions from vmcoreinfo (arch_crash_save_vmcoreinfo(): VA_BITS decimal, the
    rest hex), and the same from the headers' defaults without it (6.1, VA_BITS 48)."""
    from gdb_kprobe.arch import arm64
    info = {"NUMBER(VA_BITS)": "48", "NUMBER(MODULES_VADDR)": "0xffff800000000000",
            "NUMBER(MODULES_END)": "0xffff800008000000",
            "NUMBER(VMALLOC_START)": "0xffff800008000000",
            "NUMBER(VMALLOC_END)": "0xfffffbffefff0000"}
    modules, vmalloc, linear = arm64.memory_map(info, lambda _name: None)
    assert modules == (0xFFFF800000000000, 0xFFFF800008000000)
    assert vmalloc == (0xFFFF800008000000, 0xFFFFFBFFEFFF0000)
    assert linear == (0xFFFF000000000000, 0xFFFF800000000000)
    assert arm64.memory_map({}, lambda _name: None)[:1] == (modules,)
