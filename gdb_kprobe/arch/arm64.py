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
    "memory_map", "MCOUNT_INSN_SIZE", "JUMP_SITE_MAX", "jump_site_size", "STATIC_CALL_SIZE",
    "PROBE_ALIGN", "MAX_ATOMIC_CONTEXT", "decode_insn", "in_atomic_sequence",
    "KASLR_ALIGN", "KASLR_RANGE", "KASLR_ANCHORS", "CURRENT_TASK_REGISTER", "CURRENT_TASK_PERCPU",
    # kp-locals, kp-sim (a64locals)
    "GDB_TO_PT_REGS", "DEFAULT_SIM_REGS", "PT_REGS_PC", "PRE_HANDLER_PC_DELTA",
    "PRE_HANDLER_PC_TEXT", "probe_trap", "DWARF_REGS", "frame_walk", "pt_regs_c",
    "PT_REGS_RETVAL", "ENTRY_RETURN_REGS", "entry_return", "simulated_branch",
]

NAME = "aarch64"                           # gdb's architecture name
# What this module meets so far beyond the arch-neutral commands (kp-list, kp-modules,
# kp-blacklist), each checked on the guest by tests/e2e/test_arm64_lab.py: command names,
# and "bt" for the unwinder and frame filter. Any other command refuses in one line
# (target/guards.py require_arch_seam), and a seam name missing here raises arch.Unwritten.
COMPLETE = False
COMMANDS: tuple[str, ...] = ("kp-check", "kp-kaslr", "kp-list", "kp-show")
ADDRESS_MASK = (1 << 64) - 1
# PAC stripping lives with the unwinder that needs it most (arm64_unwind.py, no cycle)
from gdb_kprobe.arch.arm64_unwind import VA_BITS_DEFAULT, strip_pac  # noqa: E402


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
MCOUNT_INSN_SIZE = INSN_SIZE                    # asm/ftrace.h: the patchable-entry bl slot
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


# -- kp-check: arch_prepare_kprobe() (arch/arm64/kernel/probes/kprobes.c, decode-insn.c) ------
PROBE_ALIGN = INSN_SIZE                         # `probe_addr & 0x3`: -EINVAL
JUMP_SITE_MAX = INSN_SIZE                       # a static key's nop or b (jump_label.c)
STATIC_CALL_SIZE = INSN_SIZE                    # (no HAVE_STATIC_CALL on arm64 6.1, 6.12)


def jump_site_size(head: bytes) -> int:
    """Every jump label site is one instruction."""
    return INSN_SIZE
MAX_ATOMIC_CONTEXT = 128 // INSN_SIZE           # decode-insn.h MAX_ATOMIC_CONTEXT_SIZE

# asm/insn.h __AARCH64_INSN_FUNCS(name, mask, value): the encodings decode-insn.c asks about
_ENCODINGS = {
    "adr": (0x9F000000, 0x10000000), "adrp": (0x9F000000, 0x90000000),
    "prfm_lit": (0xFF000000, 0xD8000000), "ldr_lit": (0xBF000000, 0x18000000),
    "ldrsw_lit": (0xFF000000, 0x98000000), "exclusive": (0x3F800000, 0x08000000),
    "load_ex": (0x3F400000, 0x08400000), "store_ex": (0x3F400000, 0x08000000),
    "b": (0xFC000000, 0x14000000), "bl": (0xFC000000, 0x94000000),
    "cbz": (0x7F000000, 0x34000000), "cbnz": (0x7F000000, 0x35000000),
    "tbz": (0x7F000000, 0x36000000), "tbnz": (0x7F000000, 0x37000000),
    "bcond": (0xFF000010, 0x54000000), "exception": (0xFF000000, 0xD4000000),
    "hint": (0xFFFFF01F, 0xD503201F), "br": (0xFFFFFC1F, 0xD61F0000),
    "br_auth": (0xFEFFF800, 0xD61F0800), "blr": (0xFFFFFC1F, 0xD63F0000),
    "blr_auth": (0xFEFFF800, 0xD63F0800), "ret": (0xFFFFFC1F, 0xD65F0000),
    "ret_auth": (0xFFFFFBFF, 0xD65F0BFF), "eret": (0xFFFFFFFF, 0xD69F03E0),
    "eret_auth": (0xFFFFFBFF, 0xD69F0BFF), "mrs": (0xFFF00000, 0xD5300000),
    "msr_imm": (0xFFF8F01F, 0xD500401F), "msr_reg": (0xFFF00000, 0xD5100000),
}
_BRANCHES = ("b", "bl", "cbz", "cbnz", "tbz", "tbnz", "ret", "ret_auth", "br", "br_auth", "blr",
             "blr_auth", "bcond")               # aarch64_insn_is_branch()
# aarch64_insn_is_steppable_hint() (arch/arm64/lib/insn.c): nop, xpaclri, the pac* that sign,
# bti; any other hint (autiasp, wfi, yield, ...) is not stepped
_STEPPABLE_HINTS = frozenset(op << 5 for op in (0x00, 0x07, 0x08, 0x0A, 0x18, 0x19, 0x1A, 0x1B,
                                                 0x20, 0x22, 0x24, 0x26))
_SPCLREG_DAIF = 0xDA11
# arm_probe_decode_insn()'s simulated classes, in its order, after arm_kprobe_decode_insn()'s
# literal loads
_SIMULATED = (("ldr_lit", "simulate_ldr_literal"), ("ldrsw_lit", "simulate_ldrsw_literal"),
              ("bcond", "simulate_b_cond"), ("cbz", "simulate_cbz_cbnz"),
              ("cbnz", "simulate_cbz_cbnz"), ("tbz", "simulate_tbz_tbnz"),
              ("tbnz", "simulate_tbz_tbnz"), ("adr", "simulate_adr_adrp"),
              ("adrp", "simulate_adr_adrp"), ("b", "simulate_b_bl"), ("bl", "simulate_b_bl"),
              ("br", "simulate_br_blr_ret"), ("blr", "simulate_br_blr_ret"),
              ("ret", "simulate_br_blr_ret"))


def _is(word: int, name: str) -> bool:
    mask, value = _ENCODINGS[name]
    return word & mask == value


def _not_steppable(word: int) -> str | None:
    """Why aarch64_insn_is_steppable() says no, or None."""
    if (word >> 25) & 0xE == 0xA:                      # AARCH64_INSN_CLS_BR_SYS
        for name, why in (("branch", "a branch"), ("msr_imm", "an msr"), ("msr_reg", "an msr"),
                          ("exception", "an exception-generating instruction (svc, hvc, smc, "
                                        "brk, hlt)"),
                          ("eret", "an eret"), ("eret_auth", "an eret")):
            hit = any(_is(word, b) for b in _BRANCHES) if name == "branch" else _is(word, name)
            if hit and name == "branch":
                # the plain ones are simulated (decode_insn); these are br/blr/ret with
                # pointer authentication (braa, blraa, retaa, ...)
                why = "a branch"
            if hit:
                return why
        if _is(word, "mrs"):
            # `return aarch64_insn_extract_system_reg(insn) != AARCH64_INSN_SPCLREG_DAIF`:
            # every mrs is stepped except a read of DAIF, which would see the stepping's
            # own masked DAIF
            return "an mrs of DAIF" if (word & 0x1FFFE0) >> 5 == _SPCLREG_DAIF else None
        if _is(word, "hint") and word & 0xFE0 not in _STEPPABLE_HINTS:
            return "a hint other than nop, bti, xpaclri and the pac* that sign"
        return None
    if any(_is(word, name) for name in ("ldr_lit", "ldrsw_lit", "adr", "adrp", "prfm_lit")):
        return "a pc-relative literal access"
    if _is(word, "exclusive"):
        return "an exclusive load or store"
    return None


def decode_insn(word: int) -> tuple[str, str]:
    """arm_kprobe_decode_insn() without its atomic-sequence scan: ("slot", "") for an
    instruction stepped out of line, ("simulated", handler) for one simulate-insn.c
    emulates, ("rejected", why) for INSN_REJECTED (arch_prepare_kprobe(): -EINVAL)."""
    for name, handler in _SIMULATED[:2]:
        if _is(word, name):
            return "simulated", handler
    why = _not_steppable(word)
    if why is None:
        return "slot", ""
    for name, handler in _SIMULATED[2:]:
        if _is(word, name):
            return "simulated", handler
    return "rejected", why


def in_atomic_sequence(previous: list[int]) -> bool:
    """is_probed_address_atomic(): walking back from the word before the probe (`previous`,
    nearest first, at most MAX_ATOMIC_CONTEXT and not before the symbol's start), a load
    exclusive comes before any store exclusive."""
    for word in previous:
        if _is(word, "store_ex"):
            return False
        if _is(word, "load_ex"):
            return True
    return False


# --- kaslr, current task (a64misc) ---
# KASLR (CONFIG_RANDOMIZE_BASE, on in Debian's cloud-arm64): arch/arm64/kernel/pi/kaslr_early.c
# puts the image at BIT(VA_BITS_MIN - 3) + (seed & GENMASK(VA_BITS_MIN - 3, 0)) above its link
# address and head.S rounds that down to MIN_KIMG_ALIGN: a slide of up to 2**47 in 2 MiB
# granules, 2**26 of them, too many to try each (x86-64's are 512). The running kernel says
# where it is instead: VBAR_EL1 holds the address of `vectors` (KASLR_ANCHORS; gdb's name of
# the register is QEMU's "VBAR", from its system-register feature), and a CPU stopped in the
# kernel has its pc in the moved image; kernel/kaslr.py tries those slides, then checks each
# with linux_banner. (With KPTI on, VBAR_EL1 is the trampoline's alias: the pc still tells.)
KASLR_ALIGN = 0x200000                          # MIN_KIMG_ALIGN (SZ_2M)
KASLR_RANGE = 1 << 47                           # BIT(45) + BIT(46) at most, VA_BITS_MIN 48
KASLR_ANCHORS: tuple[tuple[str, str], ...] = (("VBAR", "vectors"),)
# `current` (asm/current.h get_current()) is SP_EL0 while a CPU is in the kernel: entry.S
# loads it from the per-CPU __entry_task on entry from EL0, and cpu_switch_to() writes the
# next task there. QEMU's gdbstub (7.2) shows SP_EL0 in its system-register feature.
# A CPU stopped at EL0 has its user stack pointer in SP_EL0: __entry_task, which
# entry_task_switch() (process.c) sets at every switch, names the task it runs.
CURRENT_TASK_REGISTER: str | None = "SP_EL0"
CURRENT_TASK_PERCPU: tuple[tuple[str, str | None, str | None], ...] = (
    ("__entry_task", None, None),)


# --- kp-locals, kp-sim (a64locals) ---
# gdb's register names → kprobe_events' (arch/arm64/kernel/ptrace.c regoffset_table: x0..x30,
# sp, pc, pstate): the same names, so a fetch arg is %x19 or +12(%x29)
GDB_TO_PT_REGS = {**{f"x{n}": f"x{n}" for n in range(31)}, "sp": "sp"}
# what the lab module prints (qemu/modules/kp_lab_regs.h): pc, x0..x3, sp, pstate
DEFAULT_SIM_REGS = ["pc", "x0", "x1", "x2", "x3", "sp", "pstate"]
PT_REGS_PC = "pc"
# BRK leaves ELR at the BRK itself: a pre_handler sees regs->pc == p->addr
# (kprobe_breakpoint_handler(), no adjustment as x86's int3 needs)
PRE_HANDLER_PC_DELTA = 0
PRE_HANDLER_PC_TEXT = "addr itself: brk #0x4 traps without advancing the pc"
# DWARF register numbers (AAPCS64 DWARF: 0-30 x0..x30, 31 sp)
DWARF_REGS = tuple(f"x{n}" for n in range(31)) + ("sp",)


def probe_trap(raw: bytes) -> str | None:
    """What a live instruction that is not the vmlinux's is, for kp-sim's post view: the
    kprobe's BRK ("brk"), else None (arm64 has no optprobe jmp, no kprobes on ftrace)."""
    word = int.from_bytes(raw[:INSN_SIZE], "little") if len(raw) >= INSN_SIZE else None
    return TRAP_MECHANISM if word == BRK64_OPCODE_KPROBES else None


# the frame at a PC (kp-locals): arm64_frame.py, to keep this module within its size
from gdb_kprobe.arch.arm64_frame import frame_walk  # noqa: E402


def pt_regs_c(register: str) -> str:
    """The C expression of a gdb register in a handler's struct pt_regs *regs: x0..x30 are
    regs->regs[N] (asm/ptrace.h user_pt_regs), sp is regs->sp."""
    return "regs->sp" if register == "sp" else f"regs->regs[{int(register[1:])}]"


PT_REGS_RETVAL = "x0"                     # regs_return_value()
ENTRY_RETURN_REGS = ("x30",)              # the link register holds the return address


def entry_return(regs: dict[str, int], read_u64) -> tuple[int, int]:
    """At a function's first instruction: (its return address, sp once it has returned).
    `bl` left it in x30, not yet signed (paciasp comes later; stripped all the same), and
    AAPCS64 gives the caller back its own sp."""
    return strip_pac(regs["x30"]), regs["sp"]


def simulated_branch(raw: bytes) -> str | None:
    """Why kp-sim has no post view behind a kprobe's brk that stands for a branch (b, bl,
    b.cond, cbz, tbz, br, blr, ret: simulate-insn.c sets regs->pc to the target), else None."""
    if len(raw) < INSN_SIZE:
        return None
    kind, handler = decode_insn(int.from_bytes(raw[:INSN_SIZE], "little"))
    branches = ("simulate_b_bl", "simulate_b_cond", "simulate_cbz_cbnz", "simulate_tbz_tbnz",
                "simulate_br_blr_ret")
    if kind != "simulated" or handler not in branches:
        return None
    return (f"the kprobe's brk stands for a branch the kernel simulates ({handler}), which "
            "resumes at the branch's target; use a neighbouring instruction")


# checked on the guest by tests/e2e/test_arm64_locals.py
COMMANDS = COMMANDS + ("kp-locals", "kp-sim")
# --- unwinder (a64bt) --- entry paths, PAC stripping, pt_regs: arm64_unwind.py (module size)
from gdb_kprobe.arch.arm64_unwind import *  # noqa: E402,F401,F403
from gdb_kprobe.arch.arm64_unwind import __all__ as _UNWINDER  # noqa: E402
__all__ += _UNWINDER
COMMANDS = COMMANDS + ("bt", "kp-where")      # checked by tests/e2e/test_arm64_unwind.py
