"""Candles folded from trades equal the simulator's ground-truth klines, however batches split."""

from __future__ import annotations

import random
from decimal import Decimal

from core.schemas import Candle, Trade
from core.timeframes import parse_timeframe
from simulator.instruments import Instrument, fmt_units, load_instruments
from simulator.ledger import Bar
from simulator.model import MarketEvent, MarketModel, VirtualClock
from tasks.candle_fold import apply_trades, segment_ms

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


def test_every_candle_of_every_timeframe_equals_the_exchanges_kline() -> None:
    instruments, model, events = market(minutes=20)
    rng = random.Random(5)
    for i, inst in enumerate(instruments):
        trades = [to_trade(inst, e) for e in events if e.i == i]
        assert len(trades) > 100
        open_candles: dict[str, Candle] = {}
        done: list[Candle] = []
        pos = 0
        while pos < len(trades):  # batches of random size, as the consumer would hand them out
            n = rng.randint(1, 60)
            open_candles, completed = apply_trades(inst.symbol, open_candles,
                                                   trades[pos : pos + n], TIMEFRAMES)  # fmt: skip
            done += completed
            pos += n
        assert all(c.closed for c in done)
        for tf in TIMEFRAMES:
            if tf.name == "15s":
                continue  # Binance has no 15 s klines to compare with
            mine = [c for c in done if c.timeframe == tf.name] + [open_candles[tf.name]]
            truth: list[Bar] = model.ledgers[i].klines(tf.name, limit=1500)
            assert [as_bar(c, inst) for c in mine] == [tuple(b) for b in truth], tf.name


def test_segments_are_the_gcd_of_the_timeframes() -> None:
    assert segment_ms(TIMEFRAMES) == 15_000
    assert segment_ms([parse_timeframe(n) for n in ("1m", "5m", "1w", "1M")]) == 60_000
    assert segment_ms([parse_timeframe(n) for n in ("20s", "30s")]) == 10_000


def test_a_later_period_closes_the_candle_before_it() -> None:
    tf = [parse_timeframe("1m")]
    t1 = Trade("BTCUSDT", 1, 10, 12, Decimal("100.0"), Decimal("2"), False, 60_500, 0, 0)
    t2 = Trade("BTCUSDT", 2, 13, 13, Decimal("99.5"), Decimal("1"), True, 61_000, 0, 0)
    t3 = Trade("BTCUSDT", 3, 14, 14, Decimal("101"), Decimal("1"), False, 120_000, 0, 0)
    opened, completed = apply_trades("BTCUSDT", {}, [t1, t2], tf)
    assert completed == []
    c = opened["1m"]
    ohlc = (c.open, c.high, c.low, c.close, c.trades)
    assert ohlc == (Decimal(100), Decimal(100), Decimal("99.5"), Decimal("99.5"), 4)
    assert (c.quote_volume, c.taker_buy_volume) == (Decimal("299.5"), Decimal(2))
    opened, completed = apply_trades("BTCUSDT", opened, [t3], tf)
    assert completed == [Candle("BTCUSDT", "1m", 60_000, 119_999, Decimal(100), Decimal(100),
                                Decimal("99.5"), Decimal("99.5"), Decimal(3), Decimal("299.5"),
                                4, Decimal(2), Decimal("200.0"), 10, 13, True)]  # fmt: skip
    assert opened["1m"].open_time_ms == 120_000
