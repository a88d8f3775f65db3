"""``GET /metrics``: Prometheus text, read from Redis at scrape time (no second bookkeeping).

Every process already publishes what it knows into Redis (its health report every 2 s, the
counters its scripts keep, the streams and queues themselves); :class:`RedisCollector` turns
those into metric families when Prometheus scrapes. Nothing is counted twice and the figures are
the same the ops page shows. One scrape costs a few pipelined round trips (about 40 commands per
shard), so scrape every 15 s or more, not every second.

Protected: ``Authorization: Bearer <TP_METRICS_TOKEN>``, or an ops sign-in's access token.
``BOUNDS`` lists, for every key of docs/architecture.md's "Streams" and "Keys" tables, the
samples that expose its size and bound (or why it has none to expose); the test holds the doc,
this list and a real scrape together.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.clock import now_ms
from core.config import Settings
from core.keys import GROUP_EXECUTION, Keys
from core.schemas import HEALTH_STALE_MS, HealthReport
from ops import audit, dead
from ops.failed import queues
from ops.health import ROLES, process_reports, queue_stats, stream_lag
from web.auth import verify_access
from web.commands import AUDIT_MAXLEN as ORDERS_AUDIT_MAXLEN
from web.commands import COMMANDS_MAXLEN, REQUEST_TTL_S
from web.errors import ApiError, error_response
from web.services import web
from web.sessions import NONCE_TTL_S

bp = Blueprint("metrics", __name__)

# Bounds set by code outside the web tier (which it may not import; tests/e2e/test_metrics.py
# checks each against its source).
EVENTS_MAXLEN = 100_000  # execution/store.py
DONE_KEPT, FILLS_KEPT = 500, 1_000  # execution/store.py, per user
REPLY_TTL_S, RESULT_TTL_S = 120, 86_400  # execution/store.py
EXEC_HEALTH_TTL_S = 60  # execution/service.py HEALTH_TTL_S
ACCOUNT_QUEUE_MAX = 1_000  # execution: per-account command queue
DEAD_LETTERS_MAX = 10_000  # tasks/broker.py, per queue
TRIGGER_QUEUE_PER_SHARD, BACKFILL_QUEUE_MAX = 4, 2_000  # tasks/broker.py send_bounded
RATE_TTL_S = 120  # web/sessions.py login attempts (per minute, kept 2 min)
ORDER_RATE_TTL_S = 120  # web/commands.py: counters of 20-120 s windows
SMALL_MAXLEN = 10_000  # gaps, dead, signal-events

# A health report's fields that are not the process's figures.
_NOT_FIGURES = ("at_ms", *HealthReport.ADDED)

SHARD_STREAMS = ("trades", "klines", "book", "mark", "gaps", "dead", "candle-updates",
                 "signal-events", "signal-updates")  # fmt: skip

# docs/architecture.md key -> the samples exposing its size and bound, or why there are none.
_SHARD_STREAM_BOUNDS = {
    f"<ns>:{{sN}}:{s}": (f'tp_stream_length{{stream="{s}"}}', f'tp_stream_bound{{stream="{s}"}}')
    for s in SHARD_STREAMS
}
BOUNDS: dict[str, tuple[str, ...] | str] = {
    **_SHARD_STREAM_BOUNDS,
    "<ns>:{sN}:candles:<SYMBOL>:<tf>": ("tp_candle_retention",),
    "<ns>:{sN}:candle-state:<SYMBOL>": ("tp_universe_symbols",),
    "<ns>:{sN}:candle-cursor": "one hash per shard: nothing grows",
    "<ns>:{sN}:candle-metrics": ("tp_candle_metric",),
    "<ns>:{sN}:repairs": ("tp_repairs",),
    "<ns>:{sN}:builder": "one string per shard: nothing grows",
    "<ns>:consumer:health": ('tp_health_reports{role="consumer"}',),
    "<ns>:rest:weight": ("tp_rest_weight_used", "tp_rest_weight_budget"),
    "<ns>:rest:ban-until": ("tp_rest_ban_until_ms",),
    "<ns>:{sN}:signals:<SYMBOL>:<tf>": ("tp_signal_plan_signals",),
    "<ns>:{sN}:signal-history:<SYMBOL>:<tf>:<signal>": ("tp_signal_history_bound",),
    "<ns>:signal-plan": ("tp_signal_plan_signals",),
    "<ns>:{sN}:signal-dirty": ("tp_signal_dirty_series",),
    "<ns>:{sN}:signal-queued": "one string per shard: nothing grows",
    "<ns>:{sN}:signal-metrics": ("tp_signal_metric",),
    "<ns>:{sN}:signal-errors": ("tp_signal_errors",),
    "<ns>:feed:health": ('tp_health_reports{role="feeder"}',),
    "<ns>:{sN}:feed:last-trade": ("tp_feed_last_trade_symbols",),
    "<ns>:dead-letters-trimmed": ("tp_dramatiq_dead_letters_trimmed",),
    "<ns>:dramatiq:*": (
        "tp_dramatiq_messages",
        "tp_dramatiq_queue_bound",
        "tp_dramatiq_dead_letters_bound",
    ),
    "<ns>:universe": ("tp_universe_symbols",),
    "<ns>:web:health": ('tp_health_reports{role="web"}',),
    "<ns>:worker:health": ('tp_health_reports{role="worker"}', 'tp_health_reports{role="signals"}'),
    "<ns>:auth:nonce:<nonce>": ('tp_key_ttl_seconds{key="auth:nonce"}',),
    "<ns>:auth:refresh:<sha256>": ('tp_key_ttl_seconds{key="auth:refresh"}',),
    "<ns>:auth:family:<family>": ('tp_key_ttl_seconds{key="auth:family"}',),
    "<ns>:auth:rate:<kind>:<who>:<minute>": ('tp_key_ttl_seconds{key="auth:rate"}',),
    "<ns>:ops:audit": (
        'tp_stream_length{stream="ops:audit"}',
        'tp_stream_bound{stream="ops:audit"}',
    ),
    "<ns>:orders:commands": (
        'tp_stream_length{stream="orders:commands"}',
        'tp_stream_bound{stream="orders:commands"}',
        'tp_stream_group_lag{stream="orders:commands"}',
    ),
    # One stream per execution shard beyond the first: the same families, labelled by shard.
    "<ns>:orders:commands:<k>": (
        'tp_stream_length{stream="orders:commands"}',
        'tp_stream_bound{stream="orders:commands"}',
        'tp_stream_group_lag{stream="orders:commands"}',
    ),
    "<ns>:orders:events": (
        'tp_stream_length{stream="orders:events"}',
        'tp_stream_bound{stream="orders:events"}',
    ),
    "<ns>:orders:audit": (
        'tp_stream_length{stream="orders:audit"}',
        'tp_stream_bound{stream="orders:audit"}',
    ),
    "<ns>:orders:request:<address>:<request id>": ('tp_key_ttl_seconds{key="orders:request"}',),
    "<ns>:orders:reply:<address>:<request id>": ('tp_key_ttl_seconds{key="orders:reply"}',),
    "<ns>:orders:result:<address>:<request id>": ('tp_key_ttl_seconds{key="orders:result"}',),
    "<ns>:orders:live:<address>": "per user (the exchange's open orders): not summed per scrape",
    "<ns>:orders:done:<address>": ('tp_key_bound{key="orders:done"}',),
    "<ns>:orders:fills:<address>": ('tp_key_bound{key="orders:fills"}',),
    "<ns>:orders:state:<address>": "per user, fixed fields and one per symbol traded",
    "<ns>:orders:rate:<kind>:<address>:<window>": ('tp_key_ttl_seconds{key="orders:rate"}',),
    "<ns>:accounts:<address>": "user data, one per user: counting needs a SCAN",
    "<ns>:instruments": "one string",
    "<ns>:execution:health": (
        'tp_health_reports{role="execution"}',
        'tp_key_ttl_seconds{key="execution:health"}',
        "tp_execution_account_queue_bound",
    ),
    "<ns>:socketio": "pub/sub channel: no backlog",
}


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


class RedisCollector(Collector):
    """Read the deployment's state from Redis and yield it as metric families (at scrape)."""

    def __init__(self, r: redis.Redis, settings: Settings, keys: Keys,
                 market: redis.Redis | None = None) -> None:  # fmt: skip
        self.r, self.settings, self.keys = r, settings, keys
        self.m = r if market is None else market  # market data: the per-shard keys

    def collect(self) -> Iterator[Metric]:
        now = now_ms()
        reports = process_reports(self.r, self.keys, now, HEALTH_STALE_MS)
        yield from self._processes(reports)
        yield from self._streams()
        yield from self._dramatiq(reports)
        yield from self._feeders(reports["feeder"])
        yield from self._consumers(reports["consumer"])
        yield from self._web(reports["web"])
        yield from self._execution(reports["execution"])
        yield from self._shards()
        yield from self._rest(now)
        yield from self._bounds()

    # --- processes ----------------------------------------------------------------------------

    def _processes(self, reports: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        up = _gauge("tp_process_up", "1 while the process's health report is fresh",
                    ["role", "name"])  # fmt: skip
        age = _gauge("tp_process_report_age_seconds", "age of the process's last health report",
                     ["role", "name"])  # fmt: skip
        fresh = _gauge("tp_processes_fresh", "processes of the role with a fresh report", ["role"])
        count = _gauge("tp_health_reports", "reports (fields) in the role's health hash", ["role"])
        for role in ROLES:
            by_name = reports[role]
            fresh.add_metric([role], sum(not rep["stale"] for rep in by_name.values()))
            count.add_metric([role], len(by_name))
            for name, rep in by_name.items():
                up.add_metric([role, name], 0 if rep["stale"] else 1)
                if rep.get("age_ms") is not None:
                    age.add_metric([role, name], rep["age_ms"] / 1000)
        yield from (up, age, fresh, count)

    # --- streams ------------------------------------------------------------------------------

    def _stream_bounds(self) -> dict[str, int]:
        s, c = self.settings, self.settings.candles
        return {"trades": s.stream_maxlen, "klines": s.stream_maxlen, "book": s.stream_maxlen,
                "mark": s.stream_maxlen, "gaps": dead.GAPS_MAXLEN, "dead": SMALL_MAXLEN,
                "candle-updates": c.updates_maxlen, "signal-events": SMALL_MAXLEN,
                "signal-updates": c.updates_maxlen, "ops:audit": audit.AUDIT_MAXLEN,
                "orders:commands": COMMANDS_MAXLEN, "orders:events": EVENTS_MAXLEN,
                "orders:audit": ORDERS_AUDIT_MAXLEN}  # fmt: skip

    def _streams(self) -> Iterator[Metric]:
        k = self.keys
        length = _gauge("tp_stream_length", "entries in the stream (XLEN)", ["stream", "shard"])
        bound = _gauge("tp_stream_bound", "the stream's MAXLEN ~ bound", ["stream"])
        lag = _gauge("tp_stream_group_lag", "entries not yet delivered to the consumer group",
                     ["stream", "shard", "group"])  # fmt: skip
        pending = _gauge("tp_stream_group_pending", "entries delivered to the group, not acked",
                         ["stream", "shard", "group"])  # fmt: skip
        for name, value in self._stream_bounds().items():
            bound.add_metric([name], value)
        with self.m.pipeline(transaction=False) as p:
            for s in range(k.shards):
                for name in SHARD_STREAMS:
                    p.xlen(k.shard_stream(s, name))
            got: list[Any] = p.execute(raise_on_error=False)
        exec_shards = range(self.settings.execution.shards)
        with self.r.pipeline(transaction=False) as p:
            for key in (k.ops_audit(), k.order_events(), k.order_audit()):
                p.xlen(key)
            for e in exec_shards:
                p.xlen(k.order_commands(e))
                p.xinfo_groups(k.order_commands(e))
            got += p.execute(raise_on_error=False)
        i = 0
        for s in range(k.shards):
            for name in SHARD_STREAMS:
                length.add_metric([name, str(s)], _count(got[i]))
                i += 1
        for name in ("ops:audit", "orders:events", "orders:audit"):
            length.add_metric([name, ""], _count(got[i]))
            i += 1
        for e in exec_shards:  # shard label: the execution shard (TP_EXECUTION_SHARDS)
            length.add_metric(["orders:commands", str(e)], _count(got[i]))
            groups = got[i + 1] if isinstance(got[i + 1], list) else []
            i += 2
            for g in groups:
                if g["name"] in (GROUP_EXECUTION, GROUP_EXECUTION.encode()):
                    if g.get("lag") is not None:
                        lag.add_metric(["orders:commands", str(e), GROUP_EXECUTION], g["lag"])
                    pending.add_metric(["orders:commands", str(e), GROUP_EXECUTION], g["pending"])
            if not groups:  # no execution process ever ran: nothing waits for one either
                lag.add_metric(["orders:commands", str(e), GROUP_EXECUTION], 0)
        for row in stream_lag(self.m, k):
            labels = [row["stream"], str(row["shard"]), row["group"]]
            if row["lag"] is not None:
                lag.add_metric(labels, row["lag"])
            if row["pending"] is not None:
                pending.add_metric(labels, row["pending"])
        yield from (length, bound, lag, pending)

    # --- Dramatiq -----------------------------------------------------------------------------

    def _dramatiq(self, reports: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        names = queues(self.r, self.keys)
        messages = _gauge("tp_dramatiq_messages", "messages of the queue by state (failed: dead "
                          "letters)", ["queue", "state"])  # fmt: skip
        trimmed = _gauge("tp_dramatiq_dead_letters_trimmed", "dead letters dropped past the bound",
                         ["queue"])  # fmt: skip
        for queue, stats in queue_stats(self.r, self.keys, names).items():
            for state in ("ready", "delayed", "failed"):
                messages.add_metric([queue, state], stats[state])
            trimmed.add_metric([queue], stats["trimmed"])
        bound = _gauge("tp_dramatiq_queue_bound", "waiting messages past which none are sent",
                       ["queue"])  # fmt: skip
        trigger = TRIGGER_QUEUE_PER_SHARD * self.keys.shards
        for queue, value in (("signals", trigger), ("backfill", BACKFILL_QUEUE_MAX)):
            bound.add_metric([queue], value)
        dead_bound = _gauge("tp_dramatiq_dead_letters_bound", "dead letters kept per queue")
        dead_bound.add_metric([], DEAD_LETTERS_MAX)
        handled = _gauge("tp_worker_messages", "messages a Dramatiq process handled since it "
                         "started", ["role", "name", "result"])  # fmt: skip
        in_flight = _gauge("tp_worker_in_flight", "messages being processed", ["role", "name"])
        threads = _gauge("tp_worker_threads", "worker threads", ["role", "name"])
        for role in ("worker", "signals"):
            for name, rep in reports[role].items():
                for result in ("processed", "failed", "skipped"):
                    handled.add_metric([role, name, result], _num(rep.get(result)) or 0)
                in_flight.add_metric([role, name], _num(rep.get("in_flight")) or 0)
                threads.add_metric([role, name], _num(rep.get("threads")) or 0)
        yield from (messages, trimmed, bound, dead_bound, handled, in_flight, threads)

    # --- process reports ----------------------------------------------------------------------

    def _feeders(self, reports: dict[str, Any]) -> Iterator[Metric]:
        labels = ["feeder", "connection", "route"]
        up = _gauge("tp_feed_connection_up", "1 while the connection is live", labels)
        reconnects = _gauge("tp_feed_connection_reconnects", "reconnects so far", labels)
        frame_age = _gauge("tp_feed_connection_last_frame_age_seconds", "since the last frame",
                           labels)  # fmt: skip
        streams = _gauge("tp_feed_connection_streams", "streams carried", labels)
        outbox = _gauge("tp_feed_outbox", "outbox entries by kind (size, max: the bound, "
                        "high_water, in_flight, pending_gaps, held_for_reorder)",
                        ["feeder", "kind"])  # fmt: skip
        counter = _gauge("tp_feed_counter", "the feeder's counters", ["feeder", "counter"])
        redis_up = _gauge("tp_feed_redis_up", "1 while the feeder's writes reach Redis",
                          ["feeder"])  # fmt: skip
        for name, rep in reports.items():
            for c in rep.get("connections") or []:
                lv = [name, str(c.get("name")), str(c.get("route"))]
                up.add_metric(lv, 1 if c.get("state") == "live" else 0)
                reconnects.add_metric(lv, _num(c.get("reconnects")) or 0)
                streams.add_metric(lv, _num(c.get("streams")) or 0)
                if _num(c.get("last_frame_age_ms")) is not None:
                    frame_age.add_metric(lv, c["last_frame_age_ms"] / 1000)
            for kind, value in (rep.get("outbox") or {}).items():
                if _num(value) is not None:
                    outbox.add_metric([name, kind], value)
            for key, value in (rep.get("counters") or {}).items():
                if _num(value) is not None:
                    counter.add_metric([name, key], value)
            if "redis_up" in rep:
                redis_up.add_metric([name], 1 if rep["redis_up"] else 0)
        yield from (up, reconnects, frame_age, streams, outbox, counter, redis_up)

    def _consumers(self, reports: dict[str, Any]) -> Iterator[Metric]:
        stat = _gauge("tp_consumer_stat", "the stream consumer's counters and pending entries",
                      ["name", "stat"])  # fmt: skip
        depth = _gauge("tp_consumer_queue_depth", "Dramatiq queue depth the consumer saw",
                       ["name", "queue"])  # fmt: skip
        latency = _gauge("tp_consumer_latency_ms", "the candle stage's latency over the last "
                         "report period (docs/architecture.md, 'Latency budget'): stage=read "
                         "(trade entry to the consumer's read), build (one build's run), candle "
                         "(a build's oldest entry to its write)",
                         ["name", "stage", "quantile"])  # fmt: skip
        for name, rep in reports.items():
            for key, value in rep.items():
                if key not in _NOT_FIGURES and _num(value) is not None:
                    stat.add_metric([name, key], value)
            for queue, value in (rep.get("queues") or {}).items():
                if _num(value) is not None:
                    depth.add_metric([name, queue], value)
            for stage, key in (("read", "read_age_ms"), ("build", "build_ms"),
                               ("candle", "stage_ms")):  # fmt: skip
                figures = rep.get(key)  # [p50, p99, max] (core/latency.py), or None: no build
                if isinstance(figures, list) and len(figures) == 3:
                    for q, v in zip(("0.5", "0.99", "1"), figures, strict=True):
                        if _num(v) is not None:
                            latency.add_metric([name, stage, q], v)
        yield from (stat, depth, latency)

    def _web(self, reports: dict[str, Any]) -> Iterator[Metric]:
        clients = _gauge("tp_web_clients", "connected Socket.IO clients", ["name"])
        backlog = _gauge("tp_web_backlog_bound", "queued messages past which a client is skipped",
                         ["name"])  # fmt: skip
        stat = _gauge("tp_web_stat", "the web process's report (rooms, sent, skipped, kicked, "
                      "max queue, pump lag, RSS...)", ["name", "stat"])  # fmt: skip
        for name, rep in reports.items():
            clients.add_metric([name], _num(rep.get("clients")) or 0)
            backlog.add_metric([name], _num(rep.get("backlog_bound")) or 0)
            for key, value in rep.items():
                if key not in _NOT_FIGURES and _num(value) is not None:
                    stat.add_metric([name, key], value)
        yield from (clients, backlog, stat)

    def _execution(self, reports: dict[str, Any]) -> Iterator[Metric]:
        stat = _gauge("tp_execution_stat", "the execution process's counters and pending "
                      "commands", ["name", "stat"])  # fmt: skip
        queue = _gauge("tp_execution_account_queue", "commands waiting per linked account",
                       ["name", "account"])  # fmt: skip
        account = _gauge("tp_execution_account_stat", "per linked account counters",
                         ["name", "account", "stat"])  # fmt: skip
        bound = _gauge("tp_execution_account_queue_bound", "commands one account may queue")
        bound.add_metric([], ACCOUNT_QUEUE_MAX)
        for name, rep in reports.items():
            for key, value in rep.items():
                if key not in _NOT_FIGURES and _num(value) is not None:
                    stat.add_metric([name, key], value)
            for address, acc in (rep.get("accounts") or {}).items():
                queue.add_metric([name, address], _num(acc.get("queue")) or 0)
                for key, value in acc.items():
                    if key != "queue" and _num(value) is not None:
                        account.add_metric([name, address, key], value)
        yield from (stat, queue, account, bound)

    # --- per shard: candles and signals -------------------------------------------------------

    def _shards(self) -> Iterator[Metric]:
        k = self.keys
        p: Any
        with self.m.pipeline(transaction=False) as p:
            for s in range(k.shards):
                p.hgetall(k.candle_metrics(s)).hgetall(k.signal_metrics(s))
                p.zcard(k.repairs(s)).hlen(k.signal_dirty(s)).hlen(k.signal_errors(s))
            for s in range(k.shards):
                p.hlen(k.feed_last_trade(s))
            got: list[Any] = p.execute()
        with self.r.pipeline(transaction=False) as p:
            p.get(k.universe())
            p.hlen(k.signal_plan())
            universe, plan = p.execute()
        candle = _gauge("tp_candle_metric", "candle builds' counters (candle-metrics)",
                        ["shard", "name"])  # fmt: skip
        signal = _gauge("tp_signal_metric", "signal rounds' counters and gauges (signal-metrics)",
                        ["shard", "name"])  # fmt: skip
        repairs = _gauge("tp_repairs", "repair windows due or leased", ["shard"])
        dirty = _gauge("tp_signal_dirty_series", "series waiting for evaluation", ["shard"])
        errors = _gauge("tp_signal_errors", "signals with a last error kept", ["shard"])
        for s in range(k.shards):
            cm, sm, rep, dty, err = got[5 * s : 5 * s + 5]
            for family, raw in ((candle, cm), (signal, sm)):
                for field, value in raw.items():
                    if value.lstrip(b"-").isdigit():
                        family.add_metric([str(s), field.decode()], int(value))
            repairs.add_metric([str(s)], rep)
            dirty.add_metric([str(s)], dty)
            errors.add_metric([str(s)], err)
        last_trade = sum(got[5 * k.shards :])
        symbols = _gauge("tp_universe_symbols", "symbols the pipeline follows")
        try:
            symbols.add_metric([], len(orjson.loads(universe)) if universe else 0)
        except (orjson.JSONDecodeError, TypeError):
            symbols.add_metric([], 0)
        planned = _gauge("tp_signal_plan_signals", "signals configured (fields of signal-plan)")
        planned.add_metric([], plan)
        last = _gauge("tp_feed_last_trade_symbols", "symbols with a last trade recorded")
        last.add_metric([], last_trade)
        yield from (candle, signal, repairs, dirty, errors, symbols, planned, last)

    # --- REST weight --------------------------------------------------------------------------

    def _rest(self, now: int) -> Iterator[Metric]:
        with self.r.pipeline(transaction=False) as p:
            p.hget(self.keys.rest_weight(), str(now // 60_000))
            p.hgetall(self.keys.rest_ban())
            weight, bans = p.execute()
        used = _gauge("tp_rest_weight_used", "REST weight used this minute, every process")
        used.add_metric([], int(weight or 0))
        budget = _gauge("tp_rest_weight_budget", "REST weight our processes may use per minute")
        budget.add_metric([], self.settings.candles.rest_weight_budget)
        ban = _gauge("tp_rest_ban_until_ms", "end of the 418 ban / 429 backoff (0: none)",
                     ["status"])  # fmt: skip
        for status in ("418", "429"):
            end = int(bans.get(status.encode(), 0) or 0)
            ban.add_metric([status], end if end > now else 0)
        yield from (used, budget, ban)

    # --- configured bounds --------------------------------------------------------------------

    def _bounds(self) -> Iterator[Metric]:
        w = self.settings.web
        retention = _gauge("tp_candle_retention", "candles kept per series", ["timeframe"])
        for timeframe, n in self.settings.candles.retention or ():
            retention.add_metric([timeframe], n)
        history = _gauge("tp_signal_history_bound", "closed values kept per series and signal")
        history.add_metric([], self.settings.signals.history)
        ttl = _gauge("tp_key_ttl_seconds", "how long the keys live", ["key"])
        for key, seconds in (("auth:nonce", NONCE_TTL_S), ("auth:refresh", w.refresh_ttl_s),
                             ("auth:family", w.refresh_ttl_s), ("auth:rate", RATE_TTL_S),
                             ("orders:request", REQUEST_TTL_S), ("orders:reply", REPLY_TTL_S),
                             ("orders:result", RESULT_TTL_S), ("orders:rate", ORDER_RATE_TTL_S),
                             ("execution:health", EXEC_HEALTH_TTL_S)):  # fmt: skip
            ttl.add_metric([key], seconds)
        kept = _gauge("tp_key_bound", "entries kept per key", ["key"])
        kept.add_metric(["orders:done"], DONE_KEPT)
        kept.add_metric(["orders:fills"], FILLS_KEPT)
        yield from (retention, history, ttl, kept)


def _count(value: Any) -> int:
    return 0 if isinstance(value, Exception) else int(value)


# --- the endpoint ------------------------------------------------------------------------------


def _allowed() -> None:
    """Pass a request bearing TP_METRICS_TOKEN or an ops access token; raise ApiError."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <TP_METRICS_TOKEN>' "
                       "or an ops sign-in's access token")  # fmt: skip
    expected = web().settings.web.metrics_token
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return
    verify_access(token, "ops")  # raises for anything else


@bp.get("/metrics")
def metrics() -> Any:
    try:
        _allowed()
    except ApiError as exc:
        return error_response(exc)
    w = web()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(w.redis, w.settings, w.keys, w.market_redis))
    body = generate_latest(registry)
    return Response(body, mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                  "Cache-Control": "no-store"})  # fmt: skip
