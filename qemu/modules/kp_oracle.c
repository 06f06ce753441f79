// SPDX-License-Identifier: GPL-2.0
/*
 * kp_oracle: ask register_kprobe() itself, in the spirit of the kernel's
 * samples/kprobes/kprobe_example.c. tests/e2e/test_oracle.py compares its answers with
 * kp-check's (qemu/oracle.py writes the places).
 *
 * Writing one place to /sys/kernel/debug/kp_oracle registers a kprobe there and
 * unregisters it right away:
 *
 *   ADDR                        kp.addr = ADDR, when kstrtoul(base 0) takes the whole
 *                               place (0x.. hex, as kprobe_events reads an address)
 *   SYM, SYM+OFF, MOD:SYM+OFF   else kp.symbol_name = "[MOD:]SYM", kp.offset = OFF
 *                               (unsigned int: kstrtouint base 0)
 *
 * The write returns register_kprobe()'s negative errno, or the count on success.
 * Reading the file gives the last result as one line:
 *
 *   ok 0xffffffff81445484 flags=0x8    p->addr and p->flags while it was registered
 *   err -22                            register_kprobe() refused
 *   parse -34                          the place could not be parsed (never registered)
 *
 * The probe has no handlers: it exists only for the time of the write.
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#define KP_ORACLE_MAX_SPEC (KSYM_NAME_LEN + MODULE_NAME_LEN + 32)

static DEFINE_MUTEX(kp_oracle_lock);
static char kp_oracle_result[80] = "none\n";
static struct dentry *kp_oracle_file;

/* Fill in kp from "ADDR" or "[MOD:]SYM[+OFF]"; returns 0 or a negative errno. */
static int kp_oracle_parse(char *spec, struct kprobe *kp)
{
	unsigned long addr;
	unsigned int offset = 0;
	char *plus;
	int ret;

	if (!kstrtoul(spec, 0, &addr)) {
		kp->addr = (kprobe_opcode_t *)addr;
		return 0;
	}
	plus = strchr(spec, '+');
	if (plus) {
		*plus = '\0';
		ret = kstrtouint(plus + 1, 0, &offset);
		if (ret)
			return ret;
	}
	if (!spec[0])
		return -EINVAL;
	kp->symbol_name = kstrdup(spec, GFP_KERNEL);
	if (!kp->symbol_name)
		return -ENOMEM;
	kp->offset = offset;
	return 0;
}

static ssize_t kp_oracle_write(struct file *file, const char __user *ubuf,
			       size_t count, loff_t *ppos)
{
	char *spec;
	struct kprobe *kp;
	int ret;

	if (count == 0 || count >= KP_ORACLE_MAX_SPEC)
		return -EINVAL;
	spec = memdup_user_nul(ubuf, count);
	if (IS_ERR(spec))
		return PTR_ERR(spec);
	kp = kzalloc(sizeof(*kp), GFP_KERNEL);
	if (!kp) {
		kfree(spec);
		return -ENOMEM;
	}
	mutex_lock(&kp_oracle_lock);
	ret = kp_oracle_parse(strim(spec), kp);
	if (ret) {
		snprintf(kp_oracle_result, sizeof(kp_oracle_result), "parse %d\n", ret);
		goto out;
	}
	ret = register_kprobe(kp);
	if (ret < 0) {
		snprintf(kp_oracle_result, sizeof(kp_oracle_result), "err %d\n", ret);
		goto out;
	}
	snprintf(kp_oracle_result, sizeof(kp_oracle_result), "ok 0x%px flags=0x%x\n",
		 kp->addr, kp->flags);
	unregister_kprobe(kp);
	ret = count;
out:
	mutex_unlock(&kp_oracle_lock);
	kfree(kp->symbol_name);
	kfree(kp);
	kfree(spec);
	return ret;
}

static ssize_t kp_oracle_read(struct file *file, char __user *ubuf, size_t count,
			      loff_t *ppos)
{
	char line[sizeof(kp_oracle_result)];

	mutex_lock(&kp_oracle_lock);
	strscpy(line, kp_oracle_result, sizeof(line));
	mutex_unlock(&kp_oracle_lock);
	return simple_read_from_buffer(ubuf, count, ppos, line, strlen(line));
}

static const struct file_operations kp_oracle_fops = {
	.owner = THIS_MODULE,
	.read = kp_oracle_read,
	.write = kp_oracle_write,
	.llseek = default_llseek,
};

static int __init kp_oracle_init(void)
{
	kp_oracle_file = debugfs_create_file("kp_oracle", 0600, NULL, NULL, &kp_oracle_fops);
	if (IS_ERR(kp_oracle_file))
		return PTR_ERR(kp_oracle_file);
	pr_info("kp_oracle: write a place to /sys/kernel/debug/kp_oracle\n");
	return 0;
}

static void __exit kp_oracle_exit(void)
{
	debugfs_remove(kp_oracle_file);
}

module_init(kp_oracle_init)
module_exit(kp_oracle_exit)
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gdb-kprobe lab: register_kprobe()'s verdict on a place, through debugfs");
