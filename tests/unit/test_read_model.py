"""`set kp-read-block auto`: the link fit and the block-size choice, on fake timings."""
from __future__ import annotations

import pytest

from gdb_kprobe.target import read_model
from gdb_kprobe.target.read_model import LinkFit, ReadPolicy, expected_time, wire_bytes

SERIAL_115200 = (0.0005, 10 / 115200)        # 0.5 ms per packet, 11.5 KB/s
TCP_1MS = (0.001, 1 / 100e6)                 # 1 ms round trip, ~100 MB/s


def timed(link: tuple[float, float], size: int) -> float:
    rtt, per_byte = link
    return rtt + per_byte * wire_bytes(size)


def probe_walk(count: int, stride: int = 512, size: int = 120) -> list[tuple[int, int]]:
    """A walk over `count` kernel objects `stride` bytes apart, one read each."""
    base = 0xff11000004000000
    return [(base + i * stride + 64, size) for i in range(count)]


def test_fit_recovers_rtt_and_throughput():
    fit = LinkFit()
    for size in (8, 2048, 120, 2048, 8, 512, 2048):
        fit.add(size, timed(SERIAL_115200, size))
    rtt, per_byte = fit.estimate()
    assert rtt == pytest.approx(SERIAL_115200[0], rel=1e-6)
    assert per_byte == pytest.approx(SERIAL_115200[1], rel=1e-6)


def test_fit_needs_sizes_apart():
    fit = LinkFit()
    for _ in range(10):
        fit.add(2048, 0.35)          # 0.35 s per block: a slow round trip or a slow wire?
    assert fit.estimate() is None
    assert fit.wants_small_read()


def test_fit_follows_a_link_change():
    fit = LinkFit()
    for size in (8, 2048) * 20:
        fit.add(size, timed(TCP_1MS, size))
    for size in (8, 2048) * 60:
        fit.add(size, timed(SERIAL_115200, size))
    rtt, per_byte = fit.estimate()
    assert per_byte == pytest.approx(SERIAL_115200[1], rel=0.05)


def test_noise_never_makes_negative_terms():
    fit = LinkFit()
    for size, seconds in ((8, 0.0002), (2048, 0.0001), (8, 0.0003), (2048, 0.0001),
                          (8, 0.0002), (2048, 0.0001)):
        fit.add(size, seconds)
    rtt, per_byte = fit.estimate()
    assert rtt >= 0 and per_byte == 0


def trained(link: tuple[float, float], needs: list[tuple[int, int]]) -> ReadPolicy:
    policy = ReadPolicy()
    for size in (8, 2048) * 3:
        policy.observe(size, timed(link, size))
    for need in needs:
        policy.need(*need)
    return policy


def test_serial_link_reads_exactly():
    policy = trained(SERIAL_115200, probe_walk(100))
    assert policy.block(120) == 0


def test_fast_link_reads_blocks():
    policy = trained(TCP_1MS, probe_walk(100))
    assert policy.block(120) == read_model.MAX_BLOCK


def test_scattered_objects_on_a_slow_wire_read_small_blocks_or_exact():
    # objects 4 KiB apart: a block serves one object only, so it must not be big
    policy = trained((0.001, 1 / 92160), probe_walk(100, stride=4096))
    assert policy.block(120) in (0, 128, 256)


def test_previous_stop_guides_the_next():
    policy = trained(SERIAL_115200, probe_walk(200))
    policy.new_stop()
    assert policy.previous and not policy.current
    assert policy.block(120) == 0


def test_learning_phase_explores_both_sizes():
    policy = ReadPolicy()
    for _ in range(3):
        assert policy.block(8) == 0                   # small reads exact ...
        policy.observe(8, timed(SERIAL_115200, 8))
    for _ in range(3):
        assert policy.block(8) == read_model.MAX_BLOCK    # ... then blocks: sizes apart
        policy.observe(2048, timed(SERIAL_115200, 2048))
    assert policy.fit.estimate() is not None


def test_one_slow_first_read_is_outvoted():
    fit = LinkFit()
    fit.add(2048, 0.47)                       # the first read after attaching: gdb's start-up
    for size in (8, 2048, 8, 2048, 8):
        fit.add(size, timed(TCP_1MS, size))
    assert fit.estimate()[1] < 1e-7


def test_expected_time_counts_blocks_and_exact_reads():
    needs = [(0x1000, 8, ()), (0x1010, 8, ()), (0x1000, 8, ()), (0x1400, 8, ())]
    rtt, per_byte = 1.0, 0.0
    assert expected_time(needs, 0, rtt, per_byte) == 3        # three distinct reads
    assert expected_time(needs, 2048, rtt, per_byte) == 1     # one block holds them all
    assert expected_time(needs, 1024, rtt, per_byte) == 2
    # a read straddling two blocks, the first cached: the second block, one read
    assert expected_time([(0x1000, 8, ()), (0x13fc, 8, ())], 1024, rtt, per_byte) == 2


@pytest.mark.parametrize("text, forced", [("auto", None), ("0", 0), ("1", 0), ("256", 256),
                                          ("0x800", 2048), ("4096", 4096)])
def test_setting(text, forced):
    assert read_model.parse_setting(text) == forced


@pytest.mark.parametrize("text", ["fast", "3", "100", "8192", "-2"])
def test_bad_setting_says_what_is_allowed(text):
    with pytest.raises(ValueError, match="kp-read-block"):
        read_model.parse_setting(text)


def test_forced_block_wins():
    policy = trained(SERIAL_115200, probe_walk(100))
    policy.forced = 512
    assert policy.block(8) == 512
    assert "512-byte blocks" in policy.describe()


def test_hiccups_do_not_move_the_fit():
    fit = LinkFit()
    for size in (8, 2048) * 10:
        fit.add(size, timed(TCP_1MS, size))
    for size in (8, 2048, 2048):
        fit.add(size, 0.050)                  # the host stalled for 50 ms, three times
    rtt, per_byte = fit.estimate()
    assert rtt == pytest.approx(TCP_1MS[0], rel=0.01)
    assert per_byte < 1e-7


def test_a_new_link_shows_within_a_window():
    fit = LinkFit()
    for size in (8, 2048) * 10:
        fit.add(size, timed(SERIAL_115200, size))
    for size in (8, 2048) * 8:
        fit.add(size, timed(TCP_1MS, size))
    rtt, per_byte = fit.estimate()
    assert rtt == pytest.approx(TCP_1MS[0], rel=0.01)
    assert per_byte < 1e-7


def test_loopback_noise_keeps_blocks():
    # loopback on a loaded host: small reads ~60 µs, blocks ~150 µs with spikes
    policy = ReadPolicy()
    for i in range(30):
        policy.observe(128, 0.00006 if i % 7 else 0.002)
        policy.observe(2048, 0.00015 if i % 5 else 0.003)
    for need in probe_walk(1000, stride=248, size=128):
        policy.need(*need)
    assert policy.block(128) == read_model.MAX_BLOCK


def test_fast_link_keeps_blocks_whatever_the_noise_says():
    # loopback on a loaded host: the fit says 6 MB/s, no round trip; blocks still win
    policy = trained((0.0, 1 / 6e6), probe_walk(100))
    assert policy.block(120) == read_model.MAX_BLOCK


def test_a_faster_link_under_exact_reads_measures_blocks_again():
    fit = LinkFit()
    for size in (8, 2048) * 5:
        fit.add(size, timed(SERIAL_115200, size))
    for _ in range(LinkFit.WINDOW):                  # exact reads only, now on TCP
        fit.add(8, timed(TCP_1MS, 8))
    assert fit.estimate() is None                    # relearn: blocks get timed again


# struct kprobe on x86-64 (6.1): hlist.next, addr, pre_handler, flags of 128 bytes
KPROBE_ROW = ((0, 8), (40, 8), (64, 8), (120, 4))


def test_cover_reads_fields_apart_when_bytes_cost():
    # 115200 baud, 0.5 ms a round trip: 16 bytes between addr and pre_handler cost about
    # a round trip (32 hex digits); a near tie, so the fewer bytes
    assert read_model.cover(128, KPROBE_ROW, *SERIAL_115200) == \
        ((0, 8), (40, 8), (64, 8), (120, 4))


def test_cover_reads_neighbours_together_when_round_trips_cost_more():
    # 115200 baud with 3 ms a round trip: the 16-byte gap is worth reading
    assert read_model.cover(128, KPROBE_ROW, 0.003, 10 / 115200) == \
        ((0, 8), (40, 32), (120, 4))


def test_cover_reads_once_when_round_trips_cost():
    assert read_model.cover(128, KPROBE_ROW, *TCP_1MS) == ((0, 124),)     # fewer bytes
    assert read_model.cover(128, KPROBE_ROW, 0.005, 10 / 115200) == ((0, 128),)


def test_cover_merges_overlapping_parts():
    assert read_model.cover(128, ((0, 8), (4, 8), (100, 4)), *SERIAL_115200) == \
        ((0, 12), (100, 4))


def row_walk(count: int, stride: int = 512) -> list[tuple[int, int, tuple]]:
    base = 0xff11000004000000
    return [(base + i * stride, 128, KPROBE_ROW) for i in range(count)]


def test_serial_link_reads_the_parts_a_walk_uses():
    policy = trained(SERIAL_115200, [])
    for address, size, parts in row_walk(100):
        policy.need(address, size, parts)
    assert policy.parts(128, KPROBE_ROW) == \
        ((0, 8), (40, 8), (64, 8), (120, 4))


def test_fast_link_reads_objects_whole_through_blocks():
    policy = trained(TCP_1MS, [])
    for address, size, parts in row_walk(100):
        policy.need(address, size, parts)
    assert policy.parts(128, KPROBE_ROW) is None


def test_expected_time_of_parts_counts_their_cover():
    rtt, per_byte = SERIAL_115200
    needs = row_walk(10)
    pieces = read_model.cover(128, KPROBE_ROW, rtt, per_byte)
    want = 10 * sum(rtt + per_byte * wire_bytes(length) for _, length in pieces)
    assert expected_time(needs, 0, rtt, per_byte) == pytest.approx(want)


def test_fast_link_owes_the_fit_no_small_reads():
    # blocks whatever the needs: a small need is served by its block, never read apart
    policy = trained(TCP_1MS, probe_walk(100))
    for _ in range(5 * LinkFit.WINDOW):
        assert policy.block(8) == read_model.MAX_BLOCK
        policy.observe(2048, timed(TCP_1MS, 2048))


def test_serial_link_still_times_small_reads_under_blocks():
    # scattered small objects on a slow wire that still pick blocks: a small read now and
    # then keeps the fit's round trip fresh
    link = (0.010, 1 / 92160)                     # 921600 baud, 10 ms a round trip
    policy = trained(link, probe_walk(500, stride=256, size=120))
    block = policy.block(120)
    assert block
    asked = [policy.block(8) for _ in range(5 * LinkFit.WINDOW)
             if policy.observe(block, timed(link, block)) is None]
    assert 0 in asked


def test_a_faster_link_after_many_exact_reads_measures_blocks_again():
    # the bench's N=100 run at 666d73e: a whole kp-list of exact reads on the serial line,
    # then TCP; the check ran only at the first window after a large read, and auto kept
    # 256-byte blocks on TCP (0.16 s where 2 KiB blocks took 0.02 s)
    fit = LinkFit()
    for size in (8, 2048) * 5:
        fit.add(size, timed(SERIAL_115200, size))
    for _ in range(10 * LinkFit.WINDOW):
        fit.add(8, timed(SERIAL_115200, 8))
    assert fit.estimate() is not None
    for _ in range(LinkFit.WINDOW):
        fit.add(8, timed(TCP_1MS, 8))
    assert fit.estimate() is None


def test_exact_reads_of_mixed_sizes_on_one_link_keep_the_fit():
    fit = LinkFit()
    for size in (8, 2048) * 5:
        fit.add(size, timed(SERIAL_115200, size))
    for index in range(10 * LinkFit.WINDOW):
        size = (4, 8, 32, 128, 248)[index % 5]
        fit.add(size, timed(SERIAL_115200, size))
    rtt, per_byte = fit.estimate()
    assert per_byte == pytest.approx(SERIAL_115200[1], rel=0.05)


def test_forced_exact_reads_read_parts_before_the_link_is_known():
    policy = ReadPolicy()
    policy.forced = 0
    assert policy.parts(128, KPROBE_ROW) == \
        ((0, 8), (40, 8), (64, 8), (120, 4))
    policy.forced = None
    assert policy.parts(128, KPROBE_ROW) is None    # auto: learning


def test_a_link_change_mid_stop_voids_the_choice():
    policy = trained(SERIAL_115200, probe_walk(100))
    assert policy.block(120) == 0                      # exact reads on the serial line
    for _ in range(LinkFit.WINDOW):                    # the same stop, now on TCP
        policy.observe(120, timed(TCP_1MS, 120))
    assert policy.block(120) == read_model.MAX_BLOCK   # learning: blocks
    for _ in range(LinkFit.LEAST):
        policy.observe(2048, timed(TCP_1MS, 2048))
    assert policy.block(120) == read_model.MAX_BLOCK   # chosen afresh, not the serial one
