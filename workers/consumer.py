"""The stream consumer: consumer groups in, Dramatiq messages out (Procfile: consumer).

One loop, one Redis connection for its blocking read (BLOCK 1 s < the 10 s socket timeout; on a
Redis Cluster, one read per shard, polled: ``core.redis_clients.read_streams``):

* **Trades and klines** (group ``candles``): a blocking XREADGROUP (COUNT 1: it only learns which
  shards have news) over the streams of the shards it builds (those whose lease it holds,
  ``workers.leases``: consumers on the same shards split them); each shard with news is built at
  once, in this loop (``workers.candles.ShardBuilder``: one script call delivers and reads the
  shard's new entries, one writes the candles and acks them). The entries stay pending until the
  build that applies them acks them in its own write, so the pending list is exactly "delivered, not
  yet in the candles". No message and no other process between a trade and its candle: the consumer
  *is* the candle stage, one thread per process, and scales by more processes. A shard is built
  at once when its lease is taken (entries a previous consumer left pending); a build that fails is
  tried again (200 ms for an entry that failed to decode, 1 s after a Redis error).
* **Claims**: every few seconds, entries pending longer than ``TP_CLAIM_IDLE_MS`` (a consumer
  died between its read and its build, or builds keep failing) are claimed (XAUTOCLAIM) and
  their shard is built again. Consumers that are long idle with nothing pending are removed.
* **Gaps** (group ``backfill``): each Gap record becomes repair windows, one per timeframe, added
  to the shard's ``repairs`` set and acked in one transaction; an ``outage`` gap also marks the
  symbol's trade-built candles in its window ``partial`` in that transaction (no id jump will
  reveal trades lost at the tail of a disconnect). An entry that fails is left
  pending; when claimed again with ``TP_CANDLE_MAX_DELIVERIES`` deliveries it is moved to the
  dead-letter stream with its error.
* **Repairs**: every second, due repairs are coalesced per symbol and timeframe and sent to
  ``backfill_klines``, leased for a minute so that no window is fetched twice at once.
* **History**: at start, windows of ``TP_CANDLE_HISTORY`` closed candles per symbol and timeframe
  that are not yet stored are added to the repairs.

This module keeps the loop and its I/O; what to repair, when, and how to batch it is decided in
``tasks.repairs`` (pure), and the shard of a stream name is read by ``core.keys.Keys.shard_in``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from binance.exchange_info import load_universe
from core.clock import now_ms
from core.config import Settings, load_settings
from core.errors import BuildConflictError, ConfigError, SchemaError
from core.keys import ENTRY_FIELD, GROUP_BACKFILL, GROUP_CANDLES, Keys
from core.latency import StageLatency
from core.logs import setup_logging
from core.redis_clients import (
    MAX_BLOCK_MS,
    group_lag,
    market_client,
    read_streams,
    sync_client,
    wait_for_market_redis,
    wait_for_redis,
)
from core.schemas import Gap, HealthReport, decode
from tasks import repairs
from tasks.actors import BACKFILL_KLINES, EVALUATE_SIGNALS
from tasks.broker import BACKFILL_QUEUE_MAX, queue_depth, send_bounded, trigger_bound
from tasks.candle_store import MARK_PARTIAL, mark_partial
from workers import leases
from workers.candles import ShardBuilder

log = logging.getLogger("workers.consumer")

BLOCK_MS = min(1_000, MAX_BLOCK_MS)
FLAG_MS = 2_000  # a queued evaluate_signals older than this is sent again
RETRY_S = 1.0  # a build that raised is tried again after this
DECODE_RETRY_S = 0.2  # a build that stopped before an entry that failed to decode, after this
REPAIR_LEASE_MS = 60_000  # a repair sent to backfill is not sent again before this
REPAIR_BATCH = 200  # due repairs read per shard per tick
STALE_CONSUMER_MS = 3_600_000
HEALTH_EVERY_S = 2.0


@dataclass
class ConsumerCounters:
    reads: int = 0
    entries: int = 0  # trades and klines entries the builds applied
    builds: int = 0
    build_errors: int = 0  # builds whose cursor kept moving (another consumer kept winning)
    claimed: int = 0
    gaps: int = 0
    dead: int = 0
    repairs_sent: int = 0
    signals_sent: int = 0
    # sends refused because the queue already held its bound (tasks/broker.py send_bounded)
    signals_refused: int = 0
    repairs_held: int = 0  # due repairs left for later: the backfill queue was full
    history_windows: int = 0
    errors: int = 0
    lag: dict[str, int | None] = field(default_factory=dict)


class Consumer:
    """The loop described in the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        name: str,
        shards: list[int],
        control: redis.Redis | None = None,
    ) -> None:
        self.client = client  # market data: streams, repairs, candles
        self.control = client if control is None else control  # health
        self.settings = settings
        self.keys = Keys.of(settings)
        self.name = name
        self.shards = shards
        self.tf = {tf.name: tf for tf in settings.timeframes}
        self.counters = ConsumerCounters()
        self.mark_script = client.register_script(MARK_PARTIAL)
        self.stop = threading.Event()
        self._next_claim = 0.0
        self._next_repairs = 0.0
        self._next_health = 0.0
        # Per read that got news: how old its oldest entry was (this host's clock minus the
        # entry id's, Redis's): the stream's share of the latency budget, reported as
        # ``read_age_ms`` [p50, p99, max] per health period (docs/architecture.md).
        self.read_age = StageLatency()
        # Per build that applied entries: its run time, and the age of its oldest entry when it
        # was written (the candle stage as a whole: stream, read, build, write).
        self.build_ms = StageLatency()
        self.stage_ms = StageLatency()
        self.builders = {s: ShardBuilder(client, self.keys, settings, s, consumer=name)
                         for s in shards}  # fmt: skip
        # The shards this consumer builds (workers/leases.py), and when each is due a build
        # besides its news (monotonic time): at once when its lease is taken.
        self.owned: set[int] = set()
        self.build_due: dict[int, float] = {}
        self.lease_script = client.register_script(leases.LEASE)
        self._next_leases = 0.0

    def ensure_groups(self) -> None:
        """Create the consumer groups (and streams) if missing; BUSYGROUP means they exist."""
        k = self.keys
        for s in self.shards:
            for stream, group in ((k.trades(s), GROUP_CANDLES), (k.klines(s), GROUP_CANDLES),
                                  (k.gaps(s), GROUP_BACKFILL)):  # fmt: skip
                try:
                    self.client.xgroup_create(stream, group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    def run(self) -> None:
        self.ensure_groups()
        log.info("consumer %s on shards %s", self.name, self.shards)
        while not self.stop.is_set():
            try:
                self.step()
            except BuildConflictError as exc:  # another consumer kept winning: try again soon
                self.counters.build_errors += 1
                log.warning("%s; building it again in 1 s", exc)
            except redis.RedisError as exc:
                self.counters.errors += 1
                log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                self.stop.wait(1.0)
                with contextlib.suppress(redis.RedisError):
                    self.ensure_groups()  # a Redis that restarted empty has lost them
            except Exception:
                self.counters.errors += 1
                log.exception("consumer step failed; going on in 1 s")
                self.stop.wait(1.0)
        with contextlib.suppress(redis.RedisError):  # a peer takes the shards without waiting
            self.hold_leases(release_all=True)

    def step(self) -> None:
        """One turn: read news and build, then the periodic chores when due."""
        if time.monotonic() >= self._next_leases:
            self._next_leases = time.monotonic() + leases.RENEW_S
            self.hold_leases()
        self._read_trades_and_klines()
        self._read_gaps()
        t = time.monotonic()
        if t >= self._next_claim:
            self._next_claim = t + max(self.settings.candles.claim_idle_ms / 3000, 0.5)
            self._claim()
        if t >= self._next_repairs:
            self._next_repairs = t + 1.0
            self._send_repairs()
            self._sweep_signals()
        if t >= self._next_health:
            self._next_health = t + HEALTH_EVERY_S
            self._write_health()

    # --- trades and klines -----------------------------------------------------------------

    # --- leases ----------------------------------------------------------------------------

    def hold_leases(self, *, release_all: bool = False) -> None:
        """Renew the shards' leases this consumer holds up to its fair share, let go of the
        rest, and take free ones while under it (workers/leases.py)."""
        raw = self.control.hgetall(self.keys.consumer_health())
        reports = {_s(n): orjson.loads(v) for n, v in raw.items()}
        share = (
            0
            if release_all
            else leases.fair_share(
                len(self.shards), leases.peers(reports, self.shards, self.name, now_ms())
            )
        )
        held: set[int] = set()
        for s in sorted(self.owned) + [s for s in self.shards if s not in self.owned]:
            if s not in self.owned and len(held) >= share:
                break
            want = "1" if len(held) < share else "0"
            if self.lease_script(keys=[self.keys.builder_lease(s)],
                                 args=[self.name, leases.LEASE_MS, want]):  # fmt: skip
                held.add(s)
        for s in held - self.owned:  # taken: build at once (what its last owner left pending)
            self.build_due[s] = 0.0
        for s in self.owned - held:  # let go (or lost): its fold state is another's now
            self.build_due.pop(s, None)
            self.builders[s].states.clear()
            self.builders[s].cursor = None
        if held != self.owned:
            log.info("consumer %s builds shards %s", self.name, sorted(held))
        self.owned = held

    # --- trades and klines -----------------------------------------------------------------

    def _read_trades_and_klines(self) -> None:
        """Wait for news (or the next build due), then build each shard that has some."""
        k = self.keys
        if not self.owned:  # a peer builds them all: only the chores below
            self.stop.wait(max(0.0, min(BLOCK_MS / 1000, self._next_leases - time.monotonic())))
            return
        streams: Any = {k.trades(s): ">" for s in sorted(self.owned)} | {
            k.klines(s): ">" for s in sorted(self.owned)
        }
        until = min([self._next_leases, *self.build_due.values()])  # the next lease or build due
        wait_ms = min(BLOCK_MS, int((until - time.monotonic()) * 1000))
        block = wait_ms if wait_ms > 0 else None  # None: do not block
        reply = read_streams(self.client, streams, count=1, block=block,
                             group=(GROUP_CANDLES, self.name))  # fmt: skip
        self.counters.reads += 1
        shards = set()
        oldest = 0
        for stream, entries in reply or ():
            if entries:
                shards.add(self.keys.shard_in(stream))
                first_ms = int(entries[0][0].split(b"-", 1)[0])
                oldest = first_ms if not oldest else min(oldest, first_ms)
        if oldest:
            self.read_age.add(max(0, now_ms() - oldest))
        now = time.monotonic()
        shards.update(s for s, due in self.build_due.items() if due <= now)
        shards &= self.owned
        self.build_due.update(dict.fromkeys(shards, now))  # still due if a build below raises
        for s in sorted(shards):
            self.build(s)

    def build(self, shard: int) -> None:
        """Build ``shard`` now; on failure, leave it due again (RETRY_S) and raise."""
        self.build_due[shard] = time.monotonic() + RETRY_S
        started = time.perf_counter()
        report = self.builders[shard].build()
        self.counters.builds += 1
        if report.retry:
            self.build_due[shard] = time.monotonic() + DECODE_RETRY_S
        elif report.more:
            self.build_due[shard] = 0.0  # the backlog goes on: build again without waiting
        else:
            del self.build_due[shard]
        if report.oldest_ms:
            self.counters.entries += report.trades + report.klines
            self.build_ms.add(int((time.perf_counter() - started) * 1000))
            self.stage_ms.add(max(0, now_ms() - report.oldest_ms))

    def _sweep_signals(self) -> None:
        """Send evaluate_signals to each shard with changed series and none queued: candle
        writers send it too, but a message lost (or a shard gone quiet) must not leave them."""
        pipe = self.client.pipeline(transaction=False)
        for s in self.shards:
            pipe.exists(self.keys.signal_dirty(s))
        dirty = [s for s, n in zip(self.shards, pipe.execute(), strict=True) if n]
        for s in dirty:
            pipe.set(self.keys.signal_queued(s), "1", nx=True, px=FLAG_MS)
        for s, was_set in zip(dirty, pipe.execute(), strict=True):
            if not was_set:
                continue
            if send_bounded(EVALUATE_SIGNALS, s, bound=trigger_bound()):
                self.counters.signals_sent += 1
            else:
                self.counters.signals_refused += 1

    # --- gaps ------------------------------------------------------------------------------

    def _read_gaps(self) -> None:
        streams: Any = {self.keys.gaps(s): ">" for s in self.shards}
        reply = read_streams(self.client, streams, count=1000, group=(GROUP_BACKFILL, self.name))
        for stream, entries in reply or ():
            self._take_gaps(self.keys.shard_in(stream), [(e, f, 1) for e, f in entries])

    def _take_gaps(self, shard: int, entries: list[tuple[Any, Any, int]]) -> None:
        """Turn gap entries into repairs and ack them; dead-letter the ones failing too often."""
        stream = self.keys.gaps(shard)
        pipe = self.client.pipeline(transaction=True)
        for entry_id, fields, deliveries in entries:
            data = (fields or {}).get(ENTRY_FIELD, b"")
            try:
                gap = decode(data, Gap)
            except SchemaError as exc:
                if deliveries < self.settings.candles.max_deliveries:
                    log.warning("gap entry %s failed (delivery %d): %s", entry_id, deliveries, exc)
                    continue  # stays pending: claimed again later
                dead: Any = {"stream": stream, "id": entry_id, "error": str(exc), "d": data}
                pipe.xadd(self.keys.dead(shard), dead, maxlen=10_000, approximate=True)
                pipe.xack(stream, GROUP_BACKFILL, entry_id)
                self.counters.dead += 1
                log.error(
                    "gap entry %s dead-lettered after %d deliveries: %s", entry_id, deliveries, exc
                )
                continue
            windows = repairs.gap_windows(gap, self.settings.timeframes)
            for due, member in repairs.scheduled(windows, self.tf):
                pipe.zadd(self.keys.repairs(shard), {member: due}, nx=True)
            if gap.reason == "outage":  # no id jump will flag these candles: flag them here
                start, end = gap.start_time_ms, gap.end_time_ms
                ranges = [(tf.name, tf.open_time_ms(start), tf.open_time_ms(end))
                          for tf in self.settings.timeframes]  # fmt: skip
                mark_partial(pipe, self.mark_script, self.keys, shard, gap.symbol, ranges,
                             updates_maxlen=self.settings.candles.updates_maxlen)  # fmt: skip
            pipe.xack(stream, GROUP_BACKFILL, entry_id)
            self.counters.gaps += 1
        pipe.execute()

    # --- claims ----------------------------------------------------------------------------

    def _claim(self) -> None:
        """Claim what stayed pending over ``claim_idle_ms`` and forget consumers long gone: two
        pipelined round trips for all its shards (one round trip per command took ~26 ms of the
        build loop at 8 shards)."""
        idle = self.settings.candles.claim_idle_ms
        k = self.keys
        shards = list(self.shards)
        with self.client.pipeline(transaction=False) as p:
            for s in shards:
                for stream in (k.trades(s), k.klines(s)):  # JUSTID: the ids only
                    p.xautoclaim(stream, GROUP_CANDLES, self.name, idle, "0-0", count=1000,
                                 justid=True)  # fmt: skip
                p.xpending_range(k.gaps(s), GROUP_BACKFILL, "-", "+", 100, idle=idle)
                p.xinfo_consumers(k.trades(s), GROUP_CANDLES)
                p.xinfo_consumers(k.gaps(s), GROUP_BACKFILL)
            replies: list[Any] = p.execute()
        stale = set()
        claims: list[tuple[int, int, dict[Any, int]]] = []  # (shard, reply's place, deliveries)
        with self.client.pipeline(transaction=False) as p:
            for n, s in enumerate(shards):
                trades, klines, pending, on_trades, on_gaps = replies[5 * n : 5 * n + 5]
                for claimed in (trades, klines):
                    if claimed:
                        self.counters.claimed += len(claimed)
                        stale.add(s)
                if pending:
                    counts = {e["message_id"]: e["times_delivered"] + 1 for e in pending}
                    claims.append((s, len(p), counts))
                    p.xclaim(k.gaps(s), GROUP_BACKFILL, self.name, idle, list(counts))
                for stream, group, consumers in ((k.trades(s), GROUP_CANDLES, on_trades),
                                                 (k.gaps(s), GROUP_BACKFILL, on_gaps)):  # fmt: skip
                    for c in consumers:
                        if (_s(c["name"]) != self.name and c["pending"] == 0
                                and c["idle"] > STALE_CONSUMER_MS):  # fmt: skip
                            p.xgroup_delconsumer(stream, group, c["name"])
            done: list[Any] = p.execute() if len(p) else []
        for s, at, counts in claims:
            got = done[at]
            self.counters.claimed += len(got)
            self._take_gaps(s, [(e, f, counts.get(e, 1)) for e, f in got])
        if stale:
            log.warning(
                "claimed entries pending over %d ms on shards %s; rebuilding", idle, sorted(stale)
            )
            self.build_due.update(dict.fromkeys(stale & self.owned, 0.0))

    # --- repairs ---------------------------------------------------------------------------

    def _send_repairs(self) -> None:
        """Send due repairs to backfill, leased for REPAIR_LEASE_MS, while the backfill queue
        has room (BACKFILL_QUEUE_MAX); the rest stay due and are sent on a later round."""
        now = now_ms()
        room = BACKFILL_QUEUE_MAX - queue_depth(BACKFILL_KLINES.queue_name)
        for s in self.shards:
            key = self.keys.repairs(s)
            due: Any = self.client.zrangebyscore(key, "-inf", now, start=0, num=REPAIR_BATCH)
            if not due:
                continue
            members = [m.decode() if isinstance(m, bytes) else m for m in due]
            plan = repairs.plan_sends(members, self.tf, room)
            self.counters.repairs_held += plan.held
            room -= len(plan.requests)
            if plan.leased:
                self.client.zadd(key, dict.fromkeys(plan.leased, now + REPAIR_LEASE_MS), xx=True)
            for r in plan.requests:
                BACKFILL_KLINES.send(s, r.symbol, r.timeframe, r.first_open_ms, r.last_open_ms,
                                     r.members)  # fmt: skip
                self.counters.repairs_sent += 1

    def add_history(self, symbols: list[str]) -> None:
        """Add repairs for the closed candles of the history window that are not stored yet."""
        want = self.settings.candles.history
        if want == 0:
            return
        now = now_ms()
        for tf in self.settings.timeframes:
            if not repairs.has_kline(tf):
                continue
            span = repairs.history_span(tf, now, want)
            pipe = self.client.pipeline(transaction=False)
            for sym in symbols:
                pipe.zrange(self.keys.candles(sym, tf.name), *span, byscore=True, withscores=True)
            for sym, stored in zip(symbols, pipe.execute(), strict=True):
                have = {int(score) for _, score in stored}
                window = repairs.history_window(sym, tf, span, want, have)
                shard = self.keys.shard_of(sym)
                if window is not None and shard in self.shards:
                    self.client.zadd(self.keys.repairs(shard), {window.member(): now}, nx=True)
                    self.counters.history_windows += 1

    # --- health ----------------------------------------------------------------------------

    def _write_health(self) -> None:
        k = self.keys
        lag = {}
        pending = 0
        for s in self.shards:
            groups = self.client.xinfo_groups(k.trades(s))
            last = self.client.xinfo_stream(k.trades(s))["last-generated-id"] if groups else None
            for g in groups:
                if g["name"] in (GROUP_CANDLES, GROUP_CANDLES.encode()):
                    lag[f"trades:{s}"] = group_lag(g, last)  # None: Redis cannot tell
                    pending += g["pending"]
        self.counters.lag = lag  # else vars(self.counters) below would overwrite it with {}
        queues = {q: queue_depth(q) for q in ("signals", "backfill")}
        figures = {"shards": self.shards, "owned": sorted(self.owned), "pending": pending,
                   "queues": queues,
                   **vars(self.counters)}  # fmt: skip
        figures["read_age_ms"] = self.read_age.report()
        figures["build_ms"] = self.build_ms.report()
        figures["stage_ms"] = self.stage_ms.report()
        health = HealthReport(self.name, now_ms(), figures)
        self.control.hset(k.consumer_health(), self.name, health.encode())


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def serve(settings: Settings, shards: list[int], name: str) -> None:
    """Run the consumer until SIGTERM/SIGINT."""
    client = sync_client(settings.require_redis_url(), max_connections=4, client_name="consumer")
    market = market_client(settings.market_redis(), client, max_connections=4,
                           client_name="consumer")  # fmt: skip
    consumer = Consumer(market, settings, name=name, shards=shards, control=client)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: consumer.stop.set())

    def history() -> None:
        try:
            symbols = load_universe(settings, stop=consumer.stop)
        except ConfigError as exc:  # the feeder stops on it; here only the start-up work is lost
            log.error("no universe and no history: %s", exc)
            return
        if symbols is not None:
            client.set(consumer.keys.universe(), orjson.dumps(symbols))  # the web tier's list
            consumer.add_history(symbols)
            log.info("history: %d windows to fetch", consumer.counters.history_windows)

    threading.Thread(target=history, name="history", daemon=True).start()
    consumer.run()
    client.hdel(consumer.keys.consumer_health(), name)
    log.info("consumer stopped")


def parse_shards(raw: str, count: int) -> list[int]:
    """Return the shards of ``K/N`` (this is consumer K of N: shards s with s % N == K - 1)."""
    k, _, n = raw.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"{raw!r} is not K/N with 1 <= K <= N (e.g. 2/4)")
    return [s for s in range(count) if s % int(n) == int(k) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.consumer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--shard", default="1/1", help="K/N: take every N-th stream shard (default 1/1)"
    )
    parser.add_argument("--name", default=None, help="consumer name (default host-pid)")
    args = parser.parse_args()
    settings = load_settings()
    setup_logging(settings.log_level, process="consumer")
    wait_for_redis(settings.require_redis_url())
    wait_for_market_redis(settings.market_redis())
    shards = parse_shards(args.shard, settings.stream_shards)
    serve(settings, shards, args.name or consumer_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
