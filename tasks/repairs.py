"""Repairs: windows of a series whose candles the exchange's klines must replace (pure, no I/O).

A repair is a window of one symbol and timeframe, open times inclusive, kept in the shard's
``repairs`` sorted set (``core.keys.Keys.repairs``) as the member ``SYM|tf|first_open|last_open``
scored by the time it is due. This module alone knows that member, and the rules around it:

* **Settle**: a window is due :data:`SETTLE_MS` after its last period ends, so that the
  exchange's kline of that period is closed when it is fetched.
* **Sub-minute timeframes have no kline** (``1s``..``30s`` are built from trades only): no repair
  is ever made for them (:func:`has_kline`).
* **Which windows**: a gap (:func:`gap_windows`), a difference found by reconciliation
  (:func:`containing_windows`), the start-up history (:func:`history_window`) and a signal short
  of candles (:func:`window_before`).
* **Coalescing** (:func:`coalesce`): due windows of one series merge into requests of up to
  :data:`MAX_BARS` bars (weight 2 on ``/fapi/v1/klines``); :func:`plan_sends` keeps to the room
  left in the backfill queue.
* **Classification** (:func:`classify`): what the exchange's closed kline does to a stored candle.

Writers: the candle actor (lost trades, a reconciliation difference), the consumer (gaps, the
start-up history), the signals actor (history too short). Reader: the consumer, which sends due
windows to ``backfill_klines`` (docs/architecture.md, "Candles").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.schemas import Candle, Gap
from core.timeframes import MINUTE_MS, Timeframe

SETTLE_MS = 3_000  # after a period ends, wait this long before fetching its kline
MAX_BARS = 499  # bars per klines request: weight 2 up to 499 (5 from 500)

# The fields on which our candle and the exchange's kline must agree (trade ids: REST has none).
COMPARED = ("open", "high", "low", "close", "volume", "quote_volume", "trades",
            "taker_buy_volume", "taker_buy_quote_volume")  # fmt: skip

Outcome = Literal["filled", "repeated", "partial", "equal", "diff"]


@dataclass(frozen=True, slots=True)
class RepairWindow:
    """Periods of one series (open times, inclusive) to replace with the exchange's klines."""

    symbol: str
    timeframe: str
    first_open_ms: int
    last_open_ms: int

    def member(self) -> str:
        """Return the ``repairs`` member: ``SYM|tf|first_open|last_open``."""
        return f"{self.symbol}|{self.timeframe}|{self.first_open_ms}|{self.last_open_ms}"

    @classmethod
    def parse(cls, member: str | bytes) -> RepairWindow:
        """Return the window of a ``repairs`` member; raise ValueError if it is not one."""
        text = member.decode() if isinstance(member, bytes) else member
        symbol, timeframe, first, last = text.split("|")
        return cls(symbol, timeframe, int(first), int(last))


def has_kline(tf: Timeframe) -> bool:
    """Whether the exchange has klines of ``tf``: sub-minute candles exist only as we build them."""
    return tf.ms >= MINUTE_MS


def due_ms(tf: Timeframe, last_open_ms: int) -> int:
    """Return when a window ending with the period opened at ``last_open_ms`` may be fetched."""
    return tf.close_time_ms(last_open_ms) + SETTLE_MS


def bar_count(tf: Timeframe, first_open_ms: int, last_open_ms: int) -> int:
    """Return how many periods of ``tf`` open from ``first_open_ms`` to ``last_open_ms``."""
    bars, t = 1, first_open_ms
    while (t := tf.next_open_time_ms(t)) <= last_open_ms:
        bars += 1
    return bars


def scheduled(
    windows: Iterable[RepairWindow], timeframes: Mapping[str, Timeframe]
) -> list[tuple[int, str]]:
    """Return (due ms, member) of each window that has klines to fetch (sub-minute ones go)."""
    out = []
    for w in windows:
        tf = timeframes[w.timeframe]
        if has_kline(tf):
            out.append((due_ms(tf, w.last_open_ms), w.member()))
    return out


def gap_windows(gap: Gap, timeframes: Iterable[Timeframe]) -> list[RepairWindow]:
    """Return the window of every timeframe with klines that the gap's trades fall in."""
    return [
        RepairWindow(gap.symbol, tf.name, tf.open_time_ms(gap.start_time_ms),
                     tf.open_time_ms(gap.end_time_ms))
        for tf in timeframes
        if has_kline(tf)
    ]  # fmt: skip


def containing_windows(
    symbol: str, timeframe: str, open_time_ms: int, timeframes: Iterable[Timeframe]
) -> list[RepairWindow]:
    """Return, for every other timeframe, the period containing ``timeframe``'s period that opens
    at ``open_time_ms``: they were built from the same trades as a candle found to differ."""
    return [
        RepairWindow(symbol, tf.name, tf.open_time_ms(open_time_ms), tf.open_time_ms(open_time_ms))
        for tf in timeframes
        if tf.name != timeframe
    ]


def history_span(tf: Timeframe, now_ms: int, count: int) -> tuple[int, int]:
    """Return the open times of the first and last of the ``count`` last closed periods."""
    last_closed = tf.open_time_ms(tf.open_time_ms(now_ms) - 1)
    first = last_closed
    for _ in range(count - 1):
        first = tf.open_time_ms(first - 1)
    return first, last_closed


def history_window(
    symbol: str, tf: Timeframe, span: tuple[int, int], count: int, have: set[int]
) -> RepairWindow | None:
    """Return the window of the start-up history ``span`` (``count`` periods) still to fetch,
    given the open times ``have`` already stored: only what is missing after the newest stored
    candle, or before the oldest; None when nothing is missing."""
    first, last_closed = span
    if len(have) >= count:
        return None
    start = first
    if have:
        start = first if min(have) > first else tf.next_open_time_ms(max(have))
    if start > last_closed:
        return None
    return RepairWindow(symbol, tf.name, start, last_closed)


def window_before(symbol: str, tf: Timeframe, oldest_open_ms: int, count: int) -> RepairWindow:
    """Return the window of the ``count`` periods before the one opening at ``oldest_open_ms``."""
    last = tf.open_time_ms(oldest_open_ms - 1)
    first = tf.open_time_ms(last - (count - 1) * tf.ms)
    return RepairWindow(symbol, tf.name, first, last)


@dataclass
class Request:
    """One klines request: a window of one series and the repair members it settles."""

    symbol: str
    timeframe: str
    first_open_ms: int
    last_open_ms: int
    members: list[str] = field(default_factory=list)


def coalesce(members: Iterable[str], timeframes: Mapping[str, Timeframe]) -> list[Request]:
    """Group repair members into requests; overlapping or adjacent windows of one symbol and
    timeframe merge, up to MAX_BARS bars per request."""
    by_series: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for m in members:
        w = RepairWindow.parse(m)
        by_series[w.symbol, w.timeframe].append((w.first_open_ms, w.last_open_ms, m))
    out: list[Request] = []
    for (sym, name), windows in sorted(by_series.items()):
        tf = timeframes[name]
        cur: Request | None = None
        for first, last, m in sorted(windows):
            if (
                cur is not None
                and first <= tf.next_open_time_ms(cur.last_open_ms)
                and (max(last, cur.last_open_ms) - cur.first_open_ms) // tf.ms < MAX_BARS
            ):
                cur.last_open_ms = max(cur.last_open_ms, last)
                cur.members.append(m)
                continue
            cur = Request(sym, name, first, last, [m])
            out.append(cur)
    return out


@dataclass
class SendPlan:
    """What to do with a batch of due members: send ``requests``, lease ``leased``."""

    requests: list[Request]
    leased: list[str]  # the members sent, and those of timeframes no longer configured
    held: int  # members left due for a later round: no room in the backfill queue


def plan_sends(members: list[str], timeframes: Mapping[str, Timeframe], room: int) -> SendPlan:
    """Coalesce due ``members`` into at most ``room`` requests. A member of a timeframe not
    configured is leased without a request (it waits out its lease, then is due again)."""
    known = [m for m in members if RepairWindow.parse(m).timeframe in timeframes]
    unknown = [m for m in members if RepairWindow.parse(m).timeframe not in timeframes]
    requests = coalesce(known, timeframes)
    held = sum(len(r.members) for r in requests[max(room, 0) :]) if len(requests) > room else 0
    requests = requests[: max(room, 0)] if len(requests) > room else requests
    return SendPlan(requests, unknown + [m for r in requests for m in r.members], held)


def classify(stored: Candle | None, exch: Candle) -> tuple[Outcome, list[str]]:
    """Name what the exchange's closed kline ``exch`` does to the ``stored`` candle, and the
    fields that differ (for ``diff``): ``filled`` (nothing stored), ``repeated`` (already the
    exchange's), ``partial`` (known to miss trades), ``equal`` or ``diff``."""
    if stored is None:
        return "filled", []
    if stored.source == "exchange":
        return "repeated", []
    if stored.source == "partial":
        return "partial", []
    diff = [f for f in COMPARED if getattr(stored, f) != getattr(exch, f)]
    return ("diff", diff) if diff else ("equal", [])
