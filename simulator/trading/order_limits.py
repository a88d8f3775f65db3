"""The per-account ORDERS rate limits (300 per 10 s, 1200 per minute) and their headers.

Fixed windows aligned on the epoch, like the ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` counters.
Every order request that passes authentication counts, accepted or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.trading.errors import ApiError

# (header suffix, window ms, limit, the "%s" Binance prints for the interval)
DEFAULT_LIMITS: tuple[tuple[str, int, int, str], ...] = (
    ("10S", 10_000, 300, "10 SECOND"),
    ("1M", 60_000, 1200, "MINUTE"),
)


@dataclass
class OrderCounter:
    """Order counts of one account in the current fixed windows."""

    limits: tuple[tuple[str, int, int, str], ...] = DEFAULT_LIMITS
    _windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # suffix -> (start, count)

    def _count(self, suffix: str, window_ms: int, now_ms: int) -> tuple[int, int]:
        start = now_ms - now_ms % window_ms
        current = self._windows.get(suffix)
        return (start, current[1]) if current and current[0] == start else (start, 0)

    def hit(self, now_ms: int) -> dict[str, str]:
        """Count one order; return the order-count headers.

        Raises ApiError -1015 (HTTP 429, with Retry-After) when a limit is already used up.
        """
        for suffix, window_ms, limit, label in self.limits:
            start, count = self._count(suffix, window_ms, now_ms)
            if count >= limit:
                retry_secs = max(1, -(-(start + window_ms - now_ms) // 1000))
                raise ApiError(
                    -1015,
                    f"Too many new orders; current limit is {limit} orders per {label}.",
                    status=429,
                    headers={**self.headers(now_ms), "Retry-After": str(retry_secs)},
                )
        for suffix, window_ms, _, _ in self.limits:
            start, count = self._count(suffix, window_ms, now_ms)
            self._windows[suffix] = (start, count + 1)
        return self.headers(now_ms)

    def headers(self, now_ms: int) -> dict[str, str]:
        """Return the current ``X-MBX-ORDER-COUNT-*`` headers."""
        return {
            f"X-MBX-ORDER-COUNT-{suffix}": str(self._count(suffix, window_ms, now_ms)[1])
            for suffix, window_ms, _, _ in self.limits
        }
