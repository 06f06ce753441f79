"""How big target/memory.py's reads are: `set kp-read-block auto|N`.

Over a gdbstub link a memory read costs about

    time = rtt + wire_bytes / throughput,     wire_bytes = 2 * size + PACKET_OVERHEAD

(the reply carries each byte as two hex digits). On fast TCP the round trip dominates
and 2 KiB blocks, which serve the neighbours of a kernel object from the same read, win;
over kgdb on a 115200-baud serial line (~11.5 KB/s) every byte counts and the exact
small reads win, of only the fields a walk uses (`cover`: the fields of one object that a
round trip is worth reading apart). `auto` learns both terms from the reads it makes
(`LinkFit`: a line through the median times of recent small and large remote reads) and
replays the reads the commands asked for at this stop and the previous one (`ReadPolicy`)
at each candidate block size, keeping the one with the least expected time. A number
forces a block size (0 or 1: exact reads). Plain Python: unit-tested with fake timings,
no gdb.
"""
from __future__ import annotations

import collections
import dataclasses

__all__ = ["MAX_BLOCK", "BLOCK_SIZES", "PACKET_OVERHEAD", "wire_bytes", "parse_setting",
           "LinkFit", "ReadPolicy", "Parts", "cover", "policy"]

MAX_BLOCK = 2048            # what QEMU's gdbstub serves in one `m` packet; never crosses a page
BLOCK_SIZES = (0, 64, 128, 256, 512, 1024, 2048)        # 0: exact reads
# `$m<16 hex>,<len>#cs` out, `$<hex>#cs` back, two acks: what a read costs beyond its data
PACKET_OVERHEAD = 32
# below this a full block's bytes are not worth saving: TCP, where the fit's per-byte term
# is mostly the host's noise (kgdb at 115200 baud: 0.36 s a block; at 921600: 45 ms)
BYTES_MATTER_S = 0.020
NEAR = 1.15                  # expected times this close count as a tie
SIMULATED_NEEDS = 2048       # reads replayed per choice: enough to see the pattern, cheap
SERIAL_GUESS = (0.0005, 10 / 115200)   # kgdb at 115200 baud: (round trip, s per wire byte)


Parts = tuple[tuple[int, int], ...]          # (offset, size) of fields inside one object
Need = tuple[int, int, Parts]                # a read asked for: address, size, the parts used


def wire_bytes(size: int) -> int:
    """Bytes on the wire for one read of `size` bytes (request, hex reply, acks)."""
    return 2 * size + PACKET_OVERHEAD


def cover(size: int, parts: Parts, rtt: float, per_byte: float) -> Parts:
    """The exact reads that fetch `parts` of a `size`-byte object in the least time: two
    neighbouring parts are read together when that is clearly cheaper (by NEAR) than a
    round trip more, the whole object when that is cheaper than the parts. On a near tie
    the fewer bytes, as `ReadPolicy.choose` does when bytes count: a byte not read is
    saved for sure, a round trip only as far as the fit is right."""
    def cost(length: int) -> float:
        return rtt + per_byte * wire_bytes(length)

    pieces: list[tuple[int, int]] = []
    for offset, length in sorted(parts):
        if pieces:
            start, end = pieces[-1][0], pieces[-1][0] + pieces[-1][1]
            merged = max(end, offset + length) - start
            if offset <= end or cost(end - start) + cost(length) > cost(merged) * NEAR:
                pieces[-1] = (start, merged)
                continue
        pieces.append((offset, length))
    if cost(size) < sum(cost(length) for _, length in pieces):
        return ((0, size),)
    return tuple(pieces)


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
    """time = rtt + per_byte * wire_bytes, through two points: the median time of the
    recent small reads (at most 256 bytes) and of the recent large ones (1 KiB or more).

    Medians, not least squares: on a loaded host a read now and then takes ten times its
    due (the guest's TCG and gdb share the cores), and a squared error lets a few such
    reads tilt the line, then pick exact reads on a link where blocks are 4x faster. The
    windows are short (WINDOW reads of each kind), so a new link shows within a command.
    """

    WINDOW = 15
    SMALL, LARGE = 256, 1024
    LEAST = 3                    # reads of each kind before a fit: the first read after
    #                              attaching also pays gdb's own start-up, a median of 3 not

    def __init__(self) -> None:
        self.small: collections.deque[tuple[int, float]] = collections.deque(maxlen=self.WINDOW)
        self.large: collections.deque[tuple[int, float]] = collections.deque(maxlen=self.WINDOW)
        self.samples = 0
        self._since_small = 0
        self._estimate: tuple[float, float] | None = None
        self._fresh = True           # _estimate is up to date
        self._small_since_large = 0
        self._fit_then: tuple[float, float] | None = None   # the fit when a large read came last
        self._fit_then_due = False       # _fit_then is owed: made at the next small read

    def add(self, size: int, seconds: float) -> None:
        """One timed read (sizes between the two kinds say nothing the ends do not)."""
        self.samples += 1
        self._since_small += 1
        self._fresh = False
        if size <= self.SMALL:
            if self._fit_then_due:
                # the windows are as the last large read left them: its fit, made now, not
                # at each of a walk's thousand block reads (two fits a read were 10 % of
                # kp-list's time over 10,000 probes)
                self._fit_then, self._fit_then_due = self._fit(), False
            self.small.append((wire_bytes(size), seconds))
            self._since_small = 0
            self._small_since_large += 1
            if self._small_since_large % self.WINDOW == 0 and self.large and self._fit_then:
                # a whole window of small reads since the last large one: do they still
                # take what the fit of then says (whatever their sizes)? If not, the link
                # changed under us (exact reads never refresh the large ones, e.g. from a
                # serial line to TCP): drop those, so that the next reads time blocks again
                rtt, per_byte = self._fit_then
                ratio = _median([t / max(rtt + per_byte * x, 1e-5) for x, t in self.small])
                if not 1 / 3 <= ratio <= 3:
                    self.large.clear()
                    self._fit_then = None
        elif size >= self.LARGE:
            self.large.append((wire_bytes(size), seconds))
            self._small_since_large = 0
            self._fit_then, self._fit_then_due = None, True

    def ready(self) -> bool:
        """Enough reads of each kind for a fit (`estimate()` is not None), without fitting."""
        return len(self.small) >= self.LEAST and len(self.large) >= self.LEAST

    def estimate(self) -> tuple[float, float] | None:
        """(rtt seconds, seconds per wire byte), or None until LEAST reads of each kind
        were timed (rtt and throughput cannot be told apart from one size)."""
        if not self._fresh:
            self._estimate = self._fit()
            self._fresh = True
        return self._estimate

    def _fit(self) -> tuple[float, float] | None:
        if len(self.small) < self.LEAST or len(self.large) < self.LEAST:
            return None
        small_x, small_t = _medians(self.small)
        large_x, large_t = _medians(self.large)
        per_byte = max(0.0, (large_t - small_t) / (large_x - small_x))
        # the round trip: what the small reads took beyond their bytes, read by read (a
        # window of several sizes has no one point that is a read's)
        return max(0.0, _median([t - per_byte * x for x, t in self.small])), per_byte

    def wants_small_read(self) -> bool:
        """No small read timed lately: the next small need should go exact."""
        return len(self.small) < self.LEAST or self._since_small > 4 * self.WINDOW


def _medians(samples: collections.deque[tuple[int, float]]) -> tuple[float, float]:
    return _median([x for x, _ in samples]), _median([t for _, t in samples])


def _median(values: list[float]) -> float:
    ordered = sorted(values)             # (statistics.median costs 5x this, per read)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclasses.dataclass
class Choice:
    block: int                            # 0: exact reads
    expected_s: dict[int, float]          # per candidate block size (when replayed)
    # blocks whatever the needs (bytes cost next to nothing): no small read is owed to
    # the fit's window, since a slower wire shows in the block reads' own times
    settled: bool = False


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
        self.current: list[Need] = []
        self.previous: list[Need] = []
        self._choice: Choice | None = None
        self._chosen_at = 0              # len(current) when the choice was made

    def need(self, address: int, size: int, parts: Parts = ()) -> None:
        """A read a command asked for; `parts`: the fields of the object it will use,
        when not all of it."""
        if len(self.current) < 16 * SIMULATED_NEEDS:
            self.current.append((address, size, parts))

    def parts(self, size: int, parts: Parts) -> Parts | None:
        """The exact reads for `parts` of a `size`-byte object (offsets inside it), or None
        to read it whole through the blocks (or while the link is being learned)."""
        if self.block(size):
            return None
        estimate = self.fit.estimate()
        if estimate is None:
            if self.forced is None:
                return None              # learning the link: whole objects meanwhile
            estimate = SERIAL_GUESS      # exact reads forced: the link they are for
        return cover(size, parts, *estimate)

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
        if not self.fit.ready():
            # learning the link: a small read exact, the rest in full blocks, until the
            # reads span sizes enough to tell the round trip from the bytes; a choice made
            # before (the link changed) is void
            self._choice = None
            return 0 if size <= LinkFit.SMALL and self.fit.wants_small_read() else MAX_BLOCK
        if self._choice is None or self._stale():
            # the fit is made only here: a choice holds for the stop (or until _stale)
            estimate = self.fit.estimate()
            assert estimate is not None
            self._choice = self.choose(estimate)
            self._chosen_at = len(self.current)
        if (self._choice.block and not self._choice.settled and size <= LinkFit.SMALL
                and self.fit.wants_small_read()):
            return 0             # keep one small read in the fit's window now and then
        return self._choice.block

    def _stale(self) -> bool:
        """This stop's log has doubled since the choice, and says more than the last
        stop's (which the choice was made from until then) and than the replay cap."""
        count = len(self.current)
        return (count >= 2 * max(8, self._chosen_at) and count > len(self.previous)
                and self._chosen_at < SIMULATED_NEEDS)

    def choose(self, estimate: tuple[float, float]) -> Choice:
        rtt, per_byte = estimate
        if per_byte * wire_bytes(MAX_BLOCK) < BYTES_MATTER_S:
            # a block's bytes cost less than the noise of a loaded host: on TCP the bench
            # measured full blocks 2-5x faster than exact reads the fit preferred. No
            # replay: it cost up to 30 ms a stop in Python, for an answer known already
            return Choice(MAX_BLOCK, {}, settled=True)
        needs = self.current if len(self.current) >= len(self.previous) else self.previous
        if not needs:                    # nothing to go by yet: what a fast link wants
            return Choice(MAX_BLOCK, {})
        costs = {block: expected_time(needs[:SIMULATED_NEEDS], block, *estimate)
                 for block in BLOCK_SIZES}
        least = min(costs.values())
        if rtt >= per_byte * wire_bytes(MAX_BLOCK):
            # the round trip dominates: within NEAR of the least, the largest block (the
            # fit is noisy on a loaded host, and a block costs ~ an exact read here)
            best = max(block for block in BLOCK_SIZES if costs[block] <= least * NEAR)
        else:
            # bytes count: the least, and on a tie the fewer bytes
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


def expected_time(needs: list[Need], block: int, rtt: float, per_byte: float) -> float:
    """Seconds to serve `needs` (in order, from an empty cache) with reads of `block`
    bytes as target/memory.py makes them (0: each distinct need read exactly, of an
    object only the parts used, as `cover` groups them)."""
    exact: set[tuple[int, int]] = set()
    blocks: set[int] = set()
    for address, size, parts in needs:
        if block:
            first = address // block
            last = (address + size - 1) // block
            if first == last:
                blocks.add(first)
                continue
            if last == first + 1 and size <= block and (first in blocks or last in blocks):
                # a straddling read takes the missing neighbour of a cached block
                blocks.update((first, last))
                continue
        elif parts:
            exact.update((address + offset, length)
                         for offset, length in cover(size, parts, rtt, per_byte))
            continue
        exact.add((address, size))
    return (len(blocks) * (rtt + per_byte * wire_bytes(block))
            + sum(rtt + per_byte * wire_bytes(size) for _, size in exact))


policy = ReadPolicy()
