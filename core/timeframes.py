"""Candle timeframes: parsing names such as ``15m`` and bucketing a time into its candle.

Alignment follows Binance's klines: every interval up to ``1d`` starts at a multiple of its length
since the Unix epoch (UTC), ``1w`` starts on Monday 00:00 UTC, ``1M`` on the first of the month.
Sub-minute intervals (``1s`` .. ``30s``) are ours: Binance does not publish them for USD-M futures,
so they are built from trades only. ``3d`` is left out until its alignment is checked against the
exchange.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
_MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; the first Monday is 4 days later

_UNIT_MS = {"s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS, "M": 0}
# Binance's kline intervals minus 3d (alignment unverified), plus sub-minute divisors of 60 s.
SUPPORTED = (
    "1s", "2s", "3s", "5s", "10s", "15s", "20s", "30s",
    "1m", "3m", "5m", "15m", "30m",
    "1h", "2h", "4h", "6h", "8h", "12h",
    "1d", "1w", "1M",
)  # fmt: skip
_NAME = re.compile(r"^(\d+)([smhdwM])$")


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A candle interval. ``ms`` is its exact length, except for ``1M`` (nominal 30 days)."""

    name: str
    ms: int

    def open_time_ms(self, ts_ms: int) -> int:
        """Return the open time of the candle that contains ``ts_ms``."""
        if self.name == "1M":
            d = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
            return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)
        if self.name == "1w":
            return (ts_ms - _MONDAY_OFFSET_MS) // WEEK_MS * WEEK_MS + _MONDAY_OFFSET_MS
        return ts_ms // self.ms * self.ms

    def next_open_time_ms(self, open_time_ms: int) -> int:
        """Return the open time of the candle after the one opening at ``open_time_ms``."""
        if self.name == "1M":
            d = datetime.fromtimestamp(open_time_ms / 1000, tz=UTC)
            year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
            return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
        return open_time_ms + self.ms

    def close_time_ms(self, open_time_ms: int) -> int:
        """Return the close time as Binance reports it: the last millisecond of the candle."""
        return self.next_open_time_ms(open_time_ms) - 1


def parse_timeframe(name: str) -> Timeframe:
    """Return the Timeframe for ``name``; raise ValueError naming the supported set otherwise."""
    m = _NAME.match(name)
    if m is None or name not in SUPPORTED:
        raise ValueError(f"unsupported timeframe {name!r} (supported: {', '.join(SUPPORTED)})")
    count, unit = int(m.group(1)), m.group(2)
    return Timeframe(name, count * _UNIT_MS[unit] if unit != "M" else 30 * DAY_MS)
