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
    # unwinder (a64bt)
    "ENTRY_SYMBOLS", "ENTRY_PREFIXES", "ENTRY_CALLEES", "CODE_SPACE_START", "TRAP_PC_ADVANCE",
    "PT_REGS_PC", "PT_REGS_SP", "UNWIND_REGS", "SIGNED_RETURN_ADDRESSES",
    "RETURN_ADDRESS_REGISTER", "DWARF_REGISTERS", "KPROBE_STAGES", "saved_in_kernel",
    "code_address", "address_bits", "FRAME_POINTER_REGISTER", "pt_regs_values", "ENTRY_PADDING",
]

NAME = "aarch64"                           # gdb's architecture name
# What this module meets so far beyond the arch-neutral commands (kp-list, kp-modules,
# kp-blacklist), each checked on the guest by tests/e2e/test_arm64_lab.py: command names,
# and "bt" for the unwinder and frame filter. Any other command refuses in one line
# (target/guards.py require_arch_seam), and a seam name missing here raises arch.Unwritten.
COMPLETE = False
COMMANDS: tuple[str, ...] = ("kp-check", "kp-list", "kp-show",
                             "bt", "kp-where")                # unwinder (a64bt)
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


# --- unwinder (a64bt) ---
# The kprobe's BRK traps through the EL1 synchronous exception vector: el1h_64_sync
# (entry.S kernel_entry 1) saves a struct pt_regs at sp, then `mov x0, sp; bl
# el1h_64_sync_handler` (→ el1_dbg → do_debug_exception → brk_handler → call_break_hook →
# kprobe_breakpoint_handler on 6.1; el1_brk64 → do_el1_brk64 → kprobe_brk_handler on
# 6.12). In the frame whose pc is that call's return address, sp is the pt_regs. The
# interrupt vector is made by the same entry.S macro (an interrupt taken in the kernel).
# __kretprobe_trampoline (probes/kprobes_trampoline.S) saves one too before calling
# trampoline_probe_handler, whose regs->pc becomes the real return address.
ENTRY_SYMBOLS = {"el1h_64_sync": "brk", "el1h_64_irq": "irq", "__kretprobe_trampoline": "kretprobe"}
ENTRY_PREFIXES: dict[str, str] = {}
# no code allocated at run time calls into kprobe handling (no optprobes, no kprobes on
# ftrace on Debian's arm64 kernels): nothing outside the image is an entry
ENTRY_CALLEES: dict[str, str] = {}
# the lowest address kernel code runs at: modules and the image are above _PAGE_END(48)
CODE_SPACE_START = 0xFFFF800000000000
TRAP_PC_ADVANCE = 0                 # regs->pc is the BRK's own address while handlers run
PT_REGS_PC, PT_REGS_SP = "pc", "sp"
# what an unwinder restores from a pt_regs (pstate: gdb's cpsr is a flags type)
UNWIND_REGS = {name: register for name, register in PT_REGS.items() if name != "pstate"}
# Return addresses in frame records and LR are signed (paciasp), and QEMU 7.2's gdbstub
# offers gdb no pauth_cmask register to strip them with: gdb's own DWARF unwinder gives
# callers at signed, unreadable pcs. The unwinder unwinds every kernel frame from the
# vmlinux's CFI itself and strips the PAC (strip_pac).
SIGNED_RETURN_ADDRESSES = True
RETURN_ADDRESS_REGISTER = "x30"
DWARF_REGISTERS = (*(f"x{n}" for n in range(31)), "sp")      # AADWARF64: 0-30, 31 = sp
# kprobe handling's stages by function, for kp-where (arch/arm64/kernel/probes/kprobes.c)
KPROBE_STAGES = {"kprobe_breakpoint_handler": "brk entry", "kprobe_brk_handler": "brk entry",
                 "kprobe_breakpoint_ss_handler": "post-handler",
                 "kprobe_ss_brk_handler": "post-handler",
                 "post_kprobe_handler": "post-handler",
                 "trampoline_probe_handler": "kretprobe return handler",
                 "__kretprobe_trampoline_handler": "kretprobe return handler"}


def saved_in_kernel(regs) -> bool:
    """Was this pt_regs (a layouts.View) saved from kernel code (PSTATE.M[3:2], the EL, not
    0) at a pc a kernel address can be?"""
    return (regs.int("pstate") >> 2) & 3 != 0 and regs.int("pc") >> 52 == 0xFFF


ENTRY_PADDING = 2 * INSN_SIZE    # -fpatchable-function-entry=2: nops before the FDE's start
FRAME_POINTER_REGISTER = "x29"


def pt_regs_values(regs) -> dict[str, int]:
    """UNWIND_REGS' values from a pt_regs (a layouts.View): x0..x30 are its regs[31]."""
    raw = regs.bytes("regs")
    values = {f"x{n}": int.from_bytes(raw[8 * n: 8 * n + 8], "little") for n in range(31)}
    return {**values, "sp": regs.int("sp"), "pc": regs.int("pc")}


def code_address(raw: int, va_bits: int = VA_BITS_DEFAULT) -> int:
    """A return address as the CPU would branch to it: PAC stripped."""
    return strip_pac(raw, va_bits)


def address_bits(info: dict[str, str]) -> int:
    """The virtual address bits the kernel runs with, above which a PAC sits: 64 - T1SZ
    (arch_crash_save_vmcoreinfo() reports TCR_EL1.T1SZ; VA_BITS there is the configured
    maximum, 52 on Debian's 6.12 even on a CPU with 48-bit VA), else VA_BITS, else 48."""
    t1sz = info.get("NUMBER(TCR_EL1_T1SZ)")
    if t1sz:
        return 64 - int(t1sz, 0)
    bits = info.get("NUMBER(VA_BITS)")
    return int(bits) if bits else VA_BITS_DEFAULT
