"""The feeder: every stream of its symbols, over as many connections as the limits need.

Path of an event (all on one asyncio loop, no queue between the socket and the outbox)::

    FeedConnection (parse) -> Feeder.on_event -> TradeSequencer / LatestFilter -> Outbox
        -> StreamWriter (pipelined XADD) -> <ns>:{sN}:trades | klines | book | gaps

Supervision, once a second: a connection with a stream that stopped while the connection stays
open, a connection that delivers nothing at all, and one that nears Binance's 24 h cut-off are
replaced make-before-break (the new one is subscribed and delivering before the old one closes;
the sequencer drops the overlap's duplicates), so a repair loses nothing.
Health goes to ``<ns>:feed:health`` every two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio
import redis.exceptions

from binance.frames import (
    AggTradeEvent,
    BookTickerEvent,
    KlineEvent,
    MarkPriceEvent,
    RawTradeEvent,
    TradeEvent,
)
from binance.market_ws import FeedConnection
from binance.parse import FeedParsed, Ignored
from binance.streams import ConnectionPlan, plan_connections
from core.clock import now_ms
from core.config import Settings
from core.keys import Keys
from core.schemas import Gap
from feeds.outbox import Outbox
from feeds.sequencer import LatestFilter, TradeSequencer
from feeds.watchdog import SilenceWatch
from feeds.writer import StreamWriter, read_last_trades

log = logging.getLogger(__name__)
KLINE_KIND = "kline_1m"
MARK_KIND = "markPrice@1s"  # mark, index, funding: every second (the page counts down funding)
TICK_S = 0.1
SUPERVISE_EVERY_S = 1.0
HEALTH_EVERY_S = 2.0
DRAIN_TIMEOUT_S = 10.0  # within Heroku's 30 s between SIGTERM and SIGKILL
READY_TIMEOUT_S = 30.0  # a replacement connection must deliver within this, or the old one stays
CATCH_UP_S = 5.0  # how long the old connection may take to deliver what was sent to it alone


@dataclass(slots=True)
class FeedCounters:
    trades: int = 0
    klines: int = 0
    book_tickers: int = 0
    mark_prices: int = 0
    ignored: int = 0  # well-formed events of types we do not ingest
    malformed: int = 0
    unknown_fields: int = 0
    foreign_symbols: int = 0  # events for symbols outside this feeder's universe
    stalls: int = 0  # streams (or whole connections) found silent
    reconnects: int = 0  # connections lost and subscribed again
    replacements: int = 0  # connections replaced make-before-break (stall, silence, rotation)
    rotations: int = 0  # of which for age (Binance's 24 h limit)
    catch_up_timeouts: int = 0  # replaced connections closed before delivering all they had


@dataclass(slots=True)
class Slot:
    """One planned connection and the live FeedConnection serving it."""

    plan: ConnectionPlan
    url: str
    conn: FeedConnection
    task: asyncio.Task[None]
    rotate_at_ms: int = 0
    replacing: bool = False
    repaired_at_ms: int = 0  # last replacement for silent streams


class Feeder:
    """Runs the connections, the sequencer, the outbox, the writer and the supervision."""

    def __init__(
        self,
        settings: Settings,
        symbols: list[str],
        client: redis.asyncio.Redis,
        *,
        feeder_id: str,
        market: redis.asyncio.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.feed = settings.feed
        self.symbols = symbols
        self.client = client  # the control Redis: health
        self.market = client if market is None else market  # streams and last trades
        self.feeder_id = feeder_id
        self.stopping = False  # its shutdown (the last writes) has begun: not to be cancelled
        self.keys = Keys.of(settings)
        shard = {s: self.keys.shard_of(s) for s in symbols}
        self.trade_stream = {s: self.keys.trades(shard[s]) for s in symbols}
        self.kline_stream = {s: self.keys.klines(shard[s]) for s in symbols}
        self.book_stream = {s: self.keys.book(shard[s]) for s in symbols}
        self.mark_stream = {s: self.keys.mark(shard[s]) for s in symbols}
        kinds = [self.feed.trade_stream, KLINE_KIND, "bookTicker", MARK_KIND]
        self.plans = plan_connections(symbols, kinds, max_streams=self.feed.max_streams)
        self.sequencer: TradeSequencer[TradeEvent] = TradeSequencer(
            reorder_window_ms=self.feed.reorder_ms
        )
        # Each slot's current connection. During a replacement both connections deliver every
        # event; streams learn their pace from the current one only, not from the duplicates.
        self.current: set[FeedConnection] = set()
        self.latest = LatestFilter()
        self.outbox = Outbox(self.feed.buffer_max, self.feed.buffer_bytes)
        self.writer = StreamWriter(
            self.market, self.outbox, self.keys, maxlen=settings.stream_maxlen
        )
        self.watch = SilenceWatch(min_silence_ms=self.feed.silence_ms)
        self.counters = FeedCounters()
        self.slots: list[Slot] = []
        self._released: list[TradeEvent] = []
        self._gaps: list[Gap] = []
        self._unknown_seen: set[str] = set()
        self._conn_seq = 0
        self._restored: set[str] = set()  # symbols continued from Redis, not yet re-subscribed

    # --- hot path --------------------------------------------------------------------------

    def on_event(self, conn: FeedConnection, parsed: FeedParsed) -> None:
        ev = parsed.event
        kind = type(ev)
        # The frame's receive time: one clock read per frame (binance/market_ws.py).
        now = ev.recv_time_ms if kind is not Ignored else now_ms()  # type: ignore[union-attr]
        if parsed.stream is not None and conn in self.current:
            self.watch.seen(parsed.stream, now)
        if parsed.unknown_fields:
            self._note_unknown(parsed.unknown_fields)
        outbox = self.outbox
        if kind is AggTradeEvent or kind is RawTradeEvent:
            trade: TradeEvent = ev  # type: ignore[assignment]
            self.counters.trades += 1
            if trade.symbol not in self.trade_stream:
                self.counters.foreign_symbols += 1
                return
            self.sequencer.push(trade, now, self._released, self._gaps)
            self._flush_released(now)
        elif kind is BookTickerEvent:
            book: BookTickerEvent = ev  # type: ignore[assignment]
            self.counters.book_tickers += 1
            stream = self.book_stream.get(book.symbol)
            if stream is None:
                self.counters.foreign_symbols += 1
            elif self.latest.book(book):
                if outbox.full:
                    outbox.shed()  # not encoded: shedding is the cheap path
                else:
                    outbox.put(stream, book.wire())
        elif kind is KlineEvent:
            kline: KlineEvent = ev  # type: ignore[assignment]
            self.counters.klines += 1
            stream = self.kline_stream.get(kline.symbol)
            if stream is None:
                self.counters.foreign_symbols += 1
            elif self.latest.kline(kline):
                if outbox.full:
                    outbox.shed()
                else:
                    outbox.put(stream, kline.wire())
        elif kind is MarkPriceEvent:
            mark: MarkPriceEvent = ev  # type: ignore[assignment]
            self.counters.mark_prices += 1
            stream = self.mark_stream.get(mark.symbol)
            if stream is None:
                self.counters.foreign_symbols += 1
            elif self.latest.mark(mark):
                if outbox.full:
                    outbox.shed()
                else:
                    outbox.put(stream, mark.wire())
        elif kind is Ignored:
            self.counters.ignored += 1
        if self.writer.waiting:  # (otherwise it is writing or lingering: it will look again)
            self.writer.wake()

    def on_bad_frame(self, conn: FeedConnection, error: str, frame: str | bytes) -> None:
        self.counters.malformed += 1
        log.error("%s: malformed frame skipped: %s: %.200r", conn.name, error, frame,
                  extra={"conn": conn.name})  # fmt: skip

    def _flush_released(self, now: int) -> None:
        outbox = self.outbox
        if self._released:
            for trade in self._released:
                if outbox.full:
                    outbox.shed_trade(trade, now)  # not encoded: shedding is the cheap path
                else:
                    outbox.put_trade(self.trade_stream[trade.symbol], trade.wire(), trade, now)
            self._released.clear()
        if self._gaps:
            for gap in self._gaps:
                outbox.add_gap(gap)
            self._gaps.clear()

    def on_subscribed(self, conn: FeedConnection) -> None:
        """A connection is subscribed: after a reconnect (or a restart), name what it missed."""
        self.watch.reset(list(conn.streams), now_ms())  # its silence while away was no stall
        if conn.reconnects:
            self.counters.reconnects += 1
            self._outage(self._trade_symbols(conn.streams))
        elif self._restored:  # the first connection of a restarted feeder
            symbols = [s for s in self._trade_symbols(conn.streams) if s in self._restored]
            self._restored.difference_update(symbols)
            self._outage(symbols)

    def _outage(self, symbols: list[str]) -> None:
        """Write an ``outage`` gap for each symbol: its trades since the last one we released may
        be lost, and if it does not trade again no id jump would ever say so."""
        now = now_ms()
        for symbol in symbols:
            gap = self.sequencer.outage(symbol, now)
            if gap is not None:
                self._gaps.append(gap)
        self._flush_released(now)
        self.writer.wake()

    def _trade_symbols(self, streams: list[str]) -> list[str]:
        suffix = "@" + self.feed.trade_stream
        return [s[: -len(suffix)].upper() for s in streams if s.endswith(suffix)]

    def _note_unknown(self, fields: frozenset[str]) -> None:
        self.counters.unknown_fields += 1
        new = fields - self._unknown_seen
        if new and len(self._unknown_seen) < 1000:  # bounded even if a peer sends junk names
            self._unknown_seen |= new
            log.warning("exchange sent fields we do not know (ignored): %s", sorted(new))

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        for symbol, (tid, raw, t) in (await self._last_trades()).items():
            if symbol in self.trade_stream:
                self.sequencer.restore(symbol, tid, raw, t)
                self._restored.add(symbol)
        log.info("feeder %s: %d symbols over %d connections", self.feeder_id, len(self.symbols),
                 len(self.plans))  # fmt: skip
        writer = asyncio.create_task(self.writer.run(), name="writer")
        try:
            for plan in self.plans:
                self.slots.append(self._start_slot(plan))
            ticks = 0
            while True:
                await asyncio.sleep(TICK_S)
                ticks += 1
                self.sequencer.expire(now_ms(), self._released, self._gaps)
                self._flush_released(now_ms())
                self.writer.wake()
                if ticks % round(SUPERVISE_EVERY_S / TICK_S) == 0:
                    self._supervise()
                if ticks % round(HEALTH_EVERY_S / TICK_S) == 0:
                    await self._write_health()
        finally:
            self.stopping = True
            await self._shutdown(writer)

    async def _last_trades(self) -> dict[str, tuple[int, int, int]]:
        """Read where the last run left each symbol, waiting while Redis is away (it may go
        down between the start-up check and here: a restart; chaos saw the feeder exit)."""
        waited = False
        while True:
            try:
                return await read_last_trades(self.market, self.keys, self.symbols)
            except (redis.asyncio.ConnectionError, redis.asyncio.TimeoutError,
                    redis.exceptions.BusyLoadingError) as exc:  # fmt: skip
                if not waited:
                    log.warning("feeder %s: Redis unavailable at start (%s); waiting for it",
                                self.feeder_id, type(exc).__name__)  # fmt: skip
                waited = True
                await asyncio.sleep(1.0)

    async def _shutdown(self, writer: asyncio.Task[None]) -> None:
        """Stop reading, release held trades, write what is buffered (SIGTERM; Heroku: 30 s)."""
        for slot in self.slots:
            await slot.conn.stop()
            slot.task.cancel()
        self.sequencer.expire(2**62, self._released, self._gaps)
        self._flush_released(now_ms())
        self.writer.close()
        try:
            await asyncio.wait_for(writer, DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.error("shutdown: %d entries not written (Redis unavailable)", len(self.outbox))

    def _url(self, plan: ConnectionPlan) -> str:
        market = self.settings.market
        base = market.ws_market if plan.route == "market" else market.ws_public
        return f"{base}/stream"

    def _connection(self, plan: ConnectionPlan) -> tuple[FeedConnection, asyncio.Task[None]]:
        self._conn_seq += 1
        name = f"{self.feeder_id}/{plan.route}-{self._conn_seq}"
        conn = FeedConnection(name, self._url(plan), plan.streams, on_event=self.on_event,
                              on_bad_frame=self.on_bad_frame,
                              on_subscribed=self.on_subscribed)  # fmt: skip
        return conn, asyncio.create_task(conn.run(), name=name)

    def _start_slot(self, plan: ConnectionPlan) -> Slot:
        conn, task = self._connection(plan)
        slot = Slot(plan, self._url(plan), conn, task)
        self.current.add(conn)
        slot.rotate_at_ms = self._next_rotation(now_ms())
        return slot

    def _next_rotation(self, from_ms: int) -> int:
        # Spread rotations (up to 10 % early) so that connections do not all rotate at once.
        age_ms = self.feed.rotate_s * 1000
        return from_ms + age_ms - int(random.uniform(0, age_ms / 10))  # noqa: S311

    # --- supervision -------------------------------------------------------------------------

    def _supervise(self) -> None:
        now = now_ms()
        for slot in self.slots:
            if slot.replacing:
                continue
            conn = slot.conn
            if now >= slot.rotate_at_ms:
                self.counters.rotations += 1
                self._replace(slot, "age")
                continue
            if conn.state != "live":
                continue
            if now - conn.last_frame_ms > self.feed.silence_ms:
                self.counters.stalls += 1
                # No outage gaps here: a silent market looks the same (id jumps still tell).
                self._replace(slot, "connection silent")
                continue
            stalled = self.watch.stalled(list(slot.plan.streams), now)
            if not stalled or now - slot.repaired_at_ms < 4 * self.feed.silence_ms:
                continue
            # Not unsubscribe-subscribe on this connection: a trade falling between the two
            # would be lost, and the stream may be merely quiet. A new connection subscribes
            # afresh while this one keeps delivering until the new one has caught up.
            self.counters.stalls += len(stalled)
            log.warning("%s: silent streams, replacing: %s", conn.name, stalled[:5])
            slot.repaired_at_ms = now
            self._replace(slot, "streams silent")

    def _replace(self, slot: Slot, reason: str) -> None:
        slot.replacing = True
        asyncio.create_task(self._replace_now(slot, reason))  # noqa: RUF006 - one per slot

    async def _replace_now(self, slot: Slot, reason: str) -> None:
        new, task = self._connection(slot.plan)
        log.info("%s: replacing with %s (%s)", slot.conn.name, new.name, reason)
        try:
            await asyncio.wait_for(
                asyncio.gather(new.subscribed.wait(), new.delivering.wait()), READY_TIMEOUT_S
            )
        except TimeoutError:
            log.warning(
                "%s: replacement %s not ready, keeping the old one", slot.conn.name, new.name
            )
            await new.stop()
            task.cancel()
            slot.rotate_at_ms = now_ms() + 60_000
            slot.replacing = False
            return
        old, old_task = slot.conn, slot.task
        if reason != "connection silent":  # a silent one has nothing more to deliver
            await self._catch_up(old, new)
        slot.conn, slot.task = new, task
        self.current.discard(old)
        self.current.add(new)
        slot.rotate_at_ms = self._next_rotation(now_ms())
        self.watch.reset(list(slot.plan.streams), now_ms())
        self.counters.replacements += 1
        await old.stop()
        old_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await old_task
        slot.replacing = False

    async def _catch_up(self, old: FeedConnection, new: FeedConnection) -> None:
        """Wait until ``old`` delivered an event sent after ``new``'s first one.

        Frames sent before the new connection's subscription took effect went to the old one
        only; closing it while they sit unread in its buffers would lose them.
        """
        deadline = asyncio.get_running_loop().time() + CATCH_UP_S
        while old.last_event_ms <= new.first_event_ms and old.state == "live":
            if asyncio.get_running_loop().time() > deadline:
                self.counters.catch_up_timeouts += 1
                log.warning("%s: closed before catching up with %s", old.name, new.name)
                return
            await asyncio.sleep(0.02)

    # --- health ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Return the health snapshot the ops page and metrics read."""
        now = now_ms()
        streams = {}
        for slot in self.slots:
            for s in slot.plan.streams:
                last = self.watch.last_event_ms(s)
                streams[s] = None if last is None else now - last
        return {
            "feeder": self.feeder_id,
            "updated_ms": now,
            "connections": [
                {
                    "name": s.conn.name,
                    "route": s.plan.route,
                    "state": s.conn.state,
                    "streams": len(s.plan.streams),
                    "connected_at_ms": s.conn.connected_at_ms,
                    "last_frame_age_ms": now - s.conn.last_frame_ms
                    if s.conn.last_frame_ms
                    else None,
                    "reconnects": s.conn.reconnects,
                    "control_errors": s.conn.control_errors,
                }
                for s in self.slots
            ],
            "stream_age_ms": streams,
            "last_trade_id": self.sequencer.last_ids(),
            "counters": {
                **vars_of(self.counters),
                **vars_of(self.sequencer.counters),
                **vars_of(self.outbox.counters),
                **vars_of(self.writer.counters),
                "filtered_stale": self.latest.dropped,
            },
            "outbox": {
                "size": len(self.outbox),
                "max": self.outbox.max_entries,
                "bytes": self.outbox.bytes,
                "max_bytes": self.outbox.max_bytes,
                "high_water_bytes": self.outbox.high_water_bytes,
                "high_water": self.outbox.high_water,
                "in_flight": self.writer.in_flight,
                "pending_gaps": self.outbox.pending_gaps,
                "held_for_reorder": self.sequencer.held_count(),
            },
            "redis_up": self.writer.redis_up,
        }

    async def _write_health(self) -> None:
        try:
            await self.client.hset(
                self.keys.feed_health(), self.feeder_id, orjson.dumps(self.health())
            )
        except redis.RedisError as exc:
            log.debug("health not written: %s", exc)  # the writer already reports the outage


def vars_of(obj: Any) -> dict[str, int]:
    return {name: getattr(obj, name) for name in obj.__slots__}
