// SPDX-License-Identifier: GPL-2.0
/*
 * kp_lab_hello: the smallest kernel module, the tutorial's first step.
 * insmod runs hello_init, rmmod runs hello_exit; both say so in the kernel log.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

static char *whom = "world";
module_param(whom, charp, 0444);
MODULE_PARM_DESC(whom, "who to greet");

static int __init hello_init(void)
{
	pr_info("kp_lab_hello: hello, %s\n", whom);
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("kp_lab_hello: goodbye, %s\n", whom);
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gdb-kprobe lab: hello, kernel");
