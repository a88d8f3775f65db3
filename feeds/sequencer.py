"""Per-symbol ordering of the feed: drop duplicates, repair small reorderings, report lost ids.

Binance gives no replay: after a reconnect, and at the seam of a make-before-break rotation where
two connections deliver the same trades, ids repeat or jump. The sequencer makes the stream of
trades leaving the feeder strictly increasing in trade id per symbol, each id at most once:

* an id at or below the last one released is a duplicate and is dropped (counted);
* the next id is released at once, followed by any held ids it makes consecutive;
* a jump is held for ``reorder_window_ms`` waiting for the missing ids (frames reordered in
  flight arrive in that window); when the window passes, or too many trades are held, the held
  trades are released and the ids still missing become a :class:`~core.schemas.Gap`.

Gaps are in raw trade ids (aggTrade ``f``/``l``), the unit of Binance's klines, with the time
window between the trades on either side. Pure: the caller passes the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from core.schemas import Gap


class TradeLike(Protocol):
    """What sequencing reads of a trade: a :class:`core.schemas.Trade`, or the feeder's fast
    form of one (binance/frames.py), which is encoded only once it leaves the sequencer."""

    @property
    def symbol(self) -> str: ...
    @property
    def trade_id(self) -> int: ...
    @property
    def first_id(self) -> int: ...
    @property
    def last_id(self) -> int: ...
    @property
    def trade_time_ms(self) -> int: ...


class BookLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def update_id(self) -> int: ...


class MarkLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def event_time_ms(self) -> int: ...


class KlineLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def timeframe(self) -> str: ...
    @property
    def open_time_ms(self) -> int: ...
    @property
    def event_time_ms(self) -> int: ...


T = TypeVar("T", bound=TradeLike)


@dataclass(slots=True)
class _SymbolState(Generic[T]):
    last_id: int  # last trade_id released
    last_raw_id: int  # its last raw trade id
    last_time_ms: int
    held: dict[int, T] = field(default_factory=dict)
    held_since_ms: int = 0


@dataclass(slots=True)
class SequencerCounters:
    duplicates: int = 0
    reordered: int = 0  # held trades whose missing predecessors arrived in time
    gaps: int = 0
    missing_ids: int = 0  # raw trade ids reported missing
    outage_gaps: int = 0  # windows where trades may have been lost


class TradeSequencer(Generic[T]):
    """Orders trades per symbol; see the module docstring."""

    def __init__(self, *, reorder_window_ms: int = 500, max_held_per_symbol: int = 1000):
        self.reorder_window_ms = reorder_window_ms
        self.max_held = max_held_per_symbol
        self.counters = SequencerCounters()
        self._state: dict[str, _SymbolState[T]] = {}

    def restore(self, symbol: str, last_id: int, last_raw_id: int, last_time_ms: int) -> None:
        """Continue from what an earlier run wrote, so a jump across a restart is a gap too."""
        self._state[symbol] = _SymbolState(last_id, last_raw_id, last_time_ms)

    def last_ids(self) -> dict[str, int]:
        """Return the last released trade id per symbol."""
        return {symbol: st.last_id for symbol, st in self._state.items()}

    def outage(self, symbol: str, now_ms: int) -> Gap | None:
        """Return an ``outage`` gap for ``symbol``: its trades from the last one released to now
        may have been lost (a connection came back, a stream was silent). None if never seen.

        Id continuity reveals a loss only at the symbol's next trade; this names the window even
        if the symbol never trades again (the loss at the tail of a disconnect).
        """
        st = self._state.get(symbol)
        if st is None:
            return None
        self.counters.outage_gaps += 1
        return Gap(symbol, st.last_raw_id + 1, -1, st.last_time_ms, max(now_ms, st.last_time_ms),
                   "outage", now_ms)  # fmt: skip

    def held_count(self) -> int:
        return sum(len(st.held) for st in self._state.values())

    def push(self, trade: T, now_ms: int, out: list[T], gaps: list[Gap]) -> None:
        """Accept ``trade``: append what may be released to ``out`` and new gaps to ``gaps``."""
        st = self._state.get(trade.symbol)
        if st is None:  # first trade ever seen for this symbol: nothing to compare with
            self._state[trade.symbol] = _SymbolState(
                trade.trade_id, trade.last_id, trade.trade_time_ms
            )
            out.append(trade)
            return
        tid = trade.trade_id
        if tid <= st.last_id or tid in st.held:
            self.counters.duplicates += 1
            return
        if tid == st.last_id + 1:
            self._release(st, trade, out)
            self._drain_consecutive(st, out, reordered=True)
            return
        if not st.held:
            st.held_since_ms = now_ms
        st.held[tid] = trade
        if len(st.held) > self.max_held:
            self._flush(st, trade.symbol, now_ms, out, gaps)

    def expire(self, now_ms: int, out: list[T], gaps: list[Gap]) -> None:
        """Release trades held longer than the reorder window, reporting what never came."""
        for symbol, st in self._state.items():
            if st.held and now_ms - st.held_since_ms >= self.reorder_window_ms:
                self._flush(st, symbol, now_ms, out, gaps)

    def _release(self, st: _SymbolState[T], trade: T, out: list[T]) -> None:
        st.last_id, st.last_raw_id, st.last_time_ms = (
            trade.trade_id,
            trade.last_id,
            trade.trade_time_ms,
        )
        out.append(trade)

    def _drain_consecutive(self, st: _SymbolState[T], out: list[T], *, reordered: bool) -> None:
        while st.held:
            nxt = st.held.pop(st.last_id + 1, None)
            if nxt is None:
                return
            if reordered:
                self.counters.reordered += 1
            self._release(st, nxt, out)

    def _flush(
        self, st: _SymbolState[T], symbol: str, now_ms: int, out: list[T], gaps: list[Gap]
    ) -> None:
        while st.held:
            first = min(st.held)
            trade = st.held.pop(first)
            if trade.first_id > st.last_raw_id + 1:
                gap = Gap(symbol, st.last_raw_id + 1, trade.first_id - 1, st.last_time_ms,
                          trade.trade_time_ms, "id_jump", now_ms)  # fmt: skip
                gaps.append(gap)
                self.counters.gaps += 1
                self.counters.missing_ids += trade.first_id - 1 - st.last_raw_id
            self._release(st, trade, out)
            self._drain_consecutive(st, out, reordered=False)


class LatestFilter:
    """Drop book tickers, mark prices and klines older than, or equal to, the last one passed
    per key.

    Book tickers are ordered by update id ``u``; mark prices by event time; klines by (open time,
    event time) per symbol and interval. During a rotation overlap both connections deliver the
    same events; only the first copy passes.
    """

    def __init__(self) -> None:
        self._book: dict[str, int] = {}
        self._mark: dict[str, int] = {}
        self._kline: dict[tuple[str, str], tuple[int, int]] = {}
        self.dropped = 0

    def book(self, b: BookLike) -> bool:
        if b.update_id <= self._book.get(b.symbol, -1):
            self.dropped += 1
            return False
        self._book[b.symbol] = b.update_id
        return True

    def mark(self, m: MarkLike) -> bool:
        if m.event_time_ms <= self._mark.get(m.symbol, -1):
            self.dropped += 1
            return False
        self._mark[m.symbol] = m.event_time_ms
        return True

    def kline(self, k: KlineLike) -> bool:
        key = (k.symbol, k.timeframe)
        order = (k.open_time_ms, k.event_time_ms)
        last = self._kline.get(key)
        if last is not None and order <= last:
            self.dropped += 1
            return False
        self._kline[key] = order
        return True
