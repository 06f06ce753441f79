// SPDX-License-Identifier: GPL-2.0
/*
 * kp_lab_kprobe: the lab's kprobe module, in the spirit of the kernel's
 * samples/kprobes/kprobe_example.c. Pre and post handlers on a symbol
 * (inet_csk_accept by default) print the registers the handlers receive,
 * so the debugger's view can be compared with what a real kprobe sees.
 *
 * With int3_symbol/int3_offset it plants a second probe with the same handlers
 * inside a function: a kprobe with a post_handler is never optimized, so that
 * one always stays an int3 breakpoint with a single-stepped copy.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/kprobes.h>

#include "kp_lab_regs.h"

static char symbol[KSYM_NAME_LEN] = "inet_csk_accept";
module_param_string(symbol, symbol, KSYM_NAME_LEN, 0644);
static unsigned int offset;
module_param(offset, uint, 0644);
static char int3_symbol[KSYM_NAME_LEN];
module_param_string(int3_symbol, int3_symbol, KSYM_NAME_LEN, 0644);
static unsigned int int3_offset;
module_param(int3_offset, uint, 0644);

/* A plain, probe-able function in module text: tests put kprobe_events probes on it
 * ("p kp_lab_kprobe:kp_lab_target") and watch them turn [GONE] when the module goes. */
noinline int kp_lab_target(int value)
{
	return value + 1;
}
EXPORT_SYMBOL_GPL(kp_lab_target);

static struct kprobe kp = {
	.symbol_name = symbol,
};

static struct kprobe kp_int3 = {
	.symbol_name = int3_symbol,
};

static int __kprobes handler_pre(struct kprobe *p, struct pt_regs *regs)
{
	pr_info("kp_lab_kprobe: I am Handler Pre: <%s+0x%x> p->addr=0x%px " KP_LAB_REGS_FMT "\n",
		p->symbol_name, p->offset, p->addr, KP_LAB_REGS(regs));
	return 0;
}

static void __kprobes handler_post(struct kprobe *p, struct pt_regs *regs,
				   unsigned long flags)
{
	pr_info("kp_lab_kprobe: I am Handler Post: <%s+0x%x> p->addr=0x%px " KP_LAB_REGS_FMT "\n",
		p->symbol_name, p->offset, p->addr, KP_LAB_REGS(regs));
}

static int __init kp_lab_kprobe_init(void)
{
	int ret;

	kp.pre_handler = handler_pre;
	kp.post_handler = handler_post;
	kp.offset = offset;
	ret = register_kprobe(&kp);
	if (ret < 0) {
		pr_err("kp_lab_kprobe: register_kprobe failed, returned %d\n", ret);
		return ret;
	}
	pr_info("kp_lab_kprobe: planted kprobe at %px (%s+0x%x) flags=0x%x\n",
		kp.addr, symbol, offset, kp.flags);
	if (!int3_symbol[0])
		return 0;
	kp_int3.pre_handler = handler_pre;
	kp_int3.post_handler = handler_post;
	kp_int3.offset = int3_offset;
	ret = register_kprobe(&kp_int3);
	if (ret < 0) {
		pr_err("kp_lab_kprobe: register_kprobe(%s+0x%x) failed, returned %d\n",
		       int3_symbol, int3_offset, ret);
		unregister_kprobe(&kp);
		return ret;
	}
	pr_info("kp_lab_kprobe: planted kprobe at %px (%s+0x%x) flags=0x%x\n",
		kp_int3.addr, int3_symbol, int3_offset, kp_int3.flags);
	return 0;
}

static void __exit kp_lab_kprobe_exit(void)
{
	if (int3_symbol[0])
		unregister_kprobe(&kp_int3);
	unregister_kprobe(&kp);
	pr_info("kp_lab_kprobe: kprobe at %px unregistered, nmissed=%lu\n",
		kp.addr, kp.nmissed);
}

module_init(kp_lab_kprobe_init)
module_exit(kp_lab_kprobe_exit)
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gdb-kprobe lab: kprobe with pre/post handlers");
