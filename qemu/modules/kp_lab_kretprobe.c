// SPDX-License-Identifier: GPL-2.0
/*
 * kp_lab_kretprobe: the lab's kretprobe module, in the spirit of the kernel's
 * samples/kprobes/kretprobe_example.c. The entry handler records a
 * timestamp in the per-instance data, the return handler prints the return
 * value and how long the call took.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/sched.h>

static char func_name[KSYM_NAME_LEN] = "inet_csk_accept";
module_param_string(func, func_name, KSYM_NAME_LEN, 0644);
static int maxactive = 20;
module_param(maxactive, int, 0444);

struct kp_lab_data {
	ktime_t entry_stamp;
};

static int entry_handler(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct kp_lab_data *data;

	if (!current->mm)
		return 1;	/* Skip kernel threads */

	data = (struct kp_lab_data *)ri->data;
	data->entry_stamp = ktime_get();
	return 0;
}
NOKPROBE_SYMBOL(entry_handler);

static int ret_handler(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	unsigned long retval = regs_return_value(regs);
	struct kp_lab_data *data = (struct kp_lab_data *)ri->data;
	s64 delta;
	ktime_t now;

	now = ktime_get();
	delta = ktime_to_ns(ktime_sub(now, data->entry_stamp));
	pr_info("kp_lab_kretprobe: %s returned 0x%lx and took %lld ns to execute\n",
		func_name, retval, (long long)delta);
	return 0;
}
NOKPROBE_SYMBOL(ret_handler);

static struct kretprobe my_kretprobe = {
	.handler		= ret_handler,
	.entry_handler		= entry_handler,
	.data_size		= sizeof(struct kp_lab_data),
};

static int __init kp_lab_kretprobe_init(void)
{
	int ret;

	my_kretprobe.kp.symbol_name = func_name;
	my_kretprobe.maxactive = maxactive;
	ret = register_kretprobe(&my_kretprobe);
	if (ret < 0) {
		pr_err("kp_lab_kretprobe: register_kretprobe failed, returned %d\n", ret);
		return ret;
	}
	pr_info("kp_lab_kretprobe: planted return probe at %s: %px maxactive=%d\n",
		my_kretprobe.kp.symbol_name, my_kretprobe.kp.addr,
		my_kretprobe.maxactive);
	return 0;
}

static void __exit kp_lab_kretprobe_exit(void)
{
	unregister_kretprobe(&my_kretprobe);
	pr_info("kp_lab_kretprobe: kretprobe at %px unregistered, missed %d instances\n",
		my_kretprobe.kp.addr, my_kretprobe.nmissed);
}

module_init(kp_lab_kretprobe_init)
module_exit(kp_lab_kretprobe_exit)
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gdb-kprobe lab: kretprobe with entry handler and maxactive");
