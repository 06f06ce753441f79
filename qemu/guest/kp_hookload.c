// SPDX-License-Identifier: GPL-2.0
/*
 * kp_hookload: put the dynamic hooks a tracer puts on a function, from user space, with raw
 * syscalls only (no libbpf, no bpftool), and hold them open until killed. The lab's hooks
 * scenario runs it in the background so that kp-hooks (issue #16) has every kind of owner to
 * find, and qemu/hooks_oracle.py reads back what it printed.
 *
 *   kp_hookload perf:vfs_read perfret:inet_csk_accept perftask:vfs_read
 *               multi:vfs_read,inet_csk_accept fentry:vfs_read fexit:inet_csk_accept
 *
 *   perf:F      a kprobe perf event (the kprobe PMU: perf_kprobe_init() makes a trace_kprobe
 *               that is in kprobes/list but not in kprobe_events) on CPU 0 for every task,
 *               as libbpf attaches, with a BPF_PROG_TYPE_KPROBE program on it
 *               (PERF_EVENT_IOC_SET_BPF)
 *   perfret:F   the same with the PMU's retprobe bit: a kretprobe
 *   perftask:F  a kprobe perf event bound to this task (pid 0, any CPU), with a program
 *   multi:F,G   a BPF_TRACE_KPROBE_MULTI link (an fprobe: 5.18+, needs CONFIG_FPROBE; the
 *               Debian 6.1 cloud kernel has none, and then a line says it is unavailable)
 *   fentry:F    a BPF_PROG_TYPE_TRACING program attached through a BPF trampoline (ftrace
 *   fexit:F     direct call), found by F's BTF id in /sys/kernel/btf/vmlinux
 *
 * One machine-readable line per hook (key=value after the kind), then
 * "kp_hookload: ready pid=N failures=N" (failures: hooks that failed although the kernel
 * should support them, each with an "error" line); then it holds everything in pause().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PREFIX "kp_hookload: "
/* the kernel-internal ENOTSUPP (include/linux/errno.h), which some bpf paths return */
#define ENOTSUPP_KERNEL 524

static int failures;

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static int sys_perf_event_open(struct perf_event_attr *attr, pid_t pid, int cpu)
{
	return (int)syscall(__NR_perf_event_open, attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

static void fail(const char *what, const char *target, int err)
{
	printf(PREFIX "error %s %s: %s (errno %d)\n", what, target, strerror(err), err);
	failures++;
}

/* A small sysfs file's first number ("6\n", or "config:9" for a PMU format bit). */
static long read_number(const char *path)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");
	char *p;

	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	p = strchr(buf, ':');
	return strtol(p ? p + 1 : buf, NULL, 10);
}

/*
 * The programs: "r0 = 0; exit". A kprobe program's return value only says whether the perf
 * event also records a sample; a tracing program's is ignored for fentry/fexit.
 */
static const struct bpf_insn return_zero[] = {
	{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
	{ .code = BPF_JMP | BPF_EXIT },
};

static char verifier_log[65536];

static int load_program(enum bpf_prog_type type, enum bpf_attach_type expected,
			uint32_t attach_btf_id, const char *name, const char *target)
{
	union bpf_attr attr;
	int fd;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = type;
	attr.expected_attach_type = expected;
	attr.insns = (uint64_t)(uintptr_t)return_zero;
	attr.insn_cnt = sizeof(return_zero) / sizeof(return_zero[0]);
	attr.license = (uint64_t)(uintptr_t)"GPL";
	attr.attach_btf_id = attach_btf_id;
	attr.log_buf = (uint64_t)(uintptr_t)verifier_log;
	attr.log_size = sizeof(verifier_log);
	attr.log_level = 1;
	strncpy(attr.prog_name, name, sizeof(attr.prog_name) - 1);
	fd = (int)sys_bpf(BPF_PROG_LOAD, &attr);
	if (fd < 0) {
		int err = errno;

		fail("prog_load", target, err);
		if (verifier_log[0])
			printf(PREFIX "verifier log: %s\n", verifier_log);
	}
	return fd;
}

static int prog_info(int fd, struct bpf_prog_info *info)
{
	union bpf_attr attr;

	memset(info, 0, sizeof(*info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = fd;
	attr.info.info_len = sizeof(*info);
	attr.info.info = (uint64_t)(uintptr_t)info;
	return (int)sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
}

static uint32_t link_id(int fd)
{
	struct bpf_link_info info;
	union bpf_attr attr;

	memset(&info, 0, sizeof(info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = fd;
	attr.info.info_len = sizeof(info);
	attr.info.info = (uint64_t)(uintptr_t)&info;
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0)
		return 0;
	return info.id;
}

/* " prog_fd=N prog_id=N prog_tag=HEX name=NAME" */
static void print_prog(int fd, const char *name)
{
	struct bpf_prog_info info;
	int i;

	if (prog_info(fd, &info) < 0) {
		printf(" prog_fd=%d prog_id=? name=%s", fd, name);
		return;
	}
	printf(" prog_fd=%d prog_id=%u prog_tag=", fd, info.id);
	for (i = 0; i < BPF_TAG_SIZE; i++)
		printf("%02x", info.tag[i]);
	printf(" name=%s", name);
}

/* perf:, perfret:, perftask: a kprobe PMU event with a kprobe program on it. */
static void attach_perf(const char *function, int retprobe, int task)
{
	const char *kind = retprobe ? "perfret" : task ? "perftask" : "perf";
	const char *name = retprobe ? "kp_perfret" : task ? "kp_perftask" : "kp_perf";
	struct perf_event_attr attr;
	long type, bit;
	int fd, prog;

	type = read_number("/sys/bus/event_source/devices/kprobe/type");
	if (type < 0) {
		fail(kind, function, ENOENT);
		return;
	}
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = (uint32_t)type;
	if (retprobe) {
		bit = read_number("/sys/bus/event_source/devices/kprobe/format/retprobe");
		if (bit < 0) {
			fail(kind, function, ENOENT);
			return;
		}
		attr.config |= 1ULL << bit;
	}
	attr.kprobe_func = (uint64_t)(uintptr_t)function;	/* config1 */
	attr.probe_offset = 0;					/* config2 */
	attr.sample_period = 1;
	attr.wakeup_events = 1;
	attr.disabled = 1;
	fd = sys_perf_event_open(&attr, task ? 0 : -1, task ? -1 : 0);
	if (fd < 0) {
		fail(kind, function, errno);
		return;
	}
	prog = load_program(BPF_PROG_TYPE_KPROBE, 0, 0, name, function);
	if (prog < 0)
		return;
	if (ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog) < 0) {
		fail("PERF_EVENT_IOC_SET_BPF", function, errno);
		return;
	}
	if (ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0) {
		fail("PERF_EVENT_IOC_ENABLE", function, errno);
		return;
	}
	printf(PREFIX "%s kprobe %s fd=%d pid=%d cpu=%d retprobe=%d", kind, function, fd,
	       task ? (int)getpid() : -1, task ? -1 : 0, retprobe);
	print_prog(prog, name);
	printf("\n");
}

/* multi:F,G,...: one kprobe_multi link (an fprobe) over the listed symbols. */
static void attach_multi(char *functions)
{
	const char *syms[64];
	union bpf_attr attr;
	char *save = NULL, *copy = strdup(functions), *sym;
	int count = 0, prog, link;

	for (sym = strtok_r(copy, ",", &save); sym && count < 64; sym = strtok_r(NULL, ",", &save))
		syms[count++] = sym;
	prog = load_program(BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI, 0, "kp_multi",
			    functions);
	if (prog < 0)
		return;
	memset(&attr, 0, sizeof(attr));
	attr.link_create.prog_fd = prog;
	attr.link_create.attach_type = BPF_TRACE_KPROBE_MULTI;
	attr.link_create.kprobe_multi.cnt = count;
	attr.link_create.kprobe_multi.syms = (uint64_t)(uintptr_t)syms;
	link = (int)sys_bpf(BPF_LINK_CREATE, &attr);
	if (link < 0) {
		int err = errno;

		/* bpf_kprobe_multi_link_attach() without CONFIG_FPROBE: -EOPNOTSUPP */
		if (err == EOPNOTSUPP || err == ENOTSUPP_KERNEL) {
			printf(PREFIX "multi unavailable %s: %s (errno %d): this kernel has no "
			       "fprobe (CONFIG_FPROBE)\n", functions, strerror(err), err);
			close(prog);
			return;
		}
		fail("multi", functions, err);
		return;
	}
	printf(PREFIX "multi kprobe_multi %s link_fd=%d link_id=%u", functions, link,
	       link_id(link));
	print_prog(prog, "kp_multi");
	printf("\n");
}

/* ---- a minimal reader of /sys/kernel/btf/vmlinux: the id of a BTF_KIND_FUNC by name ---- */

struct btf_header_raw {		/* struct btf_header, include/uapi/linux/btf.h */
	uint16_t magic;
	uint8_t version;
	uint8_t flags;
	uint32_t hdr_len;
	uint32_t type_off;
	uint32_t type_len;
	uint32_t str_off;
	uint32_t str_len;
};

static unsigned char *btf_data;
static size_t btf_size;

static int read_btf(void)
{
	int fd = open("/sys/kernel/btf/vmlinux", O_RDONLY);
	size_t cap = 1 << 22;
	ssize_t n;

	if (fd < 0)
		return -errno;
	btf_data = malloc(cap);
	/* a sysfs binary file: its st_size is right, but read until EOF all the same */
	while ((n = read(fd, btf_data + btf_size, cap - btf_size)) > 0) {
		btf_size += n;
		if (btf_size == cap)
			btf_data = realloc(btf_data, cap *= 2);
	}
	close(fd);
	return n < 0 ? -errno : 0;
}

/* The bytes that follow struct btf_type for each kind (include/uapi/linux/btf.h). */
static long btf_extra(uint32_t kind, uint32_t vlen)
{
	switch (kind) {
	case 1: return 4;		/* INT */
	case 3: return 12;		/* ARRAY */
	case 4: case 5: return 12L * vlen;	/* STRUCT, UNION: btf_member */
	case 6: return 8L * vlen;	/* ENUM: btf_enum */
	case 13: return 8L * vlen;	/* FUNC_PROTO: btf_param */
	case 14: return 4;		/* VAR */
	case 15: return 12L * vlen;	/* DATASEC: btf_var_secinfo */
	case 17: return 4;		/* DECL_TAG */
	case 19: return 12L * vlen;	/* ENUM64 */
	case 2: case 7: case 8: case 9: case 10: case 11: case 12: case 16: case 18:
		return 0;
	default: return -1;
	}
}

static int32_t btf_func_id(const char *function)
{
	struct btf_header_raw *h;
	const unsigned char *types, *end;
	const char *strings;
	int32_t id = 1;

	if (!btf_data && read_btf() < 0)
		return -ENOENT;
	h = (struct btf_header_raw *)btf_data;
	if (btf_size < sizeof(*h) || h->magic != 0xeB9F)
		return -EINVAL;
	types = btf_data + h->hdr_len + h->type_off;
	end = types + h->type_len;
	strings = (const char *)btf_data + h->hdr_len + h->str_off;
	while (types + 12 <= end) {
		uint32_t name_off, info, kind, vlen;
		long extra;

		memcpy(&name_off, types, 4);
		memcpy(&info, types + 4, 4);
		kind = (info >> 24) & 0x1f;
		vlen = info & 0xffff;
		if (kind == 12 && !strcmp(strings + name_off, function))	/* BTF_KIND_FUNC */
			return id;
		extra = btf_extra(kind, vlen);
		if (extra < 0)
			return -EINVAL;
		types += 12 + extra;
		id++;
	}
	return -ESRCH;
}

/* fentry:F / fexit:F: a tracing program on F's BPF trampoline. */
static void attach_tracing(const char *function, int exit)
{
	const char *kind = exit ? "fexit" : "fentry";
	const char *name = exit ? "kp_fexit" : "kp_fentry";
	union bpf_attr attr;
	int32_t btf_id = btf_func_id(function);
	int prog, link;

	if (btf_id < 0) {
		fail("btf", function, -btf_id);
		return;
	}
	prog = load_program(BPF_PROG_TYPE_TRACING, exit ? BPF_TRACE_FEXIT : BPF_TRACE_FENTRY,
			    (uint32_t)btf_id, name, function);
	if (prog < 0)
		return;
	/* BPF_RAW_TRACEPOINT_OPEN with no name attaches a tracing program (5.5+) */
	memset(&attr, 0, sizeof(attr));
	attr.raw_tracepoint.prog_fd = prog;
	link = (int)sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &attr);
	if (link < 0) {
		fail(kind, function, errno);
		return;
	}
	printf(PREFIX "%s trampoline %s btf_id=%d link_fd=%d link_id=%u", kind, function, btf_id,
	       link, link_id(link));
	print_prog(prog, name);
	printf("\n");
}

int main(int argc, char **argv)
{
	int i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		fprintf(stderr, "usage: kp_hookload {perf|perfret|perftask|fentry|fexit}:FUNCTION "
			"multi:F[,G...] ...\n");
		return 2;
	}
	for (i = 1; i < argc; i++) {
		char *spec = argv[i], *target = strchr(spec, ':');

		if (!target || !target[1]) {
			fprintf(stderr, PREFIX "bad argument %s (want KIND:FUNCTION)\n", spec);
			return 2;
		}
		*target++ = 0;
		if (!strcmp(spec, "perf"))
			attach_perf(target, 0, 0);
		else if (!strcmp(spec, "perfret"))
			attach_perf(target, 1, 0);
		else if (!strcmp(spec, "perftask"))
			attach_perf(target, 0, 1);
		else if (!strcmp(spec, "multi"))
			attach_multi(target);
		else if (!strcmp(spec, "fentry"))
			attach_tracing(target, 0);
		else if (!strcmp(spec, "fexit"))
			attach_tracing(target, 1);
		else {
			fprintf(stderr, PREFIX "unknown kind %s\n", spec);
			return 2;
		}
	}
	printf(PREFIX "ready pid=%d failures=%d\n", (int)getpid(), failures);
	for (;;)
		pause();
}
