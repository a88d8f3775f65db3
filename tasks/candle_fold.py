"""Folding trades into candles, exactly as Binance's klines count them. Pure: no I/O, no clock.

A batch of one symbol's trades (increasing trade id) is first folded into *segments*, one per
bucket of the greatest common length of the configured timeframes (``1m`` for the defaults), so
the per-trade work is done once whatever the number of timeframes; each timeframe's candle is
then merged from the segments it contains. Every segment boundary is a boundary of every
timeframe (``1w`` and ``1M`` start on day boundaries), so a segment never straddles two candles.

On top of the fold, :func:`fold_trades` keeps one symbol's state across batches: the last trade
applied (a repeated or older trade is skipped, so a batch applied twice changes nothing), raw-id
continuity (a jump means lost trades: the candles it touches become ``partial`` and the periods
are returned as *repairs* for the backfill to replace with the exchange's klines), and candles the
exchange already closed (``source == "exchange"``: final, trades no longer change them).

Counting follows the kline fields: ``trades`` is the number of raw trades (an aggTrade covers
``last_id - first_id + 1``), quote volume is the sum of price * quantity, taker-buy volumes
count trades whose buyer is not the maker (``m`` false), and ``first_trade_id`` and
``last_trade_id`` are raw ids.
Decimal arithmetic throughout: the sums are exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
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


def merge(candle: Candle | None, symbol: str, tf: Timeframe, seg: _Segment, source: str) -> Candle:
    """Return ``candle`` extended by ``seg`` (a new ``source`` candle when ``candle`` is None)."""
    if candle is None:
        open_ms = tf.open_time_ms(seg.open_ms)
        return Candle(symbol, tf.name, open_ms, tf.close_time_ms(open_ms), seg.open, seg.high,
                      seg.low, seg.close, seg.volume, seg.quote_volume, seg.trades,
                      seg.taker_buy_volume, seg.taker_buy_quote_volume, seg.first_trade_id,
                      seg.last_trade_id, closed=False, source=source)  # fmt: skip
    # Built field by field rather than with dataclasses.replace: this runs for every candle of
    # every build, and replace() costs twice as much.
    c = candle
    return Candle(c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open,
                  max(c.high, seg.high), min(c.low, seg.low), seg.close, c.volume + seg.volume,
                  c.quote_volume + seg.quote_volume, c.trades + seg.trades,
                  c.taker_buy_volume + seg.taker_buy_volume,
                  c.taker_buy_quote_volume + seg.taker_buy_quote_volume, c.first_trade_id,
                  seg.last_trade_id, c.closed, c.source)  # fmt: skip


@dataclass(slots=True)
class SymbolCandles:
    """What the fold knows of one symbol between batches (stored in ``candle-state``)."""

    symbol: str
    last_trade_id: int = -1  # trade id (aggregate id for aggTrades) of the last trade applied
    last_raw_id: int = -1  # last raw trade id applied: the next trade must start at +1
    last_time_ms: int = -1
    current: dict[str, Candle] = field(default_factory=dict)  # per timeframe: the latest candle


@dataclass(frozen=True, slots=True)
class Repair:
    """Periods of one timeframe (open times, inclusive) whose candles miss trades."""

    timeframe: str
    first_open_ms: int
    last_open_ms: int


@dataclass(slots=True)
class FoldResult:
    changed: dict[tuple[str, int], Candle] = field(default_factory=dict)  # (tf, open) -> candle
    repairs: list[Repair] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    gaps: int = 0


def fold_trades(
    state: SymbolCandles, trades: Iterable[Trade], timeframes: Sequence[Timeframe]
) -> FoldResult:
    """Apply ``trades`` (one symbol, in stream order) to ``state``; return what changed.

    ``changed`` holds every candle to store: the open ones as they are now and the ones these
    trades completed (``closed``). A candle the exchange closed is left alone.
    """
    out = FoldResult()
    run: list[Trade] = []
    gap_from = -1  # time of the last trade before the current run's gap, or -1: no gap
    for t in trades:
        if t.trade_id <= state.last_trade_id:
            out.duplicates += 1
            continue
        if state.last_raw_id < 0 or t.first_id != state.last_raw_id + 1:
            if run:
                _apply_run(state, run, gap_from, timeframes, out)
                run = []
            if state.last_raw_id >= 0:
                out.gaps += 1  # else: the first trade we see of this symbol
            gap_from = t.trade_time_ms if state.last_time_ms < 0 else state.last_time_ms
        run.append(t)
        _advance(state, t)
        out.applied += 1
    if run:
        _apply_run(state, run, gap_from, timeframes, out)
    return out


def _advance(state: SymbolCandles, t: Trade) -> None:
    state.last_trade_id = t.trade_id
    state.last_raw_id = t.last_id
    state.last_time_ms = t.trade_time_ms


def _apply_run(
    state: SymbolCandles,
    run: list[Trade],
    gap_from: int,
    timeframes: Sequence[Timeframe],
    out: FoldResult,
) -> None:
    """Fold a run of contiguous trades; ``gap_from`` >= 0 when trades are missing before it."""
    segments = fold_segments(run, segment_ms(timeframes))
    gap_to = run[0].trade_time_ms
    for tf in timeframes:
        candle = state.current.get(tf.name)
        first_source = "trades"
        if gap_from >= 0:
            # Every period from the last trade seen to this one may miss trades.
            out.repairs.append(Repair(tf.name, tf.open_time_ms(gap_from), tf.open_time_ms(gap_to)))
            first_source = "partial"
            if candle is not None and candle.source == "trades":
                candle = replace(candle, source="partial")
                out.changed[tf.name, candle.open_time_ms] = candle
        for i, seg in enumerate(segments):
            period = tf.open_time_ms(seg.open_ms)
            if candle is not None and period == candle.open_time_ms:
                if candle.source == "exchange":
                    continue  # final: the exchange's own numbers
                candle = merge(candle, state.symbol, tf, seg, "trades")
            else:
                if candle is not None and not candle.closed:
                    out.changed[tf.name, candle.open_time_ms] = replace(candle, closed=True)
                candle = merge(None, state.symbol, tf, seg, first_source if i == 0 else "trades")
            out.changed[tf.name, candle.open_time_ms] = candle
        if candle is not None:
            state.current[tf.name] = candle


def close_due(state: SymbolCandles, before_ms: int) -> list[Candle]:
    """Mark closed every open candle of ``state`` whose period ended before ``before_ms``."""
    done = []
    for name, candle in state.current.items():
        if not candle.closed and candle.close_time_ms < before_ms:
            candle = replace(candle, closed=True)
            state.current[name] = candle
            done.append(candle)
    return done
