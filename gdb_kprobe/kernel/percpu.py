"""Per-CPU variables: `__per_cpu_offset[cpu] + &var`, as scripts/gdb/linux/cpus.py does."""
from __future__ import annotations

import struct

from gdb_kprobe import arch
from gdb_kprobe.target import memory, symbols
from gdb_kprobe.errors import KpError

__all__ = ["cpu_count", "offsets", "addresses", "MAX_CPUS"]

MAX_CPUS = 8192


def cpu_count() -> int:
    """nr_cpu_ids: the possible CPUs (the lab boots with -smp 2)."""
    count = struct.unpack("<I", memory.read(symbols.kernel_address("nr_cpu_ids"), 4))[0]
    if not 0 < count <= MAX_CPUS:
        raise KpError(f"nr_cpu_ids reads {count}: kernel memory looks damaged")
    return count


def offsets() -> list[int]:
    """__per_cpu_offset[0 .. nr_cpu_ids), in one read."""
    count = cpu_count()
    raw = memory.read(symbols.kernel_address("__per_cpu_offset"), 8 * count)
    return list(struct.unpack(f"<{count}Q", raw))


def addresses(symbol: str) -> list[int]:
    """The address of per-CPU variable `symbol` on each CPU."""
    base = symbols.kernel_address(symbol)
    # modulo 2**64: arm64's offsets (area - __per_cpu_start) wrap, its &var is a kernel
    # address, and the sum passes 2**64 (x86-64's percpu symbols are small: no wrap there)
    return [arch.u64(base + offset) for offset in offsets()]
