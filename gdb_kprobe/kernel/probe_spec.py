"""The place syntax of kprobe_events, parsed the way kernel/trace/trace_kprobe.c does.

`p[:EVENT] PLACE` takes PLACE as an address when kstrtoul(PLACE, 0) accepts it, else as
`[MOD:]SYM[+|-OFFS][%return]` (__trace_kprobe_create(), traceprobe_split_symbol_offset()).
The number rules are lib/kstrtox.c's: base 0 means 0x.. hex, 0.. octal, else decimal; one
leading `+` is allowed; a trailing newline is ignored; anything else left over, or a value
that overflows, is an error. Pure: no gdb, no target.
"""
from __future__ import annotations

import dataclasses
import errno

__all__ = ["EventPlace", "kstrtoull", "kstrtol", "parse_event_place", "UINT_MAX"]

ULLONG_MAX = (1 << 64) - 1
LONG_MAX = (1 << 63) - 1
UINT_MAX = (1 << 32) - 1
_DIGITS = "0123456789abcdef"


def kstrtoull(text: str, base: int = 0) -> int | None:
    """lib/kstrtox.c kstrtoull(): the value, or None where the kernel returns an error."""
    if text.endswith("\n"):
        text = text[:-1]
    if text.startswith("+"):
        text = text[1:]
    if base == 0:
        if text.startswith("0") and text[1:2] in ("x", "X") and text[2:3].lower() in \
                tuple(_DIGITS):
            base, text = 16, text[2:]
        else:
            base = 8 if text.startswith("0") else 10
    elif base == 16 and text[:2].lower() == "0x":
        text = text[2:]
    if not text or any(c.lower() not in _DIGITS[:base] for c in text):
        return None
    value = int(text, base)
    return value if value <= ULLONG_MAX else None


def kstrtol(text: str, base: int = 0) -> int | None:
    """kstrtol(): a signed long, or None on a bad number or an overflow (-ERANGE)."""
    if text.startswith("-"):
        rest = text[1:]
        if rest.startswith("+"):          # _kstrtoull() after the sign takes no second sign
            return None
        value = kstrtoull(rest, base)
        return None if value is None or value > LONG_MAX + 1 else -value
    value = kstrtoull(text, base)
    return None if value is None or value > LONG_MAX else value


@dataclasses.dataclass(frozen=True)
class EventPlace:
    """PLACE of a kprobe_events line, as __trace_kprobe_create() reads it."""

    text: str
    address: int | None = None          # an address form (kstrtoul accepted it)
    module: str | None = None           # MOD of MOD:SYM
    symbol: str | None = None           # SYM without MOD:
    offset: int = 0
    is_return: bool = False             # SYM%return
    error: int | None = None            # a parse error: the errno written back
    reason: str | None = None

    @property
    def kallsyms_name(self) -> str | None:
        """What trace_kprobe hands to kallsyms: `MOD:SYM` or `SYM`."""
        if self.symbol is None:
            return None
        return f"{self.module}:{self.symbol}" if self.module else self.symbol


def parse_event_place(text: str) -> EventPlace:
    """Parse PLACE; a parse error is returned in `error`/`reason`, never raised."""
    address = kstrtoull(text)
    if address is not None:
        return EventPlace(text, address=address)
    if "/" in text and ":" in text:
        # -ECANCELED ("not mine"), which create_or_delete_trace_kprobe() turns into -EINVAL
        return EventPlace(text, error=errno.EINVAL,
                          reason="a uprobe place (PATH:OFFSET), not a kernel one")
    symbol, is_return = text, False
    if "%" in symbol:
        symbol, _, suffix = symbol.partition("%")
        if suffix != "return":
            return EventPlace(text, error=errno.EINVAL,
                              reason=f"bad suffix `%{suffix}` (only %return; BAD_ADDR_SUFFIX)")
        is_return = True
    cut = min((symbol.find(sign) for sign in "+-" if sign in symbol), default=-1)
    offset = 0
    if cut >= 0:
        offset = kstrtol(symbol[cut:])
        symbol = symbol[:cut]
        if offset is None:
            return EventPlace(text, error=errno.EINVAL, reason=f"bad offset in `{text}` "
                              "(kstrtol refuses it; BAD_PROBE_ADDR)")
    if offset < 0 or offset > UINT_MAX:
        return EventPlace(text, error=errno.EINVAL, reason=f"offset {offset} is negative or "
                          "over UINT_MAX (BAD_PROBE_ADDR)")
    module, _, name = symbol.partition(":") if ":" in symbol else (None, "", symbol)
    return EventPlace(text, module=module or None, symbol=name, offset=offset,
                      is_return=is_return)
