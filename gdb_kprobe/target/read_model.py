"""How big target/memory.py's reads are: `set kp-read-block auto|N`.

Over a gdbstub link a memory read costs about

    time = rtt + wire_bytes / throughput,     wire_bytes = 2 * size + PACKET_OVERHEAD

(the reply carries each byte as two hex digits). On fast TCP the round trip dominates
and 2 KiB blocks, which serve the neighbours of a kernel object from the same read, win;
over kgdb on a 115200-baud serial line (~11.5 KB/s) every byte counts and the exact
small reads win. `auto` learns both terms from the reads it makes (`LinkFit`: a weighted
least-squares line through each remote read's size and time) and replays the reads the
commands asked for at this stop and the previous one (`ReadPolicy`) at each candidate
block size, keeping the one with the least expected time. A number forces a block size
(0 or 1: exact reads). Plain Python: unit-tested with fake timings, no gdb.
"""
from __future__ import annotations

import dataclasses

__all__ = ["MAX_BLOCK", "BLOCK_SIZES", "PACKET_OVERHEAD", "wire_bytes", "parse_setting",
           "LinkFit", "ReadPolicy", "policy"]

MAX_BLOCK = 2048            # what QEMU's gdbstub serves in one `m` packet; never crosses a page
BLOCK_SIZES = (0, 64, 128, 256, 512, 1024, 2048)        # 0: exact reads
# `$m<16 hex>,<len>#cs` out, `$<hex>#cs` back, two acks: what a read costs beyond its data
PACKET_OVERHEAD = 32
SIMULATED_NEEDS = 4096       # reads replayed per choice: enough to see the pattern, cheap


def wire_bytes(size: int) -> int:
    """Bytes on the wire for one read of `size` bytes (request, hex reply, acks)."""
    return 2 * size + PACKET_OVERHEAD


def parse_setting(text: str) -> int | None:
    """`auto` → None; `N` → a forced block size (0 for exact reads); ValueError otherwise."""
    text = text.strip().lower()
    if text in ("", "auto"):
        return None
    try:
        size = int(text, 0)
    except ValueError:
        raise ValueError(f"kp-read-block: {text!r} is neither `auto` nor a number") from None
    if size in (0, 1):
        return 0
    if size < 0 or size > 4096 or size & (size - 1):
        raise ValueError(f"kp-read-block: {size} is not 0, 1 (exact reads) or a power of two "
                         "up to 4096 (aligned blocks never cross a page)")
    return size


class LinkFit:
    """time = rtt + per_byte * wire_bytes, fitted to timed reads, the recent ones weighing
    most (each new read multiplies the older weights by DECAY): when the link changes, the
    fit follows within a few dozen reads."""

    DECAY = 0.97
    MIN_SPREAD = 512.0 ** 2      # weighted spread of wire sizes below which the slope is noise
    SURPRISE = 3.0               # a read this many times off the line is noise, or a new link
    NEW_LINK = 3                 # ... when this many come in a row: start the fit afresh

    def __init__(self) -> None:
        self._reset()
        self.samples = 0

    def _reset(self) -> None:
        self.weight = self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.small_weight = 0.0      # weight of reads of at most 64 bytes
        self._surprises: list[tuple[int, float]] = []

    def add(self, size: int, seconds: float) -> None:
        """One timed read. A read far off the fitted line is held back (a host hiccup);
        NEW_LINK of them in a row mean the link changed: the fit restarts from them."""
        self.samples += 1
        estimate = self.estimate()
        if estimate is not None:
            predicted = estimate[0] + estimate[1] * wire_bytes(size)
            if not predicted / self.SURPRISE <= seconds <= predicted * self.SURPRISE:
                self._surprises.append((size, seconds))
                if len(self._surprises) < self.NEW_LINK:
                    return
                held = self._surprises
                self._reset()
                for old_size, old_seconds in held:
                    self._add(old_size, old_seconds)
                return
        self._surprises = []
        self._add(size, seconds)

    def _add(self, size: int, seconds: float) -> None:
        x = float(wire_bytes(size))
        d = self.DECAY
        self.weight = self.weight * d + 1
        self.sx = self.sx * d + x
        self.sy = self.sy * d + seconds
        self.sxx = self.sxx * d + x * x
        self.sxy = self.sxy * d + x * seconds
        self.small_weight = self.small_weight * d + (1 if size <= 64 else 0)

    def spread(self) -> float:
        return self.sxx - self.sx * self.sx / self.weight if self.weight else 0.0

    def estimate(self) -> tuple[float, float] | None:
        """(rtt seconds, seconds per wire byte), or None while the reads seen so far are all
        about one size (rtt and throughput cannot be told apart yet)."""
        spread = self.spread()
        if self.weight < 1.5 or spread < self.MIN_SPREAD:
            return None
        per_byte = max(0.0, (self.sxy - self.sx * self.sy / self.weight) / spread)
        rtt = max(0.0, (self.sy - per_byte * self.sx) / self.weight)
        return rtt, per_byte

    def wants_small_read(self) -> bool:
        """No recent small read to anchor the fit: the next small need should go exact."""
        return self.small_weight < 0.5


@dataclasses.dataclass
class Choice:
    block: int                            # 0: exact reads
    expected_s: dict[int, float]          # per candidate block size, for `show kp-read-block`


class ReadPolicy:
    """The block size for the next reads: forced, or chosen by expected time.

    `need()` records every read a command asks for (address, size); `observe()` every
    remote read's time. `block()` replays the needs of this stop (or, early in a stop, of
    the previous one: a command's pattern repeats) at each candidate size with the fitted
    link and keeps the cheapest; it is recomputed when the stop's log has doubled.
    """

    def __init__(self) -> None:
        self.forced: int | None = None
        self.fit = LinkFit()
        self.current: list[tuple[int, int]] = []
        self.previous: list[tuple[int, int]] = []
        self._choice: Choice | None = None
        self._chosen_at = 0              # len(current) when the choice was made

    def need(self, address: int, size: int) -> None:
        if len(self.current) < 16 * SIMULATED_NEEDS:
            self.current.append((address, size))

    def observe(self, size: int, seconds: float) -> None:
        self.fit.add(size, seconds)

    def new_stop(self) -> None:
        """The target ran: memory is read afresh, the last stop's needs guide the next."""
        if self.current:
            self.previous, self.current = self.current, []
        self._choice = None
        self._chosen_at = 0

    def block(self, size: int = 0) -> int:
        """The block size for a read of `size` bytes now (0: read it exactly)."""
        if self.forced is not None:
            return self.forced
        estimate = self.fit.estimate()
        if estimate is None:
            # learning the link: a small read exact, the rest in full blocks, until the
            # reads span sizes enough to tell the round trip from the bytes
            return 0 if size <= 64 and self.fit.wants_small_read() else MAX_BLOCK
        if self._choice is None or self._stale():
            self._choice = self.choose(estimate)
            self._chosen_at = len(self.current)
        if self._choice.block and size <= 64 and self.fit.wants_small_read():
            return 0             # keep one small read in the fit's window now and then
        return self._choice.block

    def _stale(self) -> bool:
        """This stop's log has doubled since the choice, and says more than the last
        stop's (which the choice was made from until then) and than the replay cap."""
        count = len(self.current)
        return (count >= 2 * max(8, self._chosen_at) and count > len(self.previous)
                and self._chosen_at < SIMULATED_NEEDS)

    def choose(self, estimate: tuple[float, float]) -> Choice:
        needs = self.current if len(self.current) >= len(self.previous) else self.previous
        costs = {block: expected_time(needs[:SIMULATED_NEEDS], block, *estimate)
                 for block in BLOCK_SIZES}
        if not needs:                    # nothing to go by yet: what a fast link wants
            return Choice(MAX_BLOCK, costs)
        # on a tie the fewer bytes (a block that serves nothing more is an exact read)
        best = min(BLOCK_SIZES, key=lambda block: (costs[block], block))
        return Choice(best, costs)

    def describe(self) -> str:
        """One line for `show kp-read-block`: the fitted link and the block in use."""
        estimate = self.fit.estimate()
        if estimate is None:
            link = f"link not measured yet ({self.fit.samples} reads timed)"
        else:
            rtt, per_byte = estimate
            speed = f"{1 / per_byte / 1000:.1f} KB/s on the wire" if per_byte else "bytes ~free"
            link = f"link: round trip {rtt * 1000:.3f} ms, {speed}"
        choice = self._choice or (self.choose(estimate) if estimate else None)
        block = self.forced if self.forced is not None else (choice.block if choice else None)
        using = "exact reads" if block == 0 else \
            f"{block}-byte blocks" if block else "not chosen yet"
        return f"{link}; now {using}"


def expected_time(needs: list[tuple[int, int]], block: int, rtt: float,
                  per_byte: float) -> float:
    """Seconds to serve `needs` (in order, from an empty cache) with reads of `block`
    bytes as target/memory.py makes them (0: each distinct need read exactly)."""
    def cost(size: int) -> float:
        return rtt + per_byte * wire_bytes(size)

    exact: set[tuple[int, int]] = set()
    blocks: set[int] = set()
    total = 0.0
    for address, size in needs:
        first = address // block if block else 0
        last = (address + size - 1) // block if block else 0
        if block and first == last:
            if first not in blocks:
                blocks.add(first)
                total += cost(block)
            continue
        if block and last == first + 1 and size <= block and (first in blocks or
                                                              last in blocks):
            # a straddling read takes the missing neighbour of a cached block
            if not (first in blocks and last in blocks):
                blocks.update((first, last))
                total += cost(block)
            continue
        if (address, size) not in exact:
            exact.add((address, size))
            total += cost(size)
    return total


policy = ReadPolicy()
