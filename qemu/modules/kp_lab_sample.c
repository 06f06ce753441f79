// SPDX-License-Identifier: GPL-2.0
/*
 * kp_lab_sample: one kprobe with a pre_handler only, like the kernel's
 * samples/kprobes/kprobe_example.c without its post_handler, so the kprobe may be
 * optimized. Its print is what kp-sim's pre view must equal, on every mechanism: an
 * int3, an optimized probe (a jmp to a detour buffer), an ftrace-based probe at a
 * function's fentry site, and an entry behind a sealed endbr64 (IBT).
 *
 *   insmod kp_lab_sample.ko symbol=inet_accept offset=20
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/kprobes.h>

#include "kp_lab_regs.h"

static char symbol[KSYM_NAME_LEN] = "inet_accept";
module_param_string(symbol, symbol, KSYM_NAME_LEN, 0644);
static unsigned int offset;
module_param(offset, uint, 0644);

static struct kprobe kp = {
	.symbol_name = symbol,
};

static int __kprobes handler_pre(struct kprobe *p, struct pt_regs *regs)
{
	pr_info("kp_lab_sample: pre <%s+0x%x> p->addr=0x%px " KP_LAB_SHORT_FMT " flags=0x%x "
		KP_LAB_ARGS_FMT "\n", p->symbol_name, p->offset, p->addr, KP_LAB_PC(regs), p->flags,
		KP_LAB_ARGS(regs));
	return 0;
}

static int __init kp_lab_sample_init(void)
{
	int ret;

	kp.offset = offset;
	kp.pre_handler = handler_pre;
	ret = register_kprobe(&kp);
	if (ret < 0) {
		pr_err("kp_lab_sample: register_kprobe %s+0x%x failed: %d\n", symbol, offset, ret);
		return ret;
	}
	pr_info("kp_lab_sample: planted kprobe at %px (%s+0x%x) flags=0x%x\n",
		kp.addr, symbol, offset, kp.flags);
	return 0;
}

static void __exit kp_lab_sample_exit(void)
{
	unregister_kprobe(&kp);
	pr_info("kp_lab_sample: kprobe at %px unregistered\n", kp.addr);
}

module_init(kp_lab_sample_init);
module_exit(kp_lab_sample_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gdb-kprobe lab: a pre_handler-only kprobe, as samples/kprobes does");
