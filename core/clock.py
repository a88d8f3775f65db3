"""The wall clock in the system's unit: int UTC milliseconds since the epoch, as Binance counts."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Return the current UTC time in milliseconds."""
    return time.time_ns() // 1_000_000
