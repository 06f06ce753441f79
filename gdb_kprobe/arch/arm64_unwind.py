"""arm64's part of the unwinder (engine/unwind.py, unwind_cfi.py; issue #18): the exception
entries whose pt_regs gives the interrupted frame, PAC stripping of return addresses, the
kprobe handling stages kp-where names. arm64.py re-exports these names. Pure, no gdb."""
from __future__ import annotations

__all__ = [
    "ENTRY_SYMBOLS", "ENTRY_PREFIXES", "ENTRY_CALLEES", "CODE_SPACE_START", "TRAP_PC_ADVANCE",
    "PT_REGS_SP", "UNWIND_REGS", "SIGNED_RETURN_ADDRESSES", "RETURN_ADDRESS_REGISTER",
    "KPROBE_STAGES", "saved_in_kernel", "code_address", "address_bits",
    "FRAME_POINTER_REGISTER", "pt_regs_values", "ENTRY_PADDING",
]

VA_BITS_DEFAULT = 48                       # CONFIG_ARM64_VA_BITS of Debian's arm64 kernels


def _is_kernel_address(address: int) -> bool:
    return address >> 52 == 0xFFF


# The kprobe's BRK traps through the EL1 synchronous exception vector: el1h_64_sync
# (entry.S kernel_entry 1) saves a struct pt_regs at sp, then `mov x0, sp; bl
# el1h_64_sync_handler` (→ el1_dbg → do_debug_exception → brk_handler → call_break_hook →
# kprobe_breakpoint_handler on 6.1; el1_brk64 → do_el1_brk64 → kprobe_brk_handler on
# 6.12). In the frame whose pc is that call's return address, sp is the pt_regs. The
# interrupt vector is made by the same entry.S macro (an interrupt taken in the kernel).
# __kretprobe_trampoline (probes/kprobes_trampoline.S) saves one too before calling
# trampoline_probe_handler, whose regs->pc becomes the real return address.
ENTRY_SYMBOLS = {"el1h_64_sync": "brk", "el1h_64_irq": "irq",
                 "__kretprobe_trampoline": "kretprobe"}
ENTRY_PREFIXES: dict[str, str] = {}
# no code allocated at run time calls into kprobe handling (no optprobes, no kprobes on
# ftrace on Debian's arm64 kernels): nothing outside the image is an entry
ENTRY_CALLEES: dict[str, str] = {}
# the lowest address kernel code runs at: modules and the image are above _PAGE_END(48)
CODE_SPACE_START = 0xFFFF800000000000
TRAP_PC_ADVANCE = 0                 # regs->pc is the BRK's own address while handlers run
PT_REGS_SP = "sp"                   # (PT_REGS_PC: kp-sim's, above)
# what an unwinder restores from a pt_regs (pstate: gdb's cpsr is a flags type)
UNWIND_REGS = {**{f"x{n}": f"x{n}" for n in range(31)}, "sp": "sp", "pc": "pc"}
# Return addresses in frame records and LR are signed (paciasp), and QEMU 7.2's gdbstub
# offers gdb no pauth_cmask register to strip them with: gdb's own DWARF unwinder gives
# callers at signed, unreadable pcs. The unwinder unwinds every kernel frame from the
# vmlinux's CFI itself and strips the PAC (strip_pac).
SIGNED_RETURN_ADDRESSES = True
RETURN_ADDRESS_REGISTER = "x30"
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
    return (regs.int("pstate") >> 2) & 3 != 0 and _is_kernel_address(regs.int("pc"))


ENTRY_PADDING = 2 * 4    # -fpatchable-function-entry=2: nops before the FDE's start
FRAME_POINTER_REGISTER = "x29"


def pt_regs_values(regs) -> dict[str, int]:
    """UNWIND_REGS' values from a pt_regs (a layouts.View): x0..x30 are its regs[31]."""
    raw = regs.bytes("regs")
    values = {f"x{n}": int.from_bytes(raw[8 * n: 8 * n + 8], "little") for n in range(31)}
    return {**values, "sp": regs.int("sp"), "pc": regs.int("pc")}


def strip_pac(address: int, va_bits: int = VA_BITS_DEFAULT) -> int:
    """A return address signed by paciasp (CONFIG_ARM64_PTR_AUTH_KERNEL) with its PAC
    removed: bit 55 picks the half, and the PAC bits above VA_BITS take its value, as
    ptrauth_strip_kernel_insn_pac() (asm/pointer_auth.h, 6.1) and xpaci do."""
    pac_mask = ((1 << 64) - 1) & ~((1 << va_bits) - 1)
    return address | pac_mask if address >> 55 & 1 else address & ~pac_mask


# the seam's name (x86-64's returns its argument): a return address as the CPU branches to it
code_address = strip_pac


def address_bits(info: dict[str, str]) -> int:
    """The virtual address bits the kernel runs with, above which a PAC sits: 64 - T1SZ
    (arch_crash_save_vmcoreinfo() reports TCR_EL1.T1SZ; VA_BITS there is the configured
    maximum, 52 on Debian's 6.12 even on a CPU with 48-bit VA), else VA_BITS, else 48."""
    t1sz = info.get("NUMBER(TCR_EL1_T1SZ)")
    if t1sz:
        return 64 - int(t1sz, 0)
    bits = info.get("NUMBER(VA_BITS)")
    return int(bits) if bits else VA_BITS_DEFAULT
