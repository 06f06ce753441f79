// SPDX-License-Identifier: GPL-2.0
/*
 * kp_hidden: a test helper that behaves like the classic rootkit (issue #16): it
 * registers a kprobe on vfs_statx with a pre_handler in its own text, then takes
 * itself off the module list, so /proc/modules, lsmod and every walk of `modules`
 * no longer know it. Its code and its static struct kprobe stay where the loader
 * put them, in module space. tests/e2e/test_hidden_module.py loads it and checks
 * that kp-list -v and kp-show flag the probe instead of calling it the kernel's.
 *
 * It is never unloaded: off the list, delete_module() cannot find it.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/rculist.h>
#include <linux/atomic.h>

static atomic_t hits = ATOMIC_INIT(0);

/* Runs on every stat(): counts and nothing else, so the guest is not slowed down. */
static int __kprobes hidden_pre(struct kprobe *p, struct pt_regs *regs)
{
	atomic_inc(&hits);
	return 0;
}

static struct kprobe kp = {
	.symbol_name = "vfs_statx",
	.pre_handler = hidden_pre,
};

static int __init kp_hidden_init(void)
{
	int ret = register_kprobe(&kp);

	if (ret < 0) {
		pr_err("kp_hidden: register_kprobe failed, returned %d\n", ret);
		return ret;
	}
	pr_info("kp_hidden: planted kprobe at %px, struct kprobe at %px, pre_handler at %px\n",
		kp.addr, &kp, hidden_pre);
	/*
	 * What rootkits do. module_mutex is not exported (since v5.12), so this runs
	 * without it: list_del_rcu() keeps ->next valid for a reader walking the list
	 * under RCU right now (/proc/modules, kallsyms), and the loader never touches
	 * mod->list again after init while the module stays loaded.
	 */
	list_del_rcu(&THIS_MODULE->list);
	return 0;
}

module_init(kp_hidden_init)
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gdb-kprobe test: a kprobe whose module hides itself from the module list");
