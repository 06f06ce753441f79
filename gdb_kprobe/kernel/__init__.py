"""The kernel's objects as a pure model: lists, per-CPU data, tasks, modules, kallsyms,
kprobes, kretprobes and rethook, a probe's anatomy, register_kprobe()'s checks, KASLR.
Each module reads kernel memory through target/ and returns dataclasses; nothing prints."""
