"""Guards every kp-* command runs before touching the kernel (pwndbg-style decorators)."""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from gdb_kprobe.kernel import kaslr
from gdb_kprobe.target import guards

__all__ = ["require_kernel", "needs_kernel", "needs_target"]

F = TypeVar("F", bound=Callable[..., Any])


def require_kernel() -> None:
    """A symbol file, an attached and stopped target, and the two describe one kernel
    (same linux_banner, same load address)."""
    guards.require_symbols()
    guards.require_stopped_target()
    kaslr.require_matching_kernel()


def needs_kernel(run: F) -> F:
    """Decorate a command's run(): require_kernel() first."""
    @functools.wraps(run)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        require_kernel()
        return run(*args, **kwargs)
    return guarded          # type: ignore[return-value]


def needs_target(run: F) -> F:
    """Decorate a command's run(): a symbol file and a stopped target, any kernel (kp-kaslr
    is how one finds out whether they match)."""
    @functools.wraps(run)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        guards.require_symbols()
        guards.require_stopped_target()
        return run(*args, **kwargs)
    return guarded          # type: ignore[return-value]
