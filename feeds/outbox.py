"""The bounded buffer between the websocket readers and the Redis writer.

When Redis is slow or down the writer stops draining and the outbox fills. It never grows past
``max_entries``: beyond that it sheds, in a defined and counted way, instead of running out of
memory as the prototype did:

* trades are dropped, and per symbol the dropped raw-id range and its time window accumulate
  into one pending :class:`~core.schemas.Gap` (reason ``shed``) for backfill;
* book tickers and klines are dropped and counted: they are snapshots, the next one supersedes
  them, and closed klines are backfilled from REST anyway.

Pending gaps are never shed and leave first. They are merged per symbol, so their number is
bounded by the universe size. Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from core.schemas import Gap, Trade


@dataclass(slots=True)
class OutboxCounters:
    accepted: int = 0
    shed_trades: int = 0
    shed_other: int = 0


class Outbox:
    """Bounded FIFO of encoded stream entries plus never-shed, per-symbol merged gaps."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.counters = OutboxCounters()
        self._entries: deque[tuple[str, bytes, Trade | None]] = deque()
        self._gaps: dict[str, Gap] = {}
        self.high_water = 0  # the most entries ever held: proves the bound under a flood

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def pending_gaps(self) -> int:
        return len(self._gaps)

    def put_trade(self, stream: str, payload: bytes, trade: Trade, now_ms: int) -> bool:
        """Queue a trade, or shed it into its symbol's pending gap; return whether it was queued."""
        if len(self._entries) >= self.max_entries:
            self.counters.shed_trades += 1
            self.add_gap(
                Gap(
                    trade.symbol,
                    trade.first_id,
                    trade.last_id,
                    trade.trade_time_ms,
                    trade.trade_time_ms,
                    "shed",
                    now_ms,
                )
            )
            return False
        self._entries.append((stream, payload, trade))
        self.counters.accepted += 1
        self.high_water = max(self.high_water, len(self._entries))
        return True

    def put(self, stream: str, payload: bytes) -> bool:
        """Queue a book ticker or kline, or drop it when full; return whether it was queued."""
        if len(self._entries) >= self.max_entries:
            self.counters.shed_other += 1
            return False
        self._entries.append((stream, payload, None))
        self.counters.accepted += 1
        self.high_water = max(self.high_water, len(self._entries))
        return True

    def add_gap(self, gap: Gap) -> None:
        """Queue a gap, merging it with the symbol's pending one (a wider window is harmless)."""
        old = self._gaps.get(gap.symbol)
        if old is not None:
            gap = Gap(
                gap.symbol,
                min(old.from_trade_id, gap.from_trade_id),
                max(old.to_trade_id, gap.to_trade_id),
                min(old.start_time_ms, gap.start_time_ms),
                max(old.end_time_ms, gap.end_time_ms),
                old.reason if old.reason == gap.reason else "shed",
                old.detected_at_ms,
            )
        self._gaps[gap.symbol] = gap

    def take(self, max_entries: int) -> tuple[list[Gap], list[tuple[str, bytes, Trade | None]]]:
        """Remove and return every pending gap and up to ``max_entries`` entries, oldest first."""
        gaps = list(self._gaps.values())
        self._gaps.clear()
        n = min(max_entries, len(self._entries))
        return gaps, [self._entries.popleft() for _ in range(n)]
