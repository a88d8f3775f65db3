"""Folding trades into candles, exactly as Binance's klines count them. Pure: no I/O, no clock.

A batch of one symbol's trades (increasing trade id) is first folded into *segments*, one per
bucket of the greatest common length of the configured timeframes (``1m`` for the defaults), so
the per-trade work is done once whatever the number of timeframes; each timeframe's candle is
then merged from the segments it contains. Every segment boundary is a boundary of every
timeframe (``1w`` and ``1M`` start on day boundaries), so a segment never straddles two candles.

Counting follows the kline fields: ``trades`` is the number of raw trades (an aggTrade covers
``last_id - first_id + 1``), quote volume is the sum of price * quantity, taker-buy volumes
count trades whose buyer is not the maker (``m`` false), and ``first_trade_id`` and
``last_trade_id`` are raw ids.
Decimal arithmetic throughout: the sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from core.schemas import Candle, Trade
from core.timeframes import DAY_MS, Timeframe

ZERO = Decimal(0)


@dataclass(slots=True)
class _Segment:
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal
    first_trade_id: int
    last_trade_id: int


def segment_ms(timeframes: Sequence[Timeframe]) -> int:
    """Return the segment length: the gcd of the timeframes' lengths (a day for 1w/1M)."""
    lengths = [DAY_MS if tf.name in ("1w", "1M") else tf.ms for tf in timeframes]
    return math.gcd(*lengths)


def fold_segments(trades: Iterable[Trade], seg_ms: int) -> list[_Segment]:
    """Fold trades (one symbol, in trade-id order) into segments, oldest first."""
    out: list[_Segment] = []
    seg: _Segment | None = None
    for t in trades:
        start = t.trade_time_ms - t.trade_time_ms % seg_ms
        quote = t.price * t.quantity
        taker_buy = not t.buyer_is_maker
        if seg is None or start != seg.open_ms:
            seg = _Segment(start, t.price, t.price, t.price, t.price, ZERO, ZERO, 0, ZERO, ZERO,
                           t.first_id, t.last_id)  # fmt: skip
            out.append(seg)
        elif t.price > seg.high:
            seg.high = t.price
        elif t.price < seg.low:
            seg.low = t.price
        seg.close = t.price
        seg.volume += t.quantity
        seg.quote_volume += quote
        seg.trades += t.last_id - t.first_id + 1
        if taker_buy:
            seg.taker_buy_volume += t.quantity
            seg.taker_buy_quote_volume += quote
        seg.last_trade_id = t.last_id
    return out


def merge(candle: Candle | None, symbol: str, tf: Timeframe, seg: _Segment) -> Candle:
    """Return ``candle`` extended by ``seg`` (a new candle when ``candle`` is None)."""
    if candle is None:
        open_ms = tf.open_time_ms(seg.open_ms)
        return Candle(symbol, tf.name, open_ms, tf.close_time_ms(open_ms), seg.open, seg.high,
                      seg.low, seg.close, seg.volume, seg.quote_volume, seg.trades,
                      seg.taker_buy_volume, seg.taker_buy_quote_volume, seg.first_trade_id,
                      seg.last_trade_id, closed=False)  # fmt: skip
    return replace(
        candle,
        high=max(candle.high, seg.high),
        low=min(candle.low, seg.low),
        close=seg.close,
        volume=candle.volume + seg.volume,
        quote_volume=candle.quote_volume + seg.quote_volume,
        trades=candle.trades + seg.trades,
        taker_buy_volume=candle.taker_buy_volume + seg.taker_buy_volume,
        taker_buy_quote_volume=candle.taker_buy_quote_volume + seg.taker_buy_quote_volume,
        last_trade_id=seg.last_trade_id,
    )


def apply_trades(
    symbol: str,
    open_candles: dict[str, Candle],
    trades: Sequence[Trade],
    timeframes: Sequence[Timeframe],
) -> tuple[dict[str, Candle], list[Candle]]:
    """Fold ``trades`` into the open candle of every timeframe.

    Return the open candles afterwards (timeframe name -> candle) and the candles the trades
    completed (a trade in a later period closes the candle before it), marked ``closed``.
    """
    segments = fold_segments(trades, segment_ms(timeframes))
    current = dict(open_candles)
    completed: list[Candle] = []
    for tf in timeframes:
        candle = current.get(tf.name)
        for seg in segments:
            if candle is not None and tf.open_time_ms(seg.open_ms) != candle.open_time_ms:
                completed.append(replace(candle, closed=True))
                candle = None
            candle = merge(candle, symbol, tf, seg)
        if candle is not None:
            current[tf.name] = candle
    return current, completed
