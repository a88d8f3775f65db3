"""``/metrics``, ``/livez``, ``/readyz`` and the Dramatiq processes' health, on a real Redis.

The worker and signals health comes from real Dramatiq workers on the project's broker settings
(``tasks.broker.make_broker``, so with ``tasks.health.WorkerHealth``); the other processes'
reports are written the way those processes write them. ``/metrics`` is read with Prometheus's
own text parser and held against every key of docs/architecture.md's "Streams" and "Keys"
tables through ``web.metrics.BOUNDS``.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import orjson
import pytest
import redis
from eth_account import Account
from eth_account.signers.local import LocalAccount
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from core.keys import GROUP_CANDLES, Keys
from tests.e2e.test_ops import login, wait_for
from web import metrics
from web.app import create_app

TOKEN = "metrics-token-0123456789abcdefghijklmnopqrstuvwxyz"
DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def operator() -> LocalAccount:
    return Account.create()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], operator: LocalAccount) -> Settings:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{s.getsockname()[1]}"
    return make_settings(TP_METRICS_TOKEN=TOKEN, TP_OPS_ADDRESSES=operator.address,
                         TP_WEB_ORIGIN=origin, TP_LOGIN_PER_MINUTE_IP="1000")  # fmt: skip


@pytest.fixture
def client(settings: Settings) -> FlaskClient:
    return create_app(settings, start_pump=False).test_client()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Workers:
    """Two real Dramatiq workers: one on a queue of its own (the ``worker`` role), one on
    ``signals`` (the ``signals`` role), each with an actor that records what it ran."""

    def __init__(self, settings: Settings, r: redis.Redis, keys: Keys) -> None:
        from tasks.broker import make_broker

        self.brokers = [make_broker(settings), make_broker(settings)]
        self.ran = f"{keys.namespace}:metricstest:ran"
        self.workers: list[dramatiq.Worker] = []

        def metrics_probe(tag: str) -> None:
            if tag.startswith("fail"):
                raise ValueError(tag)
            r.rpush(self.ran, tag)

        self.candles = dramatiq.actor(metrics_probe, queue_name="metricstest", max_retries=0,
                                      broker=self.brokers[0])  # fmt: skip
        self.signals = dramatiq.actor(metrics_probe, queue_name="signals", max_retries=0,
                                      broker=self.brokers[1])  # fmt: skip
        for broker, queue in zip(self.brokers, ("metricstest", "signals"), strict=True):
            worker = dramatiq.Worker(broker, queues={queue}, worker_threads=1, worker_timeout=100)
            worker.start()
            self.workers.append(worker)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=5_000)
        for broker in self.brokers:
            broker.client.close()


@pytest.fixture
def workers(settings: Settings, r: redis.Redis, keys: Keys, redis_url: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Workers]:  # fmt: skip
    # tasks.broker builds its module-level broker from the environment when first imported.
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TP_DEMO", "1")
    w = Workers(settings, r, keys)
    yield w
    w.stop()


def scrape(client: FlaskClient, token: str = TOKEN) -> dict[str, list[Any]]:
    """Return family name -> samples of one scrape, parsed by Prometheus's own parser."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {f.name: f.samples for f in families}


def value(samples: dict[str, list[Any]], family: str, **labels: str) -> float:
    (match,) = [s for s in samples[family] if all(s.labels.get(k) == v for k, v in labels.items())]
    return float(match.value)


def doc_keys() -> list[str]:
    """Return the key column of every row of the "Streams" and "Keys" tables that has a bound."""
    found = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `<ns>"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells[-1]:
            continue  # no bound named
        found += re.findall(r"`(<ns>[^`]*)`", cells[0].replace("\\|", "|"))
    return found


def write_reports(r: redis.Redis, keys: Keys) -> None:
    """Health reports as the feeder, consumer, web and execution processes write them."""
    now = time.time_ns() // 1_000_000
    r.hset(keys.feed_health(), "feeder-1of1", orjson.dumps({
        "feeder": "feeder-1of1", "updated_ms": now, "redis_up": True,
        "connections": [{"name": "market-0", "route": "market", "state": "live", "streams": 12,
                         "connected_at_ms": now - 5000, "last_frame_age_ms": 40,
                         "reconnects": 2, "control_errors": 0}],
        "counters": {"events": 900, "gaps": 1},
        "outbox": {"size": 7, "max": 200_000, "high_water": 50, "in_flight": 0,
                   "pending_gaps": 0, "held_for_reorder": 0},
    }))  # fmt: skip
    r.hset(keys.consumer_health(), "c1", orjson.dumps(
        {"name": "c1", "at_ms": now, "shards": [0, 1, 2, 3], "pending": 3,
         "queues": {"signals": 2, "backfill": 5}, "signals_refused": 4,
         "read_age_ms": [3, 20, 31], "build_ms": None, "stage_ms": [9, 48, 70]}))  # fmt: skip
    r.hset(keys.web_health(), "web-1", orjson.dumps(
        {"name": "web-1", "at_ms": now, "clients": 11, "rooms": 4, "backlog_bound": 16,
         "sent": 99, "lag_ms_max": 12}))  # fmt: skip
    r.hset(keys.execution_health(), "execution-1", orjson.dumps(
        {"at_ms": now, "consumer": "execution-1", "pending": 1, "commands": 5,
         "accounts": {"0xabc": {"queue": 2, "stream": True, "resolving": 0}}}))  # fmt: skip


def test_metrics_parse_and_expose_every_bound_of_the_architecture(
    client: FlaskClient, workers: Workers, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    write_reports(r, keys)
    r.xadd(keys.trades(1), {"d": b"x"})
    r.xadd(keys.trades(1), {"d": b"y"})
    r.xgroup_create(keys.trades(1), GROUP_CANDLES, id="0", mkstream=True)
    r.xadd(keys.dead(2), {"stream": keys.gaps(2), "id": "1-0", "error": "e", "d": b"r"})
    r.set(keys.universe(), orjson.dumps(["BTCUSDT", "ETHUSDT"]))
    r.hset(keys.candle_metrics(0), mapping={"builds": 5, "trades_applied": 40})
    r.hset(keys.signal_metrics(3), mapping={"rounds": 3, "errors:rsi": 1})
    r.hset(keys.rest_weight(), str(time.time_ns() // 60_000_000_000), 37)
    workers.candles.send("fail-1")
    workers.signals.send("ok-1")
    ns = keys.dramatiq_namespace()
    wait_for("the failure", lambda: r.zcard(f"{ns}:metricstest.XQ") == 1)
    wait_for("the signal message", lambda: r.lrange(workers.ran, 0, -1) == [b"ok-1"])

    samples = wait_for("both workers' reports counting their message", lambda: (
        s if value(s, "tp_worker_messages", role="worker", result="failed") == 1
        and value(s, "tp_worker_messages", role="signals", result="processed") == 1 else None
    ) if len((s := scrape(client))["tp_worker_messages"]) == 6 else None)  # fmt: skip

    # Every key the architecture bounds is in BOUNDS, and nothing else is.
    documented = doc_keys()
    assert len(documented) > 40
    assert sorted(set(documented)) == sorted(metrics.BOUNDS)
    for key, exposed in metrics.BOUNDS.items():
        if isinstance(exposed, str):
            assert exposed, key  # a reason why there is no number to export
            continue
        for spec in exposed:
            family, _, label = spec.partition("{")
            wanted = dict(re.findall(r'(\w+)="([^"]*)"', label))
            assert any(all(s.labels.get(k) == v for k, v in wanted.items())
                       for s in samples.get(family, [])), (key, spec)  # fmt: skip

    # Values a scrape must get right: sizes, bounds, lag, queues, reports.
    assert value(samples, "tp_stream_length", stream="trades", shard="1") == 2
    assert value(samples, "tp_stream_bound", stream="trades") == settings.stream_maxlen
    assert value(samples, "tp_stream_group_lag", stream="trades", shard="1", group="candles") == 2
    assert value(samples, "tp_stream_length", stream="dead", shard="2") == 1
    assert value(samples, "tp_dramatiq_messages", queue="metricstest", state="failed") == 1
    assert value(samples, "tp_dramatiq_queue_bound", queue="signals") == 4 * keys.shards
    assert value(samples, "tp_universe_symbols") == 2
    assert value(samples, "tp_signal_metric", shard="3", name="errors:rsi") == 1
    assert value(samples, "tp_candle_metric", shard="0", name="builds") == 5
    assert value(samples, "tp_rest_weight_used") == 37
    assert value(samples, "tp_feed_connection_up", feeder="feeder-1of1", connection="market-0") == 1
    assert value(samples, "tp_feed_outbox", feeder="feeder-1of1", kind="max") == 200_000
    assert value(samples, "tp_consumer_queue_depth", name="c1", queue="backfill") == 5
    latency = "tp_consumer_latency_ms"
    assert value(samples, latency, name="c1", stage="candle", quantile="0.99") == 48
    assert value(samples, latency, name="c1", stage="read", quantile="1") == 31
    assert not [s for s in samples[latency] if s.labels["stage"] == "build"]
    assert value(samples, "tp_web_clients", name="web-1") == 11
    assert value(samples, "tp_execution_account_queue", name="execution-1", account="0xabc") == 2
    for role in ("web", "feeder", "consumer", "worker", "signals", "execution"):
        assert value(samples, "tp_processes_fresh", role=role) == 1, role


def test_bounds_set_outside_the_web_tier_match_their_source(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TP_DEMO", "1")
    from execution import account, service, store
    from feeds import writer
    from ops import dead
    from tasks import broker, candle_store, signal_store

    assert (metrics.EVENTS_MAXLEN, metrics.DONE_KEPT, metrics.FILLS_KEPT) == (
        store.EVENTS_MAXLEN, store.DONE_KEPT, store.FILLS_KEPT)  # fmt: skip
    assert (metrics.REPLY_TTL_S, metrics.RESULT_TTL_S) == (store.REPLY_TTL_S, store.RESULT_TTL_S)
    assert metrics.EXEC_HEALTH_TTL_S == service.HEALTH_TTL_S
    assert metrics.ACCOUNT_QUEUE_MAX == account.QUEUE_MAX
    assert metrics.DEAD_LETTERS_MAX == broker.DEAD_LETTERS_MAX
    assert metrics.TRIGGER_QUEUE_PER_SHARD == broker.TRIGGER_QUEUE_PER_SHARD
    assert metrics.BACKFILL_QUEUE_MAX == broker.BACKFILL_QUEUE_MAX
    assert candle_store.BuildWrite.dead_maxlen == metrics.SMALL_MAXLEN
    assert signal_store.SignalWrite.events_maxlen == metrics.SMALL_MAXLEN
    assert writer.GAP_STREAM_MAXLEN == dead.GAPS_MAXLEN


def test_metrics_need_the_token_or_an_ops_sign_in(
    client: FlaskClient, operator: LocalAccount
) -> None:
    refused = client.get("/metrics")
    assert (refused.status_code, refused.json["error"]) == (401, "unauthorized")
    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401
    basic = client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    web_token = login(client, operator, "web").json["access_token"]
    assert client.get("/metrics", headers={"Authorization": f"Bearer {web_token}"}
                      ).json["error"] == "wrong_audience"  # fmt: skip
    ops_token = login(client, operator, "ops").json["access_token"]
    assert "tp_stream_length" in scrape(client, ops_token)
    assert "tp_stream_length" in scrape(client)


def test_the_token_setting_is_checked(make_settings: Callable[..., Settings]) -> None:
    from core.config import ConfigError

    with pytest.raises(ConfigError) as short:
        make_settings(TP_METRICS_TOKEN="short")
    assert "TP_METRICS_TOKEN" in str(short.value)
    assert "short" not in str(short.value).split("TP_METRICS_TOKEN", 1)[1]  # never echoed
    assert make_settings().web.metrics_token is None


def test_liveness_and_readiness(
    client: FlaskClient, workers: Workers, make_settings: Callable[..., Settings]
) -> None:
    assert client.get("/livez").json == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["missing"] == []

    # Both Dramatiq processes have reported (their first report may trail their start-up).
    def reported() -> Any:
        resp = client.get("/readyz?require=feeder,worker")
        return (
            resp.json["processes"].get("worker") == resp.json["processes"].get("signals") == 1
            and resp
        )

    waiting = wait_for("worker and signals reports", reported)
    assert waiting.status_code == 503
    assert waiting.json["missing"] == ["feeder"]  # the worker reports: only the feeder lacks
    assert waiting.json["processes"]["worker"] == 1
    assert waiting.json["processes"]["signals"] == 1
    assert client.get("/readyz?require=nonsense").status_code == 400

    with socket.socket() as s:  # a port nothing listens on: Redis is down for this app
        s.bind(("127.0.0.1", 0))
        dead_url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    offline = create_app(make_settings(REDIS_URL=dead_url), start_pump=False).test_client()
    assert offline.get("/livez").status_code == 200
    down = offline.get("/readyz")
    assert down.status_code == 503
    assert down.json["status"] == "not_ready"
    assert down.json["missing"] == ["redis"]
    assert "unreachable" in down.json["redis"]


def test_worker_health_reports_and_leaves(
    settings: Settings, workers: Workers, r: redis.Redis, keys: Keys, client: FlaskClient
) -> None:
    reports = wait_for(
        "two reports",
        lambda: (
            len(r.hgetall(keys.worker_health())) == 2
            and {k.decode(): orjson.loads(v) for k, v in r.hgetall(keys.worker_health()).items()}
        ),
    )
    by_role = {rep["role"]: rep for rep in reports.values()}
    assert by_role["worker"]["queues"] == ["metricstest"]
    assert by_role["signals"]["queues"] == ["signals"]
    assert by_role["worker"]["threads"] == 1
    workers.signals.send("ok-2")
    wait_for("the signals report counting it", lambda: orjson.loads(
        r.hget(keys.worker_health(), by_role["signals"]["name"]) or b"{}"
    ).get("actors", {}).get("metrics_probe", {}).get("processed") == 1)  # fmt: skip
    workers.stop()
    assert r.hlen(keys.worker_health()) == 0  # a stopped worker removes its report
    workers.workers, workers.brokers = [], []  # already stopped
