"""arm64 (AArch64): what is written of its seam so far: register names, address checks,
pointer-authentication stripping, and the kprobe's BRK and out-of-line slot encodings.

Selected at run time for an aarch64 target (gdb_kprobe/arch/__init__.py select()); the
commands it is written for are in COMMANDS. Not yet: instruction decoders for kp-check, the
memory map, unwinder rules. No gdb here, as in x86_64.py.
"""
from __future__ import annotations

__all__ = [
    "NAME", "ADDRESS_MASK", "u64", "is_canonical", "strip_pac", "VA_BITS_DEFAULT",
    "PT_REGS", "ARG_REGS", "CALLEE_SAVED", "STACK_POINTER", "PROGRAM_COUNTER", "RETURN_VALUE",
    "INSN_SIZE", "AARCH64_BREAK_MON", "KPROBES_BRK_IMM", "KPROBES_BRK_SS_IMM",
    "BRK64_OPCODE_KPROBES", "BRK64_OPCODE_KPROBES_SS", "brk_imm", "site_kind",
    "USER_MODE_HIDES_KERNEL", "MODE_REGISTER", "in_user_mode", "SITE_BYTES", "TRAP_MECHANISM",
    "TRAP_EXPLANATION", "site_mechanism", "SLOT_FIELD", "SIMULATE_FIELD", "slot_insns",
    "memory_map",
]

NAME = "aarch64"                           # gdb's architecture name
# What this module meets so far beyond the arch-neutral commands (kp-list, kp-modules,
# kp-blacklist), each checked on the guest by tests/e2e/test_arm64_lab.py: command names,
# and "bt" for the unwinder and frame filter. Any other command refuses in one line
# (target/guards.py require_arch_seam), and a seam name missing here raises arch.Unwritten.
COMPLETE = False
COMMANDS: tuple[str, ...] = ("kp-list", "kp-show")
ADDRESS_MASK = (1 << 64) - 1
VA_BITS_DEFAULT = 48                       # CONFIG_ARM64_VA_BITS of Debian's arm64 kernels


def u64(value: int) -> int:
    """`value` as an unsigned 64-bit number. Per-CPU addresses need it on arm64:
    __per_cpu_offset[cpu] is (area - __per_cpu_start) and wraps, and &var is a kernel
    address, so their sum passes 2**64 (scripts/gdb/linux/cpus.py masks it the same way)."""
    return value & ADDRESS_MASK


def is_canonical(address: int) -> bool:
    """A kernel (TTBR1, bits 63..52 all ones) or user (all zeros) address with up to 52-bit
    VA (CONFIG_ARM64_VA_BITS_52). The kernel runs with TBI off for its own addresses, so a
    tagged or PAC-signed pointer is not readable as it stands: strip_pac() it first."""
    top = address >> 52
    return top == 0 or top == 0xFFF


def strip_pac(address: int, va_bits: int = VA_BITS_DEFAULT) -> int:
    """A return address signed by paciasp (CONFIG_ARM64_PTR_AUTH_KERNEL) with its PAC
    removed: bit 55 picks the half, and the PAC bits above VA_BITS take its value, as
    ptrauth_strip_kernel_insn_pac() (asm/pointer_auth.h, 6.1) and xpaci do."""
    pac_mask = ADDRESS_MASK & ~((1 << va_bits) - 1)
    return u64(address | pac_mask) if address >> 55 & 1 else address & ~pac_mask


# struct pt_regs (asm/ptrace.h: regs[31], sp, pc, pstate) → gdb's register names;
# kprobe_events names them %x0..%x30, %sp, %pc (arch/arm64/kernel/ptrace.c regoffset_table)
PT_REGS = {**{f"x{n}": f"x{n}" for n in range(31)}, "sp": "sp", "pc": "pc", "pstate": "cpsr"}
ARG_REGS = [f"x{n}" for n in range(8)]                 # AAPCS64 arguments
CALLEE_SAVED = [f"x{n}" for n in range(19, 30)]        # x19..x28 and the frame pointer x29
STACK_POINTER, PROGRAM_COUNTER, RETURN_VALUE = "sp", "pc", "x0"

# QEMU's gdbstub (7.2) translates a debug read with the CPU's current regime *and
# permissions*: a CPU stopped at EL0 reads no kernel memory (x86's debug walk ignores U/S).
USER_MODE_HIDES_KERNEL = True
MODE_REGISTER = "cpsr"


def in_user_mode(cpsr: int) -> bool:
    """Is a CPU with this PSTATE (gdb's cpsr) at EL0? PSTATE.M[3:2] is the exception level."""
    return (cpsr >> 2) & 3 == 0


INSN_SIZE = 4                                   # AARCH64_INSN_SIZE: every instruction
AARCH64_BREAK_MON = 0xD4200000                  # brk #0 (asm/debug-monitors.h)
KPROBES_BRK_IMM = 0x004                         # asm/brk-imm.h: the BRK a kprobe plants
KPROBES_BRK_SS_IMM = 0x006                      # after the copy in the out-of-line slot
BRK64_OPCODE_KPROBES = AARCH64_BREAK_MON | KPROBES_BRK_IMM << 5
BRK64_OPCODE_KPROBES_SS = AARCH64_BREAK_MON | KPROBES_BRK_SS_IMM << 5


def brk_imm(word: int) -> int | None:
    """The immediate of a BRK instruction (`brk #imm16`), or None for any other word."""
    if word & 0xFFE0001F != AARCH64_BREAK_MON:
        return None
    return word >> 5 & 0xFFFF


def site_kind(live: int, insn_slot: int, handler: int) -> str:
    """What the live word at a probed address and the probe's arch_probe_insn
    (asm/probes.h: api.insn, api.handler) say about how it runs
    (arch/arm64/kernel/probes/kprobes.c arch_prepare_kprobe()):
    "brk" with a copy stepped out of line in the slot api.insn (followed there by
    BRK64_OPCODE_KPROBES_SS), "brk, simulated" when api.handler emulates the instruction
    (branches, adr/adrp, literal loads: simulate-insn.c), or "not armed" when the BRK is
    not in place (a disabled probe: the original instruction is back)."""
    if live != BRK64_OPCODE_KPROBES:
        return "not armed"
    if insn_slot:
        return "brk, stepped out of line"
    if handler:
        return "brk, simulated"
    return "brk"


# -- kp-show: what a probed address holds, and the out-of-line slot ----------------------
# arch/arm64/kernel/probes/kprobes.c: arch_arm_kprobe() writes BRK64_OPCODE_KPROBES over the
# instruction; arch_prepare_kprobe() either copies it into an XOL slot followed by
# BRK64_OPCODE_KPROBES_SS (arch_prepare_ss_slot(), api.insn) or, for instructions that read
# the pc (branches, adr/adrp, literal loads: decode-insn.c), leaves api.insn NULL and
# simulates them with api.handler (simulate-insn.c).
SITE_BYTES = INSN_SIZE
TRAP_MECHANISM = "brk"
TRAP_EXPLANATION = ("the instruction is now brk #0x4 (KPROBES_BRK_IMM): the CPU traps into "
                    "kprobe_breakpoint_handler(), which runs the pre_handler, then steps the "
                    "copy in the out-of-line slot (ainsn.api.insn, ended by brk #0x6) or "
                    "simulates the instruction (ainsn.api.handler), then the post_handler")
SLOT_FIELD = "ainsn.api.insn"
SIMULATE_FIELD = "ainsn.api.handler"


def site_mechanism(live: bytes, optimized: bool, ftrace: bool) -> str:
    """What the live word at an armed probe's address says (arm64 has neither optprobes
    nor, in Debian's 6.1, kprobes on ftrace: every armed probe is a BRK)."""
    if len(live) == INSN_SIZE and int.from_bytes(live, "little") == BRK64_OPCODE_KPROBES:
        return TRAP_MECHANISM
    return "unexpected"


def slot_insns(boostable: int | None) -> int:
    """The slot holds the copied instruction, then BRK64_OPCODE_KPROBES_SS."""
    return 2


def memory_map(info: dict[str, str], variable) -> tuple[tuple[int, int], ...]:
    """(modules, vmalloc, linear map) as [start, end) pairs. arch_crash_save_vmcoreinfo()
    (arch/arm64/kernel/crash_core.c, 6.1; vmcore_info.c, 6.12) reports MODULES_VADDR/END and
    VMALLOC_START/END in vmcoreinfo (`info`); the linear map is [PAGE_OFFSET, PAGE_END) =
    [-2**VA_BITS, -2**(VA_BITS_MIN - 1)) (asm/memory.h). Without vmcoreinfo: VA_BITS 48, a
    128 MiB module area below the image at _PAGE_END(48) (6.1), vmalloc from its end."""
    def number(key: str, default: int) -> int:
        text = info.get(f"NUMBER({key})")
        return int(text, 0) if text else default
    va_bits = number("VA_BITS", VA_BITS_DEFAULT)           # decimal (VMCOREINFO_NUMBER)
    page_end = u64(-(1 << (min(va_bits, 48) - 1)))
    modules = (number("MODULES_VADDR", page_end), number("MODULES_END", page_end + (128 << 20)))
    vmalloc = (number("VMALLOC_START", modules[1]),
               number("VMALLOC_END", number("VMEMMAP_START", ADDRESS_MASK) - (256 << 20)))
    return modules, vmalloc, (u64(-(1 << va_bits)), page_end)
