"""One timed command (a Sample) and what the results record of a series of them: times,
packet counts, and where the memory reads went."""
from __future__ import annotations

import bisect
import collections
import dataclasses
import statistics
from typing import Any

from bench.relay import Counters


@dataclasses.dataclass
class Sample:
    seconds: float
    counters: Counters


def exact_link(sample: Sample, delay_ms: float) -> float:
    """The time on a link that adds exactly `delay_ms` per packet: the relay's hold
    overshoot (a sleep wakes late, more so on a loaded machine) taken out."""
    counters = sample.counters
    if not counters.held_packets:
        return sample.seconds
    return sample.seconds - counters.held_s + counters.held_packets * delay_ms / 1000


def times_record(samples: list[Sample]) -> dict[str, Any]:
    """Every time and their median: all a record of gdb straight on the stub holds."""
    return {"seconds": [round(s.seconds, 6) for s in samples],
            "median_s": round(statistics.median(s.seconds for s in samples), 6)}


def relay_record(samples: list[Sample], delay_ms: float,
                 labels: dict[int, str]) -> dict[str, Any]:
    """A command's samples through the relay: times, packets, and the last run's reads."""
    last = samples[-1].counters
    return {
        **times_record(samples),
        "memory_reads": [s.counters.memory_reads for s in samples],
        "packets": [s.counters.packets for s in samples],
        "memory_read_bytes": last.memory_read_bytes,
        "by_type": last.as_dict()["by_type"],
        # the relay's real hold per packet (the delay plus sleep overshoot)
        "mean_hold_ms": last.as_dict()["mean_hold_ms"],
        "exact_link_s": round(statistics.median(exact_link(s, delay_ms) for s in samples), 6),
        "reads": read_log_summary(last, labels),
    }


def read_log(counters: Counters) -> list[str]:
    """The relay's per-read log, "ms-since-start address length"."""
    return [f"{t * 1000:.3f} {address:#x} {length}" for t, address, length in counters.reads]


def _inside_earlier_reads(reads: list[tuple[int, int]]) -> collections.Counter[int]:
    """By read length: how many reads fall wholly inside bytes read before them."""
    starts: list[int] = []      # disjoint, sorted [start, end) ranges read so far
    ends: list[int] = []
    contained: collections.Counter[int] = collections.Counter()
    for address, length in reads:
        end = address + length
        index = bisect.bisect_right(starts, address) - 1
        if index >= 0 and ends[index] >= end:
            contained[length] += 1
            continue
        # merge [address, end) with the ranges it touches
        lo = bisect.bisect_left(ends, address)
        hi = bisect.bisect_right(starts, end)
        if lo < hi:
            address, end = min(address, starts[lo]), max(end, ends[hi - 1])
        starts[lo:hi] = [address]
        ends[lo:hi] = [end]
    return contained


def read_log_summary(counters: Counters, labels: dict[int, str]) -> dict[str, Any]:
    """Where the memory reads of one command went: by length (≈ by struct), and what a
    smarter cache could have saved: reads inside bytes already read, and how many
    aligned blocks the reads touch (the packets a block cache would need)."""
    reads = [(address, length) for _, address, length in counters.reads]
    by_length = collections.Counter(length for _, length in reads)
    repeats = sum(n - 1 for n in collections.Counter(reads).values() if n > 1)
    contained = _inside_earlier_reads(reads)

    def blocks(size: int) -> int:
        return len({block for address, length in reads
                    for block in range(address // size, (address + length - 1) // size + 1)})

    times = [t for t, _, _ in counters.reads]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {
        "by_length": [{"length": length, "reads": count, "inside_earlier": contained[length],
                       "what": labels.get(length, "?")}
                      for length, count in by_length.most_common()],
        "repeated_reads": repeats,
        "inside_earlier_reads": sum(contained.values()),
        "blocks_2k": blocks(2048),
        "pages_4k": blocks(4096),
        "median_gap_ms": round(statistics.median(gaps) * 1000, 3) if gaps else None,
        "first_reads": [f"{address:#x},{length}" for address, length in reads[:12]],
    }
