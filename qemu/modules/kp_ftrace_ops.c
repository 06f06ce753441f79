// SPDX-License-Identifier: GPL-2.0
/*
 * kp_ftrace_ops: a module with its own struct ftrace_ops (what a tracer or a rootkit that
 * hooks through ftrace registers), filtered to one function (vfs_read by default). Its
 * callback only counts. The lab's hooks scenario loads it so that kp-hooks (issue #16) has a
 * module-owned ftrace_ops to find, and tracing/enabled_functions shows it on the function.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/string.h>
#include <linux/atomic.h>

#if !IS_ENABLED(CONFIG_DYNAMIC_FTRACE)
#error "kp_ftrace_ops needs CONFIG_DYNAMIC_FTRACE (ftrace_set_filter)"
#endif

static char func[KSYM_NAME_LEN] = "vfs_read";
module_param_string(func, func, KSYM_NAME_LEN, 0444);

static atomic_long_t hits = ATOMIC_LONG_INIT(0);

static void notrace kp_ftrace_ops_callback(unsigned long ip, unsigned long parent_ip,
					   struct ftrace_ops *op, struct ftrace_regs *fregs)
{
	atomic_long_inc(&hits);
}

static struct ftrace_ops kp_ops = {
	.func = kp_ftrace_ops_callback,
	/* the callback touches nothing that could recurse back into ftrace */
	.flags = FTRACE_OPS_FL_RECURSION,
};

static int __init kp_ftrace_ops_init(void)
{
	int ret = ftrace_set_filter(&kp_ops, (unsigned char *)func, strlen(func), 1);

	if (ret) {
		pr_err("kp_ftrace_ops: ftrace_set_filter(%s) failed, returned %d\n", func, ret);
		return ret;
	}
	ret = register_ftrace_function(&kp_ops);
	if (ret) {
		pr_err("kp_ftrace_ops: register_ftrace_function failed, returned %d\n", ret);
		ftrace_free_filter(&kp_ops);
		return ret;
	}
	pr_info("kp_ftrace_ops: ftrace_ops at %px on %s, callback at %px\n", &kp_ops, func,
		kp_ftrace_ops_callback);
	return 0;
}

static void __exit kp_ftrace_ops_exit(void)
{
	unregister_ftrace_function(&kp_ops);
	ftrace_free_filter(&kp_ops);
	pr_info("kp_ftrace_ops: unregistered, %ld calls seen\n", atomic_long_read(&hits));
}

module_init(kp_ftrace_ops_init)
module_exit(kp_ftrace_ops_exit)
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gdb-kprobe lab: a module's own ftrace_ops on one function");
