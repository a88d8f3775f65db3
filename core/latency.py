"""One stage's latencies over a health-report period: p50, p99 and max for the latency budget.

Each process measures its own stage (docs/architecture.md, "Latency budget") and puts
``[p50, p99, max]`` in its health report, then starts a new period. The percentiles are over the
latest ``size`` samples of the period (bounded memory whatever the rate), nearest rank: the p99
of 100 samples is the 99th smallest, not the largest. The max is over the whole period.
"""

from __future__ import annotations

from collections import deque


class StageLatency:
    """A bounded sample of one stage's latencies (ms) for the current report period."""

    __slots__ = ("most", "samples")

    def __init__(self, size: int = 1024) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.most = 0.0

    def add(self, ms: float) -> None:
        self.samples.append(ms)
        if ms > self.most:
            self.most = ms

    def report(self) -> list[int] | None:
        """Return ``[p50, p99, max]`` of the period (None: no sample) and start the next one."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        n = len(ordered)
        out = [round(ordered[(n + 1) // 2 - 1]), round(ordered[-(-n * 99 // 100) - 1]),
               round(self.most)]  # fmt: skip
        self.samples.clear()
        self.most = 0.0
        return out
