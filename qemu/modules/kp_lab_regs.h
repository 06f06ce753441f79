/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The registers the lab's handlers print, per architecture, as the kernel's
 * samples/kprobes/kprobe_example.c does: x86-64 names what kp-sim compares
 * (ip ax di si dx cx sp flags); arm64 its pc, first argument registers, sp, pstate.
 */
#ifndef KP_LAB_REGS_H
#define KP_LAB_REGS_H

#ifdef CONFIG_X86
#define KP_LAB_REGS_FMT "ip=0x%lx ax=0x%lx di=0x%lx si=0x%lx dx=0x%lx cx=0x%lx sp=0x%lx flags=0x%lx"
#define KP_LAB_REGS(r) (r)->ip, (r)->ax, (r)->di, (r)->si, (r)->dx, (r)->cx, (r)->sp, (r)->flags
/* kp_lab_sample's short line: the pc and the first two arguments */
#define KP_LAB_SHORT_FMT "ip=0x%lx"
#define KP_LAB_ARGS_FMT "di=0x%lx si=0x%lx sp=0x%lx"
#define KP_LAB_PC(r) (r)->ip
#define KP_LAB_ARGS(r) (r)->di, (r)->si, (r)->sp
#elif defined(CONFIG_ARM64)
#define KP_LAB_REGS_FMT "pc=0x%llx x0=0x%llx x1=0x%llx x2=0x%llx x3=0x%llx sp=0x%llx pstate=0x%llx"
#define KP_LAB_REGS(r) (r)->pc, (r)->regs[0], (r)->regs[1], (r)->regs[2], (r)->regs[3], \
	(r)->sp, (r)->pstate
#define KP_LAB_SHORT_FMT "pc=0x%llx"
#define KP_LAB_ARGS_FMT "x0=0x%llx x1=0x%llx sp=0x%llx"
#define KP_LAB_PC(r) (r)->pc
#define KP_LAB_ARGS(r) (r)->regs[0], (r)->regs[1], (r)->sp
#else
#error "the lab modules know the registers of x86-64 and arm64 only"
#endif

#endif
