"""Ledger: the ground truth of every trade the simulator emitted, and the klines derived from it.

Klines are derived as Binance derives them: a bar exists only once a trade falls into it (no
empty bars), ``o``/``c`` are the first/last trade price, ``n`` counts raw trades, ``f``/``L`` are
the first/last raw trade id, ``v``/``q`` are base/quote volume and ``V``/``Q`` the part where the
buyer was the taker (``m`` false). All amounts are integers in the instrument's units
(see :mod:`simulator.instruments`); nothing is a float.

Per trade only the current 1-minute bar is updated. Every other interval is a fold of 1-minute
bars (all of them start on minute boundaries), so a 1-minute bar is folded into the open bar of
each larger interval when it closes, and a larger interval's current bar is that fold plus the
open minute. Memory is bounded: the last ``trade_retention`` aggTrades and ``bar_retention``
closed bars per interval are kept per symbol.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import NamedTuple

from core.timeframes import DAY_MS, MINUTE_MS, parse_timeframe

# Every Binance kline interval (reference §1.4), smallest first.
INTERVALS = (
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
_THREE_DAYS_MS = 3 * DAY_MS
_TIMEFRAMES = {name: parse_timeframe(name) for name in INTERVALS if name != "3d"}


def open_time_ms(interval: str, ts_ms: int) -> int:
    """Return the open time of the ``interval`` bar containing ``ts_ms``."""
    if interval == "3d":
        # Unverified assumption: 3d bars are aligned on the Unix epoch like every interval up to
        # 1d (core.timeframes leaves 3d out until this is checked against the exchange).
        return ts_ms - ts_ms % _THREE_DAYS_MS
    return _TIMEFRAMES[interval].open_time_ms(ts_ms)


def close_time_ms(interval: str, open_ms: int) -> int:
    """Return the close time Binance reports for the bar opening at ``open_ms`` (last ms)."""
    if interval == "3d":
        return open_ms + _THREE_DAYS_MS - 1
    return _TIMEFRAMES[interval].close_time_ms(open_ms)


class AggTrade(NamedTuple):
    """One aggregate trade: raw trades ``f..l`` of one taker order at one price."""

    a: int  # aggregate trade id
    p: int  # price, price units
    q: int  # quantity, qty units
    f: int  # first raw trade id
    l: int  # last raw trade id  # noqa: E741  (Binance's field name)
    T: int  # trade time, ms
    m: bool  # is the buyer the maker


class Bar(NamedTuple):
    """One kline in units; ``t`` is the open time."""

    t: int
    o: int
    h: int
    l: int  # noqa: E741
    c: int
    v: int  # base volume, qty units
    q: int  # quote volume, quote units
    n: int  # raw trade count
    V: int  # taker buy base volume
    Q: int  # taker buy quote volume
    f: int  # first raw trade id
    L: int  # last raw trade id


class ClosedBar(NamedTuple):
    interval: str
    bar: Bar


_AGG = struct.Struct("<qqqqqq?")  # a, p, q, f, l, T, m packed: ~80 bytes a trade instead of ~250


def _fold(acc: list[int], b: Bar | list[int]) -> None:
    # acc and b are in Bar field order; b is later in time than acc
    if b[2] > acc[2]:
        acc[2] = b[2]
    if b[3] < acc[3]:
        acc[3] = b[3]
    acc[4] = b[4]
    acc[5] += b[5]
    acc[6] += b[6]
    acc[7] += b[7]
    acc[8] += b[8]
    acc[9] += b[9]
    acc[11] = b[11]


class SymbolLedger:
    """Every aggTrade of one symbol (bounded) and its klines for every interval."""

    def __init__(self, *, trade_retention: int = 5000, bar_retention: int = 1000) -> None:
        self._trades: deque[bytes] = deque(maxlen=trade_retention)
        self._first_kept_id = 0  # aggregate id of self._trades[0]
        self._cur: list[int] | None = None  # the open 1m bar
        self._acc: dict[
            str, list[int]
        ] = {}  # open bar of each larger interval, closed minutes only
        self._closed: dict[str, deque[Bar]] = {iv: deque(maxlen=bar_retention) for iv in INTERVALS}
        self.next_close_ms = 1 << 62  # the earliest time at which an open bar ends
        self.trade_count = 0  # aggTrades recorded, ever
        self.last_agg_id: int | None = None
        self.last_trade_id: int | None = None
        self.last_price: int | None = None

    # --- recording ----------------------------------------------------------------------------

    def record(self, agg: AggTrade) -> list[ClosedBar]:
        """Record one aggTrade; return the bars it closed (earlier bars of this symbol).

        Trades must arrive in time order. Ids are taken as given (the model issues them
        consecutively; a replay keeps the recorded ones).
        """
        closed = self.close_until(agg.T) if self.next_close_ms <= agg.T else []
        if not self._trades:
            self._first_kept_id = agg.a
        elif len(self._trades) == self._trades.maxlen:
            self._first_kept_id += 1
        self._trades.append(_AGG.pack(*agg))
        self.trade_count += 1
        self.last_agg_id, self.last_trade_id, self.last_price = agg.a, agg.l, agg.p
        quote = agg.p * agg.q
        n = agg.l - agg.f + 1
        taker_buy = not agg.m
        cur = self._cur
        if cur is None:
            t = agg.T - agg.T % MINUTE_MS
            vb, qb = (agg.q, quote) if taker_buy else (0, 0)
            self._cur = [t, agg.p, agg.p, agg.p, agg.p, agg.q, quote, n, vb, qb, agg.f, agg.l]
            self.next_close_ms = min(self.next_close_ms, t + MINUTE_MS)
        else:
            if agg.p > cur[2]:
                cur[2] = agg.p
            elif agg.p < cur[3]:
                cur[3] = agg.p
            cur[4] = agg.p
            cur[5] += agg.q
            cur[6] += quote
            cur[7] += n
            if taker_buy:
                cur[8] += agg.q
                cur[9] += quote
            cur[11] = agg.l
        return closed

    def close_until(self, now_ms: int) -> list[ClosedBar]:
        """Close every open bar that ends at or before ``now_ms``; return them, smallest first."""
        closed: list[ClosedBar] = []
        if now_ms < self.next_close_ms:
            return closed
        cur = self._cur
        if cur is not None and cur[0] + MINUTE_MS <= now_ms:
            minute = Bar(*cur)
            closed.append(ClosedBar("1m", minute))
            self._closed["1m"].append(minute)
            for iv in INTERVALS[1:]:
                acc = self._acc.get(iv)
                if acc is None:
                    self._acc[iv] = [open_time_ms(iv, minute.t), *minute[1:]]
                else:
                    _fold(acc, minute)
            self._cur = None
        for iv in INTERVALS[1:]:
            acc = self._acc.get(iv)
            if acc is not None and close_time_ms(iv, acc[0]) < now_ms:
                bar = Bar(*acc)
                closed.append(ClosedBar(iv, bar))
                self._closed[iv].append(bar)
                del self._acc[iv]
        self._update_next_close()
        return closed

    def _update_next_close(self) -> None:
        ends = [close_time_ms(iv, acc[0]) + 1 for iv, acc in self._acc.items()]
        if self._cur is not None:
            ends.append(self._cur[0] + MINUTE_MS)
        self.next_close_ms = min(ends, default=1 << 62)

    # --- reading ------------------------------------------------------------------------------

    def current(self, interval: str) -> Bar | None:
        """Return the open bar of ``interval`` including the open minute, or None."""
        cur = self._cur
        if interval == "1m":
            return Bar(*cur) if cur is not None else None
        acc = self._acc.get(interval)
        if acc is None:
            return Bar(open_time_ms(interval, cur[0]), *cur[1:]) if cur is not None else None
        if cur is None:
            return Bar(*acc)
        merged = list(acc)
        _fold(merged, cur)
        return Bar(*merged)

    def klines(
        self,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Bar]:
        """Return bars as /fapi/v1/klines does: by open time, oldest first, open bar last.

        With ``start_ms`` the first ``limit`` bars opening at or after it; otherwise the last
        ``limit`` bars (opening at or before ``end_ms`` when given).
        """
        bars: list[Bar] = list(self._closed[interval])
        cur = self.current(interval)
        if cur is not None:
            bars.append(cur)
        if start_ms is not None:
            bars = [b for b in bars if b.t >= start_ms]
        if end_ms is not None:
            bars = [b for b in bars if b.t <= end_ms]
        return bars[:limit] if start_ms is not None else bars[-limit:]

    def agg_trades(
        self,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[AggTrade]:
        """Return retained aggTrades as /fapi/v1/aggTrades does (oldest first).

        ``from_id``: from that id on; ``start_ms``/``end_ms``: trade time within (inclusive);
        neither: the most recent ``limit``.
        """
        if from_id is not None:
            skip = max(0, from_id - self._first_kept_id)
            out = [AggTrade(*_AGG.unpack(b)) for b in islice(self._trades, skip, skip + limit)]
            if not out or out[0].a == from_id or skip == 0:
                return out
            # ids were not consecutive (a replayed recording with gaps): scan instead
            return list(islice((t for t in self._iter() if t.a >= from_id), limit))
        if start_ms is None and end_ms is None:
            n = len(self._trades)
            return [AggTrade(*_AGG.unpack(b)) for b in islice(self._trades, max(0, n - limit), n)]
        found: list[AggTrade] = []
        for agg in self._iter():
            if start_ms is not None and start_ms > agg.T:
                continue
            if end_ms is not None and end_ms < agg.T:
                break
            found.append(agg)
            if len(found) >= limit:
                break
        return found

    def _iter(self) -> Iterator[AggTrade]:
        for b in self._trades:
            yield AggTrade(*_AGG.unpack(b))

    def sizes(self) -> dict[str, int]:
        """Return what is held and its bound, for /sim/state."""
        return {
            "aggTrades": len(self._trades),
            "aggTradesBound": self._trades.maxlen or 0,
            "closedBars": sum(len(d) for d in self._closed.values()),
        }
