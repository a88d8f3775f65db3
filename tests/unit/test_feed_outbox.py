"""The outbox holds its bound under a flood and turns shed trades into gaps."""

from __future__ import annotations

from decimal import Decimal

from core.schemas import Gap, Trade
from feeds.outbox import Outbox
from feeds.watchdog import SilenceWatch


def trade(symbol: str, a: int) -> Trade:
    return Trade(symbol, a, 2 * a, 2 * a + 1, Decimal(1), Decimal(1), False, 1000 * a, 0, 0)


def test_a_flood_never_grows_the_outbox_past_its_bound() -> None:
    box = Outbox(max_entries=100)
    for a in range(10_000):
        box.put_trade("t", b"x", trade("A1", a), now_ms=5)
        box.put("b", b"y")
        assert len(box) <= 100
    assert box.counters.accepted == 100
    assert box.counters.shed_trades + box.counters.shed_other == 20_000 - 100


def test_a_flood_of_large_records_is_held_to_the_byte_bound() -> None:
    box = Outbox(max_entries=1_000_000, max_bytes=10_000)
    big = b"k" * 250  # a kline is about twice a trade: entries vary, the bound is in bytes
    for a in range(10_000):
        box.put("k", big)
        box.put_trade("t", b"x" * 120, trade("A1", a), now_ms=5)
        assert box.bytes < 10_000 + 250
    assert box.counters.shed_trades > 0
    assert box.counters.shed_other > 0
    gaps, taken = box.take(1_000_000)
    assert sum(len(p) for _, p, _ in taken) < 10_000 + 250
    assert box.bytes == 0  # taking frees the bytes: the writer drains, the feeder accepts again
    assert box.put("k", big)
    # Every shed trade is in the symbol's one gap: its ids from the first shed to the last.
    [gap] = gaps
    shed = list(range(10_000))[-box.counters.shed_trades :]
    assert (gap.symbol, gap.from_trade_id, gap.to_trade_id) == ("A1", 2 * shed[0], 2 * shed[-1] + 1)


def test_shed_trades_become_one_gap_per_symbol_covering_every_dropped_id() -> None:
    box = Outbox(max_entries=2)
    for a in range(1, 6):
        box.put_trade("t", b"x", trade("A1", a), now_ms=7)
        box.put_trade("t", b"x", trade("B1", a), now_ms=7)
    gaps, entries = box.take(10)
    assert [e[2].trade_id for e in entries if e[2]] == [1, 1]  # A1 #1 and B1 #1 fit
    assert sorted(gaps, key=lambda g: g.symbol) == [
        Gap("A1", 4, 11, 2000, 5000, "shed", 7),  # A1 trades 2..5 = raw ids 4..11
        Gap("B1", 4, 11, 2000, 5000, "shed", 7),
    ]
    assert box.take(10) == ([], [])


def test_gaps_are_merged_per_symbol_so_they_stay_bounded() -> None:
    box = Outbox(max_entries=10)
    box.add_gap(Gap("A1", 10, 20, 100, 200, "id_jump", 1))
    box.add_gap(Gap("A1", 50, 60, 500, 600, "id_jump", 2))
    assert box.pending_gaps == 1
    gaps, _ = box.take(1)
    assert gaps == [Gap("A1", 10, 60, 100, 600, "id_jump", 1)]


def test_entries_leave_oldest_first_in_batches() -> None:
    box = Outbox(max_entries=10)
    for i in range(5):
        box.put(f"s{i}", b"x")
    _, first = box.take(3)
    _, rest = box.take(3)
    assert [e[0] for e in first + rest] == ["s0", "s1", "s2", "s3", "s4"]


def test_silence_watch_learns_each_streams_pace() -> None:
    watch = SilenceWatch(min_silence_ms=1_000, factor=10, min_events=3)
    for t in range(0, 1000, 100):  # a busy stream: every 100 ms
        watch.seen("busy", t)
    for t in (0, 5_000, 10_000):  # a quiet one: every 5 s
        watch.seen("quiet", t)
    watch.seen("new", 0)
    streams = ["busy", "quiet", "new"]
    assert watch.stalled(streams, 1_800) == []  # busy: silent 0.9 s < max(1 s, 10 x 100 ms)
    assert watch.stalled(streams, 2_100) == ["busy"]
    assert watch.stalled(streams, 59_000) == ["busy"]  # quiet: 10 x 5 s = 50 s from 10 s
    assert watch.stalled(streams, 60_001) == ["busy", "quiet"]  # "new" is never judged
    watch.reset(["busy"], 60_001)
    assert watch.stalled(streams, 60_500) == ["quiet"]
