"""Repair windows: their member, when they are due, which ones a gap, a difference or the history
needs, how they coalesce into requests and what the exchange's kline does to a stored candle."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from core.schemas import Candle, Gap
from core.timeframes import parse_timeframe
from tasks.repairs import (
    MAX_BARS,
    SETTLE_MS,
    RepairWindow,
    bar_count,
    classify,
    coalesce,
    containing_windows,
    due_ms,
    gap_windows,
    has_kline,
    history_span,
    history_window,
    plan_sends,
    scheduled,
    window_before,
)

M1, M5, H1, S15 = (parse_timeframe(n) for n in ("1m", "5m", "1h", "15s"))
TFS = {tf.name: tf for tf in (S15, M1, M5, H1)}
T0 = 1_700_000_400_000  # a 5m boundary (and a 1m one)


def test_a_window_round_trips_through_its_member() -> None:
    w = RepairWindow("BTCUSDT", "1m", T0, T0 + 120_000)
    assert w.member() == f"BTCUSDT|1m|{T0}|{T0 + 120_000}"
    assert RepairWindow.parse(w.member()) == w
    assert RepairWindow.parse(w.member().encode()) == w
    with pytest.raises(ValueError, match="values to unpack"):
        RepairWindow.parse("BTCUSDT|1m|5")


def test_a_window_is_due_once_its_last_period_has_settled() -> None:
    assert due_ms(M1, T0) == T0 + 60_000 - 1 + SETTLE_MS
    assert SETTLE_MS == 3_000


def test_sub_minute_timeframes_have_no_kline_and_get_no_repair() -> None:
    assert not has_kline(S15)
    assert has_kline(M1)
    windows = [RepairWindow("BTCUSDT", "15s", T0, T0), RepairWindow("BTCUSDT", "1m", T0, T0)]
    assert scheduled(windows, TFS) == [(due_ms(M1, T0), f"BTCUSDT|1m|{T0}|{T0}")]


def test_a_gap_needs_the_periods_its_trades_fall_in_on_every_timeframe_with_klines() -> None:
    gap = Gap("BTCUSDT", 10, 20, T0 + 30_000, T0 + 70_000, "id_jump", T0 + 80_000)
    assert gap_windows(gap, TFS.values()) == [
        RepairWindow("BTCUSDT", "1m", T0, T0 + 60_000),
        RepairWindow("BTCUSDT", "5m", T0, T0),
        RepairWindow("BTCUSDT", "1h", H1.open_time_ms(T0), H1.open_time_ms(T0)),
    ]


def test_a_difference_repairs_the_periods_of_the_other_timeframes_containing_it() -> None:
    got = containing_windows("BTCUSDT", "1m", T0 + 60_000, [M1, M5, H1])
    assert got == [
        RepairWindow("BTCUSDT", "5m", T0, T0),
        RepairWindow("BTCUSDT", "1h", H1.open_time_ms(T0), H1.open_time_ms(T0)),
    ]


def test_the_start_up_history_fetches_only_what_is_missing() -> None:
    now = T0 + 30_000  # inside the period opened at T0: the last closed one opened a minute before
    span = history_span(M1, now, 5)
    assert span == (T0 - 5 * 60_000, T0 - 60_000)
    first, last = span
    assert history_window("X", M1, span, 5, set()) == RepairWindow("X", "1m", first, last)
    # the newest stored is older than the last closed: fetch after it
    have = {first, first + 60_000}
    assert history_window("X", M1, span, 5, have) == RepairWindow("X", "1m", first + 120_000, last)
    # stored only at the end: fetch the whole span
    assert history_window("X", M1, span, 5, {last}) == RepairWindow("X", "1m", first, last)
    assert history_window("X", M1, span, 5, {first + i * 60_000 for i in range(5)}) is None
    assert history_window("X", M1, span, 5, {first, last}) is None  # nothing after the newest


def test_a_short_signal_window_asks_for_the_periods_before_its_oldest_candle() -> None:
    assert window_before("X", M1, T0, 3) == RepairWindow("X", "1m", T0 - 180_000, T0 - 60_000)


def test_adjacent_and_overlapping_windows_of_one_series_coalesce_up_to_the_bar_bound() -> None:
    members = [
        f"X|1m|{T0}|{T0}",
        f"X|1m|{T0 + 60_000}|{T0 + 120_000}",  # adjacent
        f"X|1m|{T0 + 600_000}|{T0 + 600_000}",  # apart
        f"Y|1m|{T0}|{T0}",
    ]
    got = [(r.symbol, r.first_open_ms, r.last_open_ms, len(r.members))
           for r in coalesce(members, TFS)]  # fmt: skip
    assert got == [("X", T0, T0 + 120_000, 2), ("X", T0 + 600_000, T0 + 600_000, 1),
                   ("Y", T0, T0, 1)]  # fmt: skip
    long = [f"X|1m|{T0 + i * 60_000}|{T0 + i * 60_000}" for i in range(MAX_BARS + 1)]
    requests = coalesce(long, TFS)
    assert [len(r.members) for r in requests] == [MAX_BARS, 1]
    assert bar_count(M1, requests[0].first_open_ms, requests[0].last_open_ms) == MAX_BARS


def _candle(source: str, close: str = "101") -> Candle:
    d = Decimal
    return Candle("BTCUSDT", "1m", T0, T0 + 59_999, d("100"), d("102"), d("99"), d(close),
                  d("1"), d("100"), 3, d("0.5"), d("50"), 1, 3, True, source)  # fmt: skip


def test_classification_names_what_the_exchange_kline_does_to_the_stored_candle() -> None:
    exch = _candle("exchange")
    assert classify(None, exch) == ("filled", [])
    assert classify(exch, exch) == ("repeated", [])
    assert classify(_candle("partial", close="100"), exch) == ("partial", [])
    assert classify(_candle("trades"), exch) == ("equal", [])
    assert classify(replace(_candle("trades", close="100"), trades=2), exch) == (
        "diff", ["close", "trades"])  # fmt: skip


def test_sends_keep_to_the_room_in_the_backfill_queue() -> None:
    members = [f"X|1m|{T0}|{T0}", f"Y|1m|{T0}|{T0}", f"Z|1m|{T0}|{T0}", f"X|3m|{T0}|{T0}"]
    plan = plan_sends(members, TFS, room=2)  # 3m is not configured here
    assert [r.symbol for r in plan.requests] == ["X", "Y"]
    assert plan.held == 1
    assert plan.leased == [f"X|3m|{T0}|{T0}", f"X|1m|{T0}|{T0}", f"Y|1m|{T0}|{T0}"]
    full = plan_sends(members, TFS, room=-5)
    assert (full.requests, full.held, full.leased) == ([], 3, [f"X|3m|{T0}|{T0}"])
    assert plan_sends(members, TFS, room=10).held == 0
