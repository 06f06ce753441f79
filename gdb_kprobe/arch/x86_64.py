"""x86-64: register names, the 64-bit mask, canonical addresses, instruction bytes.

No gdb here: plain constants and arithmetic, shared by memory access, the kernel model,
kp-sim, the unwinder and kp-locals (which once each kept a register map of their own).
"""
from __future__ import annotations

__all__ = [
    "NAME", "ADDRESS_MASK", "u64", "is_canonical", "PT_REGS", "UNWIND_REGS",
    "GDB_TO_PT_REGS", "ARG_REGS", "CALLEE_SAVED", "DEFAULT_SIM_REGS", "KERNEL_CS",
    "ENDBR64", "ENDBR32", "ENDBR_POISON", "NOP5", "NOP2", "JMP8", "JMP32", "CALL32", "INT3", "INT3_INSN_SIZE", "MAX_INSN_SIZE", "REL32_SIZE",
    "MCOUNT_INSN_SIZE", "KASLR_ALIGN", "KASLR_RANGE", "KASLR_ANCHORS", "is_exception_insn",
    "CURRENT_TASK_REGISTER", "CURRENT_TASK_PERCPU",
    "START_KERNEL_MAP", "KERNEL_IMAGE_SIZE_FIXED", "MODULES_END", "PAGE_OFFSET_L4",
    "PAGE_OFFSET_L5", "DIRECT_MAP_SIZE_L4", "DIRECT_MAP_SIZE_L5", "VMALLOC_START_L4",
    "VMALLOC_START_L5", "VMALLOC_SIZE_L4", "VMALLOC_SIZE_L5",
    "unemulated_insn",
    "STACK_POINTER", "PROGRAM_COUNTER", "RETURN_VALUE", "USER_MODE_HIDES_KERNEL", "MODE_REGISTER",
    "in_user_mode", "SITE_BYTES", "TRAP_MECHANISM", "TRAP_EXPLANATION", "site_mechanism",
    "SLOT_FIELD", "SIMULATE_FIELD", "slot_insns", "memory_map", "JUMP_SITE_MAX",
    "jump_site_size", "STATIC_CALL_SIZE",
    # kp-locals, kp-sim: the names arm64.py has too (a64locals)
    "PT_REGS_PC", "PRE_HANDLER_PC_DELTA", "PRE_HANDLER_PC_TEXT", "probe_trap", "DWARF_REGS",
    "frame_walk", "pt_regs_c", "PT_REGS_RETVAL", "ENTRY_RETURN_REGS", "entry_return",
    "simulated_branch",
    "ENTRY_SYMBOLS", "ENTRY_PREFIXES", "ENTRY_CALLEES", "CODE_SPACE_START", "TRAP_PC_ADVANCE",
    "PT_REGS_SP", "SIGNED_RETURN_ADDRESSES", "RETURN_ADDRESS_REGISTER",
    "KPROBE_STAGES", "saved_in_kernel", "code_address", "address_bits",
    "FRAME_POINTER_REGISTER", "pt_regs_values", "ENTRY_PADDING",
]

NAME = "i386:x86-64"                       # gdb's architecture name
COMPLETE = True                            # every command and the unwinder are written for it
COMMANDS: tuple[str, ...] = ()
ADDRESS_MASK = (1 << 64) - 1


def u64(value: int) -> int:
    """`value` as an unsigned 64-bit number (gdb hands registers and addresses signed)."""
    return value & ADDRESS_MASK


def is_canonical(address: int) -> bool:
    """Canonical with 5-level paging (bits 63..56 equal); 4-level is a subset.

    A pointer that is only 57-bit canonical on a 4-level kernel still fails to read.
    """
    top = address >> 56
    return top == 0 or top == 0xFF


# struct pt_regs member names (what handlers and kprobe_events use) → gdb's register names
PT_REGS = {"ip": "rip", "ax": "rax", "bx": "rbx", "cx": "rcx", "dx": "rdx", "si": "rsi",
           "di": "rdi", "bp": "rbp", "sp": "rsp", **{f"r{n}": f"r{n}" for n in range(8, 16)},
           "flags": "eflags"}
# what an unwinder restores from a pt_regs: eflags is left out (gdb's flags type takes no
# cast from an integer, and unwinding never needs it)
UNWIND_REGS = {name: register for name, register in PT_REGS.items() if name != "flags"}
# gdb's general-purpose register names → pt_regs names (kprobe_events fetch args: %di)
GDB_TO_PT_REGS = {register: name for name, register in UNWIND_REGS.items() if name != "ip"}
ARG_REGS = ["di", "si", "dx", "cx", "r8", "r9"]          # the C calling convention's
CALLEE_SAVED = ["rbx", "rbp", "r12", "r13", "r14", "r15"]
DEFAULT_SIM_REGS = ["ip", "ax", "di", "si", "dx", "cx", "sp", "flags"]   # as the lab module prints
STACK_POINTER, PROGRAM_COUNTER, RETURN_VALUE = "rsp", "rip", "rax"
KERNEL_CS = 0x10                          # __KERNEL_CS: a pt_regs saved from kernel mode
# QEMU's x86 debug page walk ignores the U/S bit: a CPU stopped in user mode reads kernel
# memory too (arm64's does not: arch/arm64.py)
USER_MODE_HIDES_KERNEL = False
MODE_REGISTER = "cs"


def in_user_mode(cs: int) -> bool:
    return cs & 3 == 3

ENDBR64 = b"\xf3\x0f\x1e\xfa"             # IBT: an entry probe goes after it
NOP5 = bytes.fromhex("0f1f440000")        # ftrace's nop at a module's fentry site
NOP2, JMP8 = b"\x66\x90", 0xEB           # a static key's short forms (jump_label.c)
JMP32, CALL32, INT3 = 0xE9, 0xE8, 0xCC    # first bytes of an optprobe jmp, ftrace call, kprobe
MAX_INSN_SIZE = 15                         # asm/insn.h MAX_INSN_SIZE
INT3_INSN_SIZE = 1                        # a pre_handler sees regs->ip = addr + this, whatever
                                          # the mechanism (optimized_callback() and
                                          # kprobe_ftrace_handler() set it so too)
REL32_SIZE = 5                            # jmp/call rel32
MCOUNT_INSN_SIZE = 5                      # the fentry call ftrace patches (asm/ftrace.h)
# is_endbr() (asm/ibt.h) also takes the 4-byte nop that seals an unused endbr64:
# gen_endbr_poison(), "osp nopl (%rax)", written by apply_seal_endbr() (kernels with IBT)
ENDBR32 = b"\xf3\x0f\x1e\xfb"
ENDBR_POISON = b"\x66\x0f\x1f\x00"

_PREFIXES = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3))


def is_exception_insn(raw: bytes) -> bool:
    """is_exception_insn() of arch/x86/kernel/kprobes/core.c: int3, int n, into, int1, or
    ud0/ud1/ud2 (after any legacy and REX prefixes)."""
    at = 0
    while at < len(raw) and raw[at] in _PREFIXES:
        at += 1
    if at < len(raw) and 0x40 <= raw[at] <= 0x4F:
        at += 1
    opcode = raw[at:at + 2]
    if opcode[:1] == b"\x0f":
        return opcode[1:2] in (b"\xff", b"\xb9", b"\x0b")
    return opcode[:1] in (b"\xcc", b"\xcd", b"\xce", b"\xf1")


def unemulated_insn(raw: bytes) -> str | None:
    """Why prepare_emulation() (arch/x86/kernel/kprobes/core.c, 5.16 and later) refuses an
    instruction with -EOPNOTSUPP, or None: far call/jmp, iret, and an indirect call or jmp
    through memory or with a 32-bit address ("TODO: support memory addressing"). Kernels
    built with retpolines call through thunks instead; frame-pointer builds keep them."""
    at = 0
    address_32 = False
    while at < len(raw) and raw[at] in _PREFIXES:
        address_32 = address_32 or raw[at] == 0x67
        at += 1
    if at < len(raw) and 0x40 <= raw[at] <= 0x4F:
        at += 1
    opcode = raw[at:at + 1]
    if opcode in (b"\x9a", b"\xea"):
        return "a far call or jmp with a segment"
    if opcode == b"\xcf":
        return "iret"
    if opcode != b"\xff" or at + 1 >= len(raw):
        return None
    modrm = raw[at + 1]
    reg, mod = (modrm >> 3) & 7, modrm >> 6
    if reg in (3, 5):
        return "a far indirect call or jmp"
    if reg in (2, 4) and (mod != 3 or address_32):
        return ("an indirect call or jmp through memory: kprobes emulate it only through a "
                "register")
    return None


KASLR_ALIGN = 0x200000                    # CONFIG_PHYSICAL_ALIGN: the slide's granule
KASLR_RANGE = 0x40000000                  # the kernel image may move within 1 GiB
# registers that hold a kernel symbol's running address (arm64: VBAR_EL1 = vectors); none
# that QEMU's x86 gdbstub shows (the IDT base is not one of its registers)
KASLR_ANCHORS: tuple[tuple[str, str], ...] = ()
# `current`: the per-CPU current_task, or pcpu_hot.current_task from v6.2 (e57ef2ed97c1 "x86:
# Put hot per CPU variables into a struct") to v6.14 (v6.15 moved it back: a1e4cc0155ad
# "x86/percpu: Move current_task to percpu hot section"); (per-CPU symbol, its struct type,
# member) in the order tried, the symbols tell which this kernel has. No register holds it.
CURRENT_TASK_REGISTER: str | None = None
CURRENT_TASK_PERCPU: tuple[tuple[str, str | None, str | None], ...] = (
    ("pcpu_hot", "struct pcpu_hot", "current_task"), ("current_task", None, None))

# The virtual memory map (Documentation/arch/x86/x86_64/mm.rst, asm/pgtable_64_types.h,
# asm/page_64_types.h). Module space is [MODULES_VADDR, MODULES_END) with MODULES_VADDR =
# __START_KERNEL_map + KERNEL_IMAGE_SIZE: 1 GiB (KASLR_RANGE) with CONFIG_RANDOMIZE_BASE,
# 512 MiB without. The kernel model reads KERNEL_IMAGE_SIZE from the running kernel where it
# can (vmcoreinfo); these are the defaults the headers give.
START_KERNEL_MAP = 0xFFFFFFFF80000000     # __START_KERNEL_map
KERNEL_IMAGE_SIZE_FIXED = 512 << 20       # KERNEL_IMAGE_SIZE without CONFIG_RANDOMIZE_BASE
MODULES_END = 0xFFFFFFFFFF000000          # the same with 4- and 5-level paging
# the direct map (page_offset_base) and vmalloc (vmalloc_base) with 4- and 5-level paging;
# the bases are variables with CONFIG_DYNAMIC_MEMORY_LAYOUT (KASLR of memory)
PAGE_OFFSET_L4, PAGE_OFFSET_L5 = 0xFFFF888000000000, 0xFF11000000000000
DIRECT_MAP_SIZE_L4, DIRECT_MAP_SIZE_L5 = 64 << 40, 32 << 50        # 64 TiB, 32 PiB
VMALLOC_START_L4, VMALLOC_START_L5 = 0xFFFFC90000000000, 0xFFA0000000000000
VMALLOC_SIZE_L4, VMALLOC_SIZE_L5 = 32 << 40, 12800 << 40           # 32 TiB, 12800 TiB


# -- kp-show: what a probed address holds, and the single-step copy ----------------------
SITE_BYTES = 1                            # what site_mechanism() needs of the live code
TRAP_MECHANISM = "int3"
TRAP_EXPLANATION = ("the first byte is now int3: the CPU traps into kprobe_int3_handler(), "
                    "which runs the pre_handler, single-steps the copy in ainsn.insn, then "
                    "the post_handler")
SLOT_FIELD = "ainsn.insn"                 # struct kprobe's single-step copy
SIMULATE_FIELD = None                     # x86 emulates in place (ainsn.emulate_op), no slot-less kind


def site_mechanism(live: bytes, optimized: bool, ftrace: bool) -> str:
    """What the first live byte at an armed probe's address says, given its flags."""
    first = live[0] if live else None
    if first == JMP32 and optimized:
        return "optprobe jmp"
    if first == CALL32 and ftrace:
        return "ftrace call"
    if first == INT3:
        return TRAP_MECHANISM
    return "unexpected"


def slot_insns(boostable: int | None) -> int:
    """Instructions to show of the copy: a boosted copy ends with a jmp back."""
    return 2 if boostable else 1


def memory_map(info: dict[str, str], variable) -> tuple[tuple[int, int], ...]:
    """(modules, vmalloc, direct map) as [start, end) pairs. MODULES_VADDR =
    __START_KERNEL_map + KERNEL_IMAGE_SIZE, which the kernel reports in vmcoreinfo (`info`;
    1 GiB with CONFIG_RANDOMIZE_BASE). Without vmcoreinfo the 512 MiB default is taken:
    with a 1 GiB image area that only adds the unmapped tail of the image area, where
    nothing lives. page_offset_base and vmalloc_base are variables (`variable(name)`, None
    when absent) with CONFIG_DYNAMIC_MEMORY_LAYOUT, else the 4-level constants hold."""
    image_size = int(info.get("NUMBER(KERNEL_IMAGE_SIZE)", KERNEL_IMAGE_SIZE_FIXED))
    level5 = info.get("NUMBER(pgtable_l5_enabled)") == "1"
    page_offset = variable("page_offset_base") or (PAGE_OFFSET_L5 if level5 else PAGE_OFFSET_L4)
    vmalloc = variable("vmalloc_base") or (VMALLOC_START_L5 if level5 else VMALLOC_START_L4)
    direct_size = DIRECT_MAP_SIZE_L5 if level5 else DIRECT_MAP_SIZE_L4
    vmalloc_size = VMALLOC_SIZE_L5 if level5 else VMALLOC_SIZE_L4
    return ((START_KERNEL_MAP + image_size, MODULES_END), (vmalloc, vmalloc + vmalloc_size),
            (page_offset, page_offset + direct_size))


# -- kp-check: code sites the kernel patches (kernel/patchsites.py) ----------------------
JUMP_SITE_MAX = REL32_SIZE                # a static key's jmp32 / nop5
STATIC_CALL_SIZE = REL32_SIZE             # a static call's call/jmp rel32


def jump_site_size(head: bytes) -> int:
    """arch_jump_entry_size(): a jmp8 or a 2-byte nop, else 5 bytes (`head`: 2 live bytes)."""
    return 2 if head[0] == JMP8 or head == NOP2 else REL32_SIZE



# -- kp-sim and kp-locals: the names arm64.py has too -----------------------------------
PT_REGS_PC = "ip"                         # struct pt_regs' program counter
PRE_HANDLER_PC_DELTA = INT3_INSN_SIZE     # a pre_handler's regs->ip - p->addr
PRE_HANDLER_PC_TEXT = ("addr + 1, past the int3 (optimized and ftrace-based probes set it so "
                       "too)")
# DWARF register numbers (System V psABI, figure 3.36)
DWARF_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def probe_trap(raw: bytes) -> str | None:
    """What a live instruction that is not the vmlinux's is, by its first byte: an
    "optprobe jmp" (or a jump label's), the kprobe's "int3", an "ftrace call", or None."""
    first = raw[0] if raw else None
    return {JMP32: "optprobe jmp", INT3: TRAP_MECHANISM, CALL32: "ftrace call"}.get(first)


# the frame at a PC (kp-locals): x86_64_frame.py, to keep this module within its size
from gdb_kprobe.arch.x86_64_frame import frame_walk  # noqa: E402


def pt_regs_c(register: str) -> str:
    """The C expression of a gdb register in a handler's struct pt_regs *regs (regs->bp)."""
    return f"regs->{GDB_TO_PT_REGS[register]}"


PT_REGS_RETVAL = "ax"                     # regs_return_value()
ENTRY_RETURN_REGS: tuple[str, ...] = ()   # the return address is on the stack


def entry_return(regs: dict[str, int], read_u64) -> tuple[int, int]:
    """At a function's first instruction: (its return address, %rsp once it has returned).
    The call pushed the return address at %rsp; `ret` pops it."""
    return read_u64(regs["sp"]), regs["sp"] + 8


def simulated_branch(raw: bytes) -> str | None:
    """None: kp-sim's post view behind x86's int3 is the next instruction (as it always was);
    arm64's answers why there is none behind a simulated branch."""
    return None


# -- the unwinder's entry paths (engine/unwind.py, engine/code_map.py) -------------------
# entry code in the kernel image whose calls into C leave a pt_regs at %rsp: by name, or
# by name prefix (ftrace_regs_caller_op_ptr, _ret, _jmp, _end are inside ftrace_regs_caller)
ENTRY_SYMBOLS = {"asm_exc_int3": "int3"}
ENTRY_PREFIXES = {"ftrace_regs_caller": "ftrace"}
# C functions that code allocated at run time (ftrace trampolines, optprobe detour
# buffers) calls with a pt_regs at %rsp
ENTRY_CALLEES = {"exc_int3": "int3", "optimized_callback": "optprobe",
                 "kprobe_ftrace_handler": "ftrace", "arch_ftrace_ops_list_func": "ftrace"}
CODE_SPACE_START = START_KERNEL_MAP       # the image, then modules and run-time code above
TRAP_PC_ADVANCE = INT3_INSN_SIZE          # regs->ip is past the int3 while handlers run
PT_REGS_SP = "sp"
# gdb's own DWARF unwinder gives the right callers: the plugin's unwinder leaves ordinary
# frames to it (arm64's return addresses are signed: arch/arm64.py)
SIGNED_RETURN_ADDRESSES = False
RETURN_ADDRESS_REGISTER = "rip"
# kprobe handling's stages by function, for kp-where
KPROBE_STAGES = {"kprobe_int3_handler": "int3 entry", "optimized_callback": "optprobe entry",
                 "kprobe_ftrace_handler": "ftrace entry", "kprobe_post_process": "post-handler",
                 "rethook_trampoline_handler": "kretprobe return handler",
                 "arch_rethook_trampoline_callback": "kretprobe return handler"}


def saved_in_kernel(regs) -> bool:
    """Was this pt_regs (a layouts.View) saved from kernel code at a canonical ip?"""
    return regs.int("cs") == KERNEL_CS and is_canonical(regs.int("ip"))


ENTRY_PADDING = 0    # the FDE covers the fentry call
FRAME_POINTER_REGISTER = "rbp"


def pt_regs_values(regs) -> dict[str, int]:
    """UNWIND_REGS' values from a pt_regs (a layouts.View)."""
    return {name: regs.int(name) for name in UNWIND_REGS}


def address_bits(info: dict[str, str]) -> int:
    """No pointer authentication: every bit of a return address is address."""
    return 64


def code_address(raw: int, va_bits: int = 64) -> int:
    """A return address as the CPU would branch to it (nothing to strip on x86-64)."""
    return raw
