"""The probe addresses of the last kp-list output, so other commands can take `#N`."""
from __future__ import annotations

_last: list[int] = []


def remember(addresses: list[int]) -> None:
    _last[:] = addresses


def last_addresses() -> list[int]:
    return list(_last)
