"""Labels the unwinder gives the frames it explained, by (sp, pc), for `bt` and kp-where.

They are made while gdb builds frames (the first ones already while it reports a stop,
before the stop event), so they live until the target runs again (cache.RESUME).
"""
from __future__ import annotations

import gdb

from gdb_kprobe import arch
from gdb_kprobe.target import cache

__all__ = ["put", "get", "clear", "key_of", "any_made"]

_labels: dict[tuple[int, int], str] = {}
cache.register(_labels.clear, *cache.RESUME)


def put(sp: int, pc: int, label: str) -> None:
    _labels[(sp, pc)] = label


def get(key: tuple[int, int]) -> str | None:
    return _labels.get(key)


def any_made() -> bool:
    """Did the unwinder label any frame built since the target last ran? (Without a label
    the frame filter stays out of `bt`'s way.)"""
    return bool(_labels)


def clear() -> None:
    _labels.clear()


def key_of(frame: gdb.Frame) -> tuple[int, int]:
    """(sp, pc) of a gdb frame, the key its label is stored under."""
    return arch.u64(int(frame.read_register(arch.STACK_POINTER))), int(frame.pc())
