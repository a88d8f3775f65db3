"""Candles folded from trades equal the simulator's ground-truth klines, however batches split."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

from core.schemas import Candle, Trade
from core.timeframes import parse_timeframe
from simulator.instruments import Instrument, fmt_units, load_instruments
from simulator.ledger import Bar
from simulator.model import MarketEvent, MarketModel, VirtualClock
from tasks.candle_fold import Repair, SymbolCandles, close_due, fold_trades, segment_ms

START = 1_700_000_000_000
TIMEFRAMES = [parse_timeframe(n) for n in ("15s", "1m", "5m", "15m", "1h", "1d")]


def market(minutes: int) -> tuple[list[Instrument], MarketModel, list[MarketEvent]]:
    clock = VirtualClock(START)
    instruments = load_instruments(count=4)
    model = MarketModel(instruments, clock, seed=3, rate=40.0)
    events: list[MarketEvent] = []
    for _ in range(minutes * 60):
        clock.advance(1000)
        events += model.step().events
    return instruments, model, events


def to_trade(inst: Instrument, e: MarketEvent) -> Trade:
    a = e.agg
    return Trade(inst.symbol, a.a, a.f, a.l, Decimal(fmt_units(a.p, inst.price_dp)),
                 Decimal(fmt_units(a.q, inst.qty_dp)), a.m, a.T, a.T, a.T)  # fmt: skip


def as_bar(c: Candle, inst: Instrument) -> tuple[object, ...]:
    def units(d: Decimal, dp: int) -> int:
        return int(d.scaleb(dp))

    p, q, qq = inst.price_dp, inst.qty_dp, inst.quote_dp
    return (c.open_time_ms, units(c.open, p), units(c.high, p), units(c.low, p),
            units(c.close, p), units(c.volume, q), units(c.quote_volume, qq), c.trades,
            units(c.taker_buy_volume, q), units(c.taker_buy_quote_volume, qq), c.first_trade_id,
            c.last_trade_id)  # fmt: skip


def fold_in_batches(state: SymbolCandles, trades: list[Trade], rng: random.Random) -> list[Candle]:
    """Fold ``trades`` in random batches (as the actor gets them); return the candles stored."""
    stored: dict[tuple[str, int], Candle] = {}
    pos = 0
    while pos < len(trades):
        n = rng.randint(1, 60)
        stored.update(fold_trades(state, trades[pos : pos + n], TIMEFRAMES).changed)
        pos += n
    return [stored[k] for k in sorted(stored)]


def test_every_candle_of_every_timeframe_equals_the_exchanges_kline() -> None:
    instruments, model, events = market(minutes=20)
    rng = random.Random(5)
    for i, inst in enumerate(instruments):
        trades = [to_trade(inst, e) for e in events if e.i == i]
        assert len(trades) > 100
        # We saw the market from its first trade on: nothing is missing before it.
        state = SymbolCandles(inst.symbol, trades[0].trade_id - 1, trades[0].first_id - 1, START)
        stored = fold_in_batches(state, trades, rng)
        assert all(c.source == "trades" for c in stored)
        for tf in TIMEFRAMES:
            if tf.name == "15s":
                continue  # Binance has no 15 s klines to compare with
            mine = [c for c in stored if c.timeframe == tf.name]
            assert all(c.closed for c in mine[:-1])
            assert not mine[-1].closed
            truth: list[Bar] = model.ledgers[i].klines(tf.name, limit=1500)
            assert [as_bar(c, inst) for c in mine] == [tuple(b) for b in truth], tf.name


def test_a_batch_applied_again_or_partly_again_changes_nothing() -> None:
    instruments, _, events = market(minutes=3)
    trades = [to_trade(instruments[0], e) for e in events if e.i == 0]
    once = SymbolCandles("X", trades[0].trade_id - 1, trades[0].first_id - 1, START)
    fold_trades(once, trades, TIMEFRAMES)
    again = SymbolCandles("X", trades[0].trade_id - 1, trades[0].first_id - 1, START)
    half = len(trades) // 2
    fold_trades(again, trades[:half], TIMEFRAMES)
    result = fold_trades(again, trades[: half + 10] + trades[half - 5 :], TIMEFRAMES)
    assert result.duplicates == half + 15  # the first half, then the 15 repeated at the seam
    assert again == once


def trade(tid: int, raw: int, price: str, time_ms: int) -> Trade:
    return Trade("BTCUSDT", tid, raw, raw, Decimal(price), Decimal(1), False, time_ms, 0, 0)


def test_lost_trades_make_the_candles_they_touch_partial_and_ask_for_repairs() -> None:
    tfs = [parse_timeframe("1m"), parse_timeframe("5m")]
    state = SymbolCandles("BTCUSDT", 0, 10, 60_000)
    fold_trades(state, [trade(1, 11, "100", 61_000)], tfs)
    result = fold_trades(state, [trade(2, 15, "101", 185_000)], tfs)  # raw ids 12..14 lost
    assert result.gaps == 1
    assert result.repairs == [Repair("1m", 60_000, 180_000), Repair("5m", 0, 0)]
    assert result.changed["1m", 60_000].source == "partial"
    assert result.changed["1m", 60_000].closed
    assert result.changed["1m", 180_000].source == "partial"
    assert state.current["5m"].source == "partial"
    # Contiguous again: the next period is complete.
    result = fold_trades(state, [trade(3, 16, "102", 245_000)], tfs)
    assert result.changed["1m", 240_000].source == "trades"


def test_the_first_trade_seen_opens_partial_candles() -> None:
    state = SymbolCandles("BTCUSDT")
    result = fold_trades(state, [trade(7, 70, "100", 90_000)], [parse_timeframe("1m")])
    assert result.gaps == 0
    assert result.repairs == [Repair("1m", 60_000, 60_000)]
    assert state.current["1m"].source == "partial"


def test_a_candle_the_exchange_closed_is_final() -> None:
    tf = [parse_timeframe("1m")]
    state = SymbolCandles("BTCUSDT", 0, 10, 60_000)
    fold_trades(state, [trade(1, 11, "100", 61_000)], tf)
    exchange = replace(state.current["1m"], high=Decimal(105), closed=True, source="exchange")
    state.current["1m"] = exchange
    result = fold_trades(state, [trade(2, 12, "200", 62_000), trade(3, 13, "99", 121_000)], tf)
    assert ("1m", 60_000) not in result.changed  # neither changed nor closed again
    assert state.current["1m"].open_time_ms == 120_000
    assert state.current["1m"].source == "trades"


def test_candles_whose_period_ended_are_closed_without_a_later_trade() -> None:
    state = SymbolCandles("BTCUSDT", 0, 10, 60_000)
    fold_trades(state, [trade(1, 11, "100", 61_000)], [parse_timeframe("1m")])
    assert close_due(state, 119_999) == []
    (done,) = close_due(state, 121_000)
    assert done.closed
    assert state.current["1m"].closed


def test_segments_are_the_gcd_of_the_timeframes() -> None:
    assert segment_ms(TIMEFRAMES) == 15_000
    assert segment_ms([parse_timeframe(n) for n in ("1m", "5m", "1w", "1M")]) == 60_000
    assert segment_ms([parse_timeframe(n) for n in ("20s", "30s")]) == 10_000
