"""Guards every kp-* command runs before touching the kernel (pwndbg-style)."""
from __future__ import annotations

from gdb_kprobe import kaslr, target


def require_kernel() -> None:
    """A symbol file, an attached and stopped target, and the two describe one kernel
    (same linux_banner, same load address)."""
    target.require_symbols()
    target.require_stopped_target()
    kaslr.require_matching_kernel()
