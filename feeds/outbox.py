"""The bounded buffer between the websocket readers and the Redis writer.

When Redis is slow or down, or the feeder is offered more than it can write, the outbox fills.
It never grows past ``max_entries`` entries or ``max_bytes`` bytes of encoded records (entries
vary in size: a kline is twice a trade): beyond either it sheds, in a defined and counted way,
instead of running out of memory as the prototype did:

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
from typing import Any

from core.schemas import Gap
from feeds.sequencer import TradeLike

Entry = tuple[str, bytes, TradeLike | None]  # stream, encoded record, the trade if one


@dataclass(slots=True)
class OutboxCounters:
    accepted: int = 0
    shed_trades: int = 0
    shed_other: int = 0


class Outbox:
    """Bounded FIFO of encoded stream entries plus never-shed, per-symbol merged gaps."""

    def __init__(self, max_entries: int, max_bytes: int = 2**62) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # encoded records held
        self.counters = OutboxCounters()
        self._entries: deque[Entry] = deque()
        # symbol -> [from id, to id, start ms, end ms, reason, detected ms]: merged in place
        self._gaps: dict[str, list[Any]] = {}
        self.high_water = 0  # the most entries ever held: proves the bound under a flood
        self.high_water_bytes = 0  # the most bytes ever held

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def pending_gaps(self) -> int:
        return len(self._gaps)

    @property
    def full(self) -> bool:
        """True when the next entry would be shed: callers skip encoding it (shedding is O(1))."""
        return len(self._entries) >= self.max_entries or self.bytes >= self.max_bytes

    def shed_trade(self, trade: TradeLike, now_ms: int) -> None:
        """Shed a trade into its symbol's pending gap (a few integer comparisons, no allocation
        once the symbol has a pending gap: shedding must cost less than writing)."""
        self.counters.shed_trades += 1
        self._merge(trade.symbol, trade.first_id, trade.last_id, trade.trade_time_ms,
                    trade.trade_time_ms, "shed", now_ms)  # fmt: skip

    def shed(self) -> None:
        """Shed a book ticker, mark price or kline (the next one supersedes it)."""
        self.counters.shed_other += 1

    def put_trade(self, stream: str, payload: bytes, trade: TradeLike, now_ms: int) -> bool:
        """Queue a trade, or shed it into its symbol's pending gap; return whether it was queued."""
        if self.full:
            self.shed_trade(trade, now_ms)
            return False
        self._append((stream, payload, trade), len(payload))
        return True

    def put(self, stream: str, payload: bytes) -> bool:
        """Queue a book ticker or kline, or drop it when full; return whether it was queued."""
        if self.full:
            self.counters.shed_other += 1
            return False
        self._append((stream, payload, None), len(payload))
        return True

    def _append(self, entry: Entry, size: int) -> None:
        entries = self._entries
        entries.append(entry)
        self.bytes += size
        if self.bytes > self.high_water_bytes:
            self.high_water_bytes = self.bytes
        if len(entries) > self.high_water:
            self.high_water = len(entries)
        self.counters.accepted += 1

    def add_gap(self, gap: Gap) -> None:
        """Queue a gap, merging it with the symbol's pending one (a wider window is harmless)."""
        self._merge(gap.symbol, gap.from_trade_id, gap.to_trade_id, gap.start_time_ms,
                    gap.end_time_ms, gap.reason, gap.detected_at_ms)  # fmt: skip

    def _merge(self, symbol: str, first: int, last: int, start_ms: int, end_ms: int,
               reason: str, detected_ms: int) -> None:  # fmt: skip
        old = self._gaps.get(symbol)
        if old is None:
            self._gaps[symbol] = [first, last, start_ms, end_ms, reason, detected_ms]
            return
        if first < old[0]:
            old[0] = first
        if last > old[1]:
            old[1] = last
        if start_ms < old[2]:
            old[2] = start_ms
        if end_ms > old[3]:
            old[3] = end_ms
        if old[4] != reason:
            old[4] = "shed"

    def take(self, max_entries: int) -> tuple[list[Gap], list[Entry]]:
        """Remove and return every pending gap and up to ``max_entries`` entries, oldest first."""
        gaps = [Gap(symbol, *pending) for symbol, pending in self._gaps.items()]
        self._gaps.clear()
        entries = self._entries
        if len(entries) <= max_entries:  # the usual case: the writer keeps up
            taken = list(entries)
            entries.clear()
            self.bytes = 0
            return gaps, taken
        popleft = entries.popleft
        taken = [popleft() for _ in range(max_entries)]
        self.bytes -= sum(len(payload) for _, payload, _ in taken)
        return gaps, taken
