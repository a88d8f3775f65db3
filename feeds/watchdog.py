"""Silence detection per stream: an open connection that stops delivering a live stream.

Binance can leave a connection open and silent (a stream on the wrong route, a stalled backend),
and nothing on the socket says so. Each stream learns its own pace: an exponentially weighted
mean of the time between its events. Once it has delivered ``min_events`` events, it counts as
stalled when it has been silent for longer than ``factor`` times that mean, and never sooner than
``min_silence_ms`` (quiet symbols trade rarely; silence alone proves nothing). A stream that has
never delivered is not judged here: the connection-level check covers a connection that delivers
nothing at all. Pure: the caller passes the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

_ALPHA = 0.1  # weight of the newest interval in the running mean


@dataclass(slots=True)
class _Pace:
    last_ms: int
    mean_interval_ms: float
    events: int


class SilenceWatch:
    """Tracks the pace of every stream and reports the ones that went silent."""

    def __init__(self, *, min_silence_ms: int, factor: float = 20.0, min_events: int = 5):
        self.min_silence_ms = min_silence_ms
        self.factor = factor
        self.min_events = min_events
        self._pace: dict[str, _Pace] = {}

    def seen(self, stream: str, now_ms: int) -> None:
        """Record an event of ``stream`` (the hot path: one dict lookup and a few flops)."""
        p = self._pace.get(stream)
        if p is None:
            self._pace[stream] = _Pace(now_ms, 0.0, 1)
            return
        interval = now_ms - p.last_ms
        p.mean_interval_ms = (
            interval
            if p.events == 1
            else p.mean_interval_ms + _ALPHA * (interval - p.mean_interval_ms)
        )
        p.last_ms = now_ms
        p.events += 1

    def reset(self, streams: list[str], now_ms: int) -> None:
        """Start judging ``streams`` afresh from ``now_ms`` (after a reconnect or replacement)."""
        for stream in streams:
            p = self._pace.get(stream)
            if p is not None:
                p.last_ms = now_ms

    def threshold_ms(self, stream: str) -> float | None:
        p = self._pace.get(stream)
        if p is None or p.events < self.min_events:
            return None
        return max(float(self.min_silence_ms), self.factor * p.mean_interval_ms)

    def stalled(self, streams: list[str], now_ms: int) -> list[str]:
        """Return those of ``streams`` silent for longer than their threshold."""
        out = []
        for stream in streams:
            limit = self.threshold_ms(stream)
            if limit is not None and now_ms - self._pace[stream].last_ms > limit:
                out.append(stream)
        return out

    def last_event_ms(self, stream: str) -> int | None:
        p = self._pace.get(stream)
        return None if p is None else p.last_ms
