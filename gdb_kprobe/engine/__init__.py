"""What drives or hooks gdb: breakpoints and kp-sim's runs, the unwinder that sees through
kprobe trampolines and its frame labels in `bt`, a `finish` that follows the task, and
symbol files (module .ko symbols, KASLR relocation)."""
