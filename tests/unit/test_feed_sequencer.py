"""The sequencer: exactly-once, in-order trades per symbol, and gaps for what never came."""

from __future__ import annotations

import random
from decimal import Decimal

from core.schemas import BookTicker, Gap, Kline, Trade
from feeds.sequencer import LatestFilter, TradeSequencer


def agg(a: int, symbol: str = "BTCUSDT") -> Trade:
    # aggTrade `a` covers raw ids 10a..10a+1; its time is 1000*a.
    return Trade(symbol, a, 10 * a, 10 * a + 1, Decimal(1), Decimal(1), False, 1000 * a,
                 1000 * a, 0)  # fmt: skip


def run(seq: TradeSequencer, ids: list[int], now: int = 0) -> tuple[list[int], list[Gap]]:
    out: list[Trade] = []
    gaps: list[Gap] = []
    for i in ids:
        seq.push(agg(i), now, out, gaps)
    return [t.trade_id for t in out], gaps


def test_in_order_trades_pass_straight_through() -> None:
    assert run(TradeSequencer(), [1, 2, 3]) == ([1, 2, 3], [])


def test_duplicates_from_an_overlapping_connection_are_dropped() -> None:
    seq = TradeSequencer()
    assert run(seq, [1, 2, 3, 2, 3, 4, 4]) == ([1, 2, 3, 4], [])
    assert seq.counters.duplicates == 3


def test_reordered_frames_are_put_back_in_order_without_a_gap() -> None:
    seq = TradeSequencer(reorder_window_ms=500)
    assert run(seq, [1, 3, 4, 2, 5]) == ([1, 2, 3, 4, 5], [])
    assert seq.counters.reordered == 2


def test_a_jump_becomes_a_gap_in_raw_ids_once_the_window_passes() -> None:
    seq = TradeSequencer(reorder_window_ms=500)
    released, gaps = run(seq, [1, 2, 6, 7], now=1_000)
    assert released == [1, 2]  # 6 and 7 wait for 3..5
    out: list[Trade] = []
    seq.expire(1_499, out, gaps)
    assert out == []
    seq.expire(1_500, out, gaps)
    assert [t.trade_id for t in out] == [6, 7]
    # aggTrades 3..5 covered raw ids 30..51: between raw 21 (end of a=2) and 60 (start of a=6).
    assert gaps == [Gap("BTCUSDT", 22, 59, 2000, 6000, "id_jump", 1_500)]
    assert seq.counters.missing_ids == 38
    assert run(seq, [3, 7, 8])[0] == [8]  # the late ones are now duplicates


def test_too_many_held_trades_are_flushed_early() -> None:
    seq = TradeSequencer(reorder_window_ms=10_000, max_held_per_symbol=3)
    released, gaps = run(seq, [1, 5, 6, 7, 8])
    assert released == [1, 5, 6, 7, 8]
    assert len(gaps) == 1


def test_restored_state_detects_a_gap_across_a_restart() -> None:
    seq = TradeSequencer(reorder_window_ms=0)
    seq.restore("BTCUSDT", last_id=2, last_raw_id=21, last_time_ms=2000)
    out: list[Trade] = []
    gaps: list[Gap] = []
    seq.push(agg(2), 0, out, gaps)
    seq.push(agg(4), 0, out, gaps)
    seq.expire(0, out, gaps)
    assert [t.trade_id for t in out] == [4]
    assert [(g.from_trade_id, g.to_trade_id) for g in gaps] == [(22, 39)]


def test_an_outage_names_the_window_after_the_last_trade_even_if_none_follows() -> None:
    seq = TradeSequencer(reorder_window_ms=0)
    assert seq.outage("BTCUSDT", 5000) is None  # never seen: nothing to name
    out: list[Trade] = []
    seq.push(agg(3), 0, out, [])
    gap = seq.outage("BTCUSDT", 9000)
    assert gap is not None
    last = out[-1]
    assert (gap.from_trade_id, gap.to_trade_id, gap.reason) == (last.last_id + 1, -1, "outage")
    assert (gap.start_time_ms, gap.end_time_ms) == (last.trade_time_ms, 9000)
    assert seq.counters.outage_gaps == 1


def test_symbols_are_independent() -> None:
    seq = TradeSequencer()
    out: list[Trade] = []
    gaps: list[Gap] = []
    for t in [agg(1, "A1"), agg(7, "B1"), agg(2, "A1"), agg(8, "B1")]:
        seq.push(t, 0, out, gaps)
    assert [(t.symbol, t.trade_id) for t in out] == [("A1", 1), ("B1", 7), ("A1", 2), ("B1", 8)]


def test_any_shuffle_of_duplicated_ids_yields_each_id_once_in_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        ids = list(range(1, 40))
        noisy = ids + rng.sample(ids, 10)  # duplicates
        # local reordering only: swap neighbours, as frames reordered in flight would be
        for i in range(0, len(noisy) - 1, 3):
            if rng.random() < 0.5:
                noisy[i], noisy[i + 1] = noisy[i + 1], noisy[i]
        seq = TradeSequencer(reorder_window_ms=10_000)
        released, gaps = run(seq, [1, *noisy])
        out: list[Trade] = []
        seq.expire(10**9, out, gaps)
        released += [t.trade_id for t in out]
        assert released == sorted(set(released))  # strictly increasing: once each, in order
        missing = set(ids) - set(released)
        covered = {a for g in gaps for a in range(1, 40)
                   if g.from_trade_id <= 10 * a and 10 * a + 1 <= g.to_trade_id}  # fmt: skip
        assert missing <= covered  # whatever was not released is reported in a gap


def book(u: int) -> BookTicker:
    return BookTicker("BTCUSDT", u, Decimal(1), Decimal(1), Decimal(2), Decimal(1), 0, 0, 0)


def kline(open_ms: int, event_ms: int) -> Kline:
    return Kline("BTCUSDT", "1m", open_ms, open_ms + 59_999, *[Decimal(1)] * 6, 1, Decimal(1),
                 Decimal(1), 1, 1, False, "exchange", event_ms, 0)  # fmt: skip


def test_latest_filter_drops_stale_and_repeated_book_tickers_and_klines() -> None:
    f = LatestFilter()
    assert [f.book(book(u)) for u in (5, 5, 4, 6)] == [True, False, False, True]
    seen = [f.kline(kline(o, e)) for o, e in [(0, 10), (0, 10), (0, 9), (0, 11), (60_000, 1)]]
    assert seen == [True, False, False, True, True]
    assert f.dropped == 4
