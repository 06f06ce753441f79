// SPDX-License-Identifier: GPL-2.0
/*
 * kp_livepatch: a livepatch in the way of the kernel's samples/livepatch/livepatch-sample.c:
 * it replaces cmdline_proc_show (/proc/cmdline) with a function in this module. Livepatch
 * redirects the old function through its own ftrace_ops (klp_ftrace_handler, IPMODIFY), so
 * the lab's hooks scenario loads it to give kp-hooks (issue #16) a livepatch owner to find.
 * Loading it taints the kernel with K (livepatched); it is never disabled by the lab.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

#if IS_ENABLED(CONFIG_LIVEPATCH)
static int kp_livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "kp_livepatch: this /proc/cmdline has been live patched\n");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = kp_livepatch_cmdline_proc_show },
	{ }
};

static struct klp_object objs[] = {
	{ .funcs = funcs },		/* .name NULL: vmlinux */
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int __init kp_livepatch_init(void)
{
	return klp_enable_patch(&patch);
}
#else	/* a kernel without livepatch (the lab's 6.1-fp): build, refuse to load */
static int __init kp_livepatch_init(void)
{
	pr_err("kp_livepatch: this kernel has no CONFIG_LIVEPATCH\n");
	return -EOPNOTSUPP;
}
#endif

static void __exit kp_livepatch_exit(void)
{
}

module_init(kp_livepatch_init);
module_exit(kp_livepatch_exit);
MODULE_LICENSE("GPL");
#if IS_ENABLED(CONFIG_LIVEPATCH)
MODULE_INFO(livepatch, "Y");
#endif
MODULE_DESCRIPTION("gdb-kprobe lab: a livepatch of cmdline_proc_show");
