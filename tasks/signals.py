"""``evaluate_signals(shard)``: evaluate the configured signals on the shard's changed series.

Trigger: every candle write (candle actor, backfill) counts the series it changed in the shard's
``signal-dirty`` hash ("SYM|tf" -> update counter) and, if no evaluation is queued
(``signal-queued``, SET NX), the writer sends this actor; the stream consumer also sends it every
second for a shard with dirty series (a lost message delays, never loses, an evaluation).

One round (at most every ``ROUND_PACE_MS`` per shard): read the dirty series, evaluate
(``tasks.signal_eval``: closed values once, from closed exact candles only; a provisional value
on the open candle at most every ``TP_SIGNAL_PACE_MS`` per series), and write everything in one
script call (``tasks.signal_store.WRITE``) that also clears each series from ``signal-dirty``
unless it changed meanwhile. Duplicate or concurrent rounds write nothing twice: a closed value
is added only if its candle has none (``ZADD NX``), and results are pure functions of candles.

A formula that raises, returns garbage or runs past ``TP_FORMULA_TIME_LIMIT_MS`` is counted
(``errors:<signal>`` in ``signal-metrics``), its last error kept in ``signal-errors`` for the ops
page, and the other signals go on; one that keeps timing out is suspended for a while
(``tasks.signal_eval.Breaker``), so that it cannot eat the worker's time. A series without
enough candles for a window asks backfill for the missing history (a repair in the shard's
``repairs``), and is evaluated once it is there.

Cache: the worker keeps each series' recent candles in memory. A round reads the last two members
of each dirty series; a new closed candle is read alone and appended; the whole window is re-read
only when the copy holds a partial candle (it may have been repaired) or is older than
``RELOAD_S``. The cache is bounded: at most ``TP_SIGNAL_CACHE_CANDLES`` candles per process
(~1.2 KB each decoded), the least recently evaluated series evicted first (``cache_evictions``;
the gauges ``cache_series`` and ``cache_candles`` in ``signal-metrics``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import orjson
import redis

from core.clock import now_ms
from core.errors import PlanError, SchemaError
from core.schemas import CANDLE_OPEN_ENDINGS, Candle, decode
from core.timeframes import parse_timeframe
from tasks.actors import EVALUATE_SIGNALS
from tasks.broker import clients, keys, settings
from tasks.formulas import FormulaLoadError
from tasks.repairs import has_kline, window_before
from tasks.signal_eval import CATCH_UP, Breaker, SignalPlan, evaluate_series
from tasks.signal_store import WRITE, SignalWrite

log = logging.getLogger("tasks.signals")

ROUND_PACE_MS = 100  # a shard's rounds start at most this often (builds trigger them)
RELOAD_S = 60.0  # a cached window is re-read at least this often
ASK_AGAIN_MS = 60_000  # a series still short of history asks backfill again after this,
ASK_AGAIN_MAX_MS = 3_600_000  # doubling up to this (a new listing has no longer history)


@dataclass
class _Series:
    """What the worker remembers of one series between rounds."""

    candles: list[Candle] = field(default_factory=list)  # the window, oldest first
    last_closed: bytes = b""  # encoded last closed candle when loaded
    loaded_at: float = 0.0
    last_done: dict[str, int | None] = field(default_factory=dict)  # signal -> last closed value
    provisional_at_ms: int = 0
    asked_ms: int = 0
    ask_every_ms: int = ASK_AGAIN_MS


class ShardSignals:
    """Evaluates one shard's signals; one per shard per worker process."""

    def __init__(self, client: redis.Redis, plan: SignalPlan, shard: int) -> None:
        self.client = client
        self.plan = plan
        self.shard = shard
        self.script = client.register_script(WRITE)
        # The windows, least recently evaluated first; at most cache_bound candles in all.
        self.series: OrderedDict[str, _Series] = OrderedDict()
        self.cache_bound = settings.signals.cache_candles // settings.stream_shards
        self.lock = threading.Lock()
        self.time_limit_s = settings.signals.time_limit_ms / 1000
        self.pace_ms = settings.signals.pace_ms  # per series, for provisional values

    def run(self) -> int:
        """One round; return the number of values written."""
        with self.lock:
            self.client.delete(keys.signal_queued(self.shard))
            dirty: Any = self.client.hgetall(keys.signal_dirty(self.shard))
            if not dirty:
                return 0
            return self._round({_s(f): _s(v) for f, v in dirty.items()})

    def _round(self, dirty: dict[str, str]) -> int:
        now = now_ms()
        w = SignalWrite(keys, self.shard, settings.signals.history)
        work: list[tuple[str, str, str]] = []
        for f in dirty:
            sym, _, tf = f.partition("|")
            if self.plan.for_series(sym, tf):
                work.append((f, sym, tf))
            else:
                w.evaluated(f, dirty[f])  # nothing configured there
        self._refresh(work)
        for f, sym, tf in work:
            st = self.series[f]
            provisional = now - st.provisional_at_ms >= self.pace_ms
            candles = st.candles if provisional else [c for c in st.candles if c.closed]
            res = evaluate_series(self.plan.for_series(sym, tf), candles, st.last_done,
                                  now_ms=now, time_limit_s=self.time_limit_s,
                                  breaker=BREAKER)  # fmt: skip
            for sig in res.signals:
                w.result(sig)
                if sig.provisional:
                    st.provisional_at_ms = now
                else:
                    st.last_done[sig.formula] = sig.open_time_ms
            w.count("closed", sum(not s.provisional for s in res.signals))
            w.count("provisional", sum(s.provisional for s in res.signals))
            w.count("waiting_partial", res.waiting_partial)
            w.count("suspended_skips", res.skipped)
            for name, kind, message in res.errors:
                w.count("errors")
                w.count(f"errors:{name}")
                w.errors[name] = f"{kind}|{sym}|{tf}|{now}|{message}"
                log.warning("signal %s on %s %s: %s: %s", name, sym, tf, kind, message)
            for name, cooldown in res.suspended:
                w.count(f"suspended:{name}")
                w.errors[name] = (f"suspended|{sym}|{tf}|{now}|timed out {BREAKER.after} times "
                                  f"in a row: not evaluated for {cooldown // 1000} s")  # fmt: skip
                log.error("signal %s suspended for %d s: it keeps timing out", name,
                          cooldown // 1000)  # fmt: skip
            if res.short:
                w.count("short_window")
                self._ask_history(st, sym, tf, res.short, now)
            if provisional or not candles or candles[-1].closed:
                w.evaluated(f, dirty[f])  # else: stays dirty for the paced provisional value
        for f, _, _ in work:
            self.series.move_to_end(f)
        evicted, cached = self._evict()
        w.count("cache_evictions", evicted)
        w.gauges["cache_series"] = len(self.series)
        w.gauges["cache_candles"] = cached
        w.count("rounds")
        w.maxlen = settings.candles.updates_maxlen
        written = w.execute(self.client, self.script)
        # Builds do not trigger another round before this expires (the consumer's sweep, or the
        # next build after it, does).
        self.client.set(keys.signal_queued(self.shard), "1", px=ROUND_PACE_MS, nx=True)
        return written

    # --- reading ---------------------------------------------------------------------------

    def _refresh(self, work: list[tuple[str, str, str]]) -> None:
        """Bring the cached candles and last values of the series in ``work`` up to date."""
        pipe = self.client.pipeline(transaction=False)
        for f, sym, tf in work:
            pipe.zrange(keys.candles(sym, tf), -2, -1)
            if f not in self.series:
                for p in self.plan.for_series(sym, tf):
                    pipe.zrange(keys.signal_history(sym, tf, p.name), -1, -1, withscores=True)
        replies = iter(pipe.execute())
        reload, extend = [], []
        t = time.monotonic()
        for f, sym, tf in work:
            tail: list[bytes] = next(replies)
            st = self.series.get(f)
            if st is None:
                st = self.series[f] = _Series()
                for p in self.plan.for_series(sym, tf):
                    top = next(replies)
                    st.last_done[p.name] = int(top[0][1]) if top else None
            closed_tail = [m for m in tail if not _open(m)]
            if (
                not st.candles
                or t - st.loaded_at > RELOAD_S
                or any(c.source == "partial" for c in st.candles)
            ):
                reload.append((f, sym, tf))
            elif (closed_tail[-1] if closed_tail else b"") != st.last_closed:
                extend.append((f, sym, tf))  # new closed candles: read only those
            elif tail and _open(tail[-1]):
                self._set_open(st, tail[-1], f)
        pipe = self.client.pipeline(transaction=False)
        for _, sym, tf in reload:
            pipe.zrange(keys.candles(sym, tf), -self._span(sym, tf), -1)
        for f, sym, tf in extend:
            last = max(c.open_time_ms for c in self.series[f].candles if c.closed)
            pipe.zrange(keys.candles(sym, tf), f"({last}", "+inf", byscore=True)
        replies = iter(pipe.execute())
        for f, _, _ in reload:
            self._load(f, next(replies), t)
        for f, sym, tf in extend:
            st = self.series[f]
            kept = [c for c in st.candles if c.closed]
            self._load(f, next(replies), st.loaded_at, keep=kept, span=self._span(sym, tf))

    def _evict(self) -> tuple[int, int]:
        """Drop the least recently evaluated windows until the cache holds at most
        ``cache_bound`` candles (TP_SIGNAL_CACHE_CANDLES over the shards); return how many
        series went and how many candles stay.
        An evicted series is read again from Redis, its last values from its history, when it
        is next evaluated: eviction costs reads, never values."""
        total = sum(len(st.candles) for st in self.series.values())
        evicted = 0
        while total > self.cache_bound:
            _, st = self.series.popitem(last=False)
            total -= len(st.candles)
            evicted += 1
        return evicted, total

    def _span(self, sym: str, tf: str) -> int:
        """Candles a series' window needs: the longest window, catch-up, the open candle."""
        return max(p.window for p in self.plan.for_series(sym, tf)) + CATCH_UP + 1

    def _load(
        self,
        f: str,
        members: list[bytes],
        t: float,
        keep: list[Candle] | None = None,
        span: int = 0,
    ) -> None:
        """Decode ``members`` into the series' window (after ``keep``, the last ``span``)."""
        st = self.series[f]
        try:
            new = [decode(m, Candle) for m in members]
        except SchemaError as exc:
            st.candles = []
            log.error("series %s: undecodable candle, not evaluated: %s", f, exc)
            return
        st.candles = [*keep, *new][-span:] if keep is not None else new
        closed = [m for m in members if not _open(m)]
        if closed:
            st.last_closed = closed[-1]
        elif keep is None:
            st.last_closed = b""
        st.loaded_at = t

    def _set_open(self, st: _Series, member: bytes, f: str) -> None:
        try:
            c = decode(member, Candle)
        except SchemaError as exc:
            log.error("series %s: undecodable open candle: %s", f, exc)
            return
        if st.candles and not st.candles[-1].closed:
            st.candles[-1] = c
        else:
            st.candles.append(c)

    def _ask_history(self, st: _Series, sym: str, tf_name: str, short: int, now: int) -> None:
        """Ask backfill for ``short`` closed candles before the oldest one we have."""
        tf = parse_timeframe(tf_name)
        if not has_kline(tf) or now - st.asked_ms < st.ask_every_ms:
            return
        if st.asked_ms:
            st.ask_every_ms = min(st.ask_every_ms * 2, ASK_AGAIN_MAX_MS)
        st.asked_ms = now
        oldest = st.candles[0].open_time_ms if st.candles else tf.open_time_ms(now)
        window = window_before(sym, tf, oldest, short)
        self.client.zadd(keys.repairs(self.shard), {window.member(): now}, nx=True)
        log.debug("signals on %s %s need %d more candles: backfill asked", sym, tf_name, short)


def _open(member: bytes) -> bool:
    """Whether an encoded candle member is still open (``closed`` false; see Candle's layout)."""
    return member.endswith(CANDLE_OPEN_ENDINGS)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- the actor -------------------------------------------------------------------------------


def _load_plan() -> SignalPlan:
    """Resolve the configured signals at import: a configuration error stops the process."""
    try:
        return SignalPlan(settings)
    except (PlanError, FormulaLoadError) as exc:
        raise SystemExit(f"configuration error: signals: {exc}") from None


_plan = _load_plan()
BREAKER = Breaker()  # per process: every shard's rounds share it
_shards: dict[int, ShardSignals] = {}
_shards_lock = threading.Lock()
_plan_published = False
clients.declare("signals", max_connections=16)


def _shard(shard: int) -> ShardSignals:
    global _plan_published
    with _shards_lock:
        s = _shards.get(shard)
        if s is None:
            if not _plan_published:
                _publish_plan(clients.get("signals"), _plan)  # control Redis
                _plan_published = True
            s = _shards[shard] = ShardSignals(clients.market("signals"), _plan, shard)
        return s


def _publish_plan(client: redis.Redis, plan: SignalPlan) -> None:
    """Replace ``signal-plan`` with this process's plan (what each signal needs, for the page)."""
    mapping = {
        p.name: orjson.dumps({"window": p.window, "timeframes": sorted(p.timeframes),
                              "symbols": sorted(p.symbols) if p.symbols is not None else None})
        for p in plan.signals
    }  # fmt: skip
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.signal_plan())
        if mapping:
            pipe.hset(keys.signal_plan(), mapping=mapping)  # type: ignore[arg-type]
        pipe.execute()


@dramatiq.actor(actor_name=EVALUATE_SIGNALS.actor_name, queue_name=EVALUATE_SIGNALS.queue_name,
                max_retries=5, min_backoff=100, max_backoff=2_000,
                time_limit=30_000)  # fmt: skip
def evaluate_signals(shard: int) -> None:
    """Evaluate the signals of ``shard``'s changed series (idempotent; see the module docstring)."""
    written = _shard(shard).run()
    log.debug("signals shard %d: %d values written", shard, written)
