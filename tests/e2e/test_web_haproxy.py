"""Two web processes behind HAProxy with no session affinity, as Heroku's router (issue 17).

One stack for the module: the simulator, the pipeline (1 s candles), the execution process, two
gunicorn web processes A and B, and HAProxy (demo/haproxy.py) balancing them round robin. The
site's origin is HAProxy's URL. Each test asserts what a user would notice:

* clients spread over both processes each get every closed candle of their subscriptions, equal
  to what Redis holds, whichever process they landed on;
* a user's order placed through A reaches their socket on B;
* when B is killed, its clients reconnect through HAProxy to A and keep getting every candle.

Which process holds a socket is read off HAProxy's ``X-Served-By`` header on the websocket
handshake, and checked against each process's client count in ``<ns>:web:health``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
import psutil
import pytest
import socketio

from demo.haproxy import SERVED_BY, HAProxy, server_name
from demo.redis_server import RedisServer
from tests.conftest import EXTERNAL_URL
from tests.e2e.conftest import RunningSim, sim_config
from tests.e2e.pipeline import Pipeline, Service, stop_all
from tests.e2e.tradestack import KEK, SYMBOLS, Trader, TradeStack
from tests.e2e.webstack import WebProcess, WebStack, free_port, start_web_stack
from web.market import candle_json

CLIENTS = 8
WINDOW = 4  # closed 1 s candles compared per symbol


class Feed:
    """A python-socketio client subscribed to the 1 s candles of SYMBOLS.

    It subscribes on every connection, a reconnection too (as the page does), and keeps the last
    closed value of each candle its live messages carried, by (symbol, open time).
    """

    def __init__(self, url: str, *, reconnection: bool = False) -> None:
        self.lock = threading.Lock()
        self.closed: dict[tuple[str, int], dict[str, Any]] = {}
        self.served_by: list[str | None] = []  # the server of each connection, in order
        self.acks: list[tuple[int, Any]] = []  # (connection number, subscribe's answer)
        self.disconnects = 0
        self.sio = socketio.Client(reconnection=reconnection, reconnection_delay=0.2,
                                   reconnection_delay_max=1)  # fmt: skip
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("md", self._on_md)
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)

    def _on_connect(self) -> None:
        headers = self.sio.eio.ws.getheaders() or {}  # the websocket handshake's answer
        with self.lock:
            self.served_by.append(headers.get(SERVED_BY.lower()))
            n = len(self.served_by)
        for symbol in SYMBOLS:
            self.sio.emit("subscribe", {"channel": "candles", "symbol": symbol, "timeframe": "1s"},
                          callback=lambda ack, n=n: self._on_ack(n, ack))  # fmt: skip

    def _on_ack(self, n: int, ack: Any) -> None:
        with self.lock:
            self.acks.append((n, ack))

    def _on_disconnect(self, *_: Any) -> None:
        with self.lock:
            self.disconnects += 1

    def _on_md(self, message: dict[str, Any]) -> None:
        with self.lock:
            for room, update in message["rooms"].items():
                kind, symbol, *_ = room.split(":")
                if kind != "c":
                    continue
                for candle in update["data"]:
                    if candle["closed"]:
                        self.closed[(symbol, candle["open_time"])] = candle

    @property
    def server(self) -> str | None:
        """The server of the current connection."""
        with self.lock:
            return self.served_by[-1] if self.served_by else None

    def subscribed(self) -> bool:
        """Both subscriptions of the current connection answered ok."""
        with self.lock:
            n = len(self.served_by)
            return sum(1 for c, a in self.acks if c == n and a.get("ok")) == len(SYMBOLS)

    def candle(self, symbol: str, open_time: int) -> dict[str, Any] | None:
        with self.lock:
            return self.closed.get((symbol, open_time))

    def close(self) -> None:
        self.sio.disconnect()


@dataclass
class Cluster:
    web: WebStack
    trade: TradeStack
    proxy: HAProxy

    @property
    def a(self) -> WebProcess:
        return self.web.webs[0]

    @property
    def b(self) -> WebProcess:
        return self.web.webs[1]

    def services(self) -> list[Service]:
        return [w.service for w in self.web.webs] + self.web.pipeline.services() + [
            s for s in (self.trade.execution,) if s is not None]  # fmt: skip

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 20) -> Any:
        """Return check()'s first truthy result; fail (with the logs) past the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.1)
        logs = "".join(f"\n--- {s.name}\n{s.tail()[-1500:]}" for s in self.services())
        raise AssertionError(f"timed out waiting for {what}{logs}\n--- haproxy\n"
                             f"{self.proxy.tail()}")  # fmt: skip

    def health_clients(self, web: WebProcess) -> int | None:
        """The clients ``web`` reports in web:health (its gunicorn worker's entry)."""
        workers = psutil.Process(web.service.proc.pid).children()  # type: ignore[union-attr]
        health = self.web.web_health()
        for worker in workers:
            for name, report in health.items():
                if name.endswith(f"-{worker.pid}"):
                    return int(report["clients"])
        return None

    def stored(self, symbol: str, start_ms: int, end_ms: int) -> dict[int, dict[str, Any]]:
        """The closed 1 s candles Redis holds with open times in [start_ms, end_ms)."""
        raw = self.web.redis.zrangebyscore(self.web.keys.candles(symbol, "1s"), start_ms,
                                           end_ms - 1)  # fmt: skip
        out = {}
        for member in raw:
            c = candle_json(orjson.loads(member))
            if c is not None and c["closed"] and start_ms <= c["open_time"] < end_ms:
                out[c["open_time"]] = c
        return out


@pytest.fixture(scope="module")
def cluster(
    _redis_session: RedisServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    if _redis_session is not None and not _redis_session.running:
        _redis_session.start()
    redis_url = _redis_session.url if _redis_session is not None else EXTERNAL_URL
    assert redis_url
    namespace = f"t{uuid.uuid4().hex[:10]}"  # the database is shared: touch only this one
    tmp = tmp_path_factory.mktemp("haproxy")
    sim = RunningSim(sim_config(rate=40.0, symbols=SYMBOLS))
    proxy_port = free_port()
    origin = f"http://127.0.0.1:{proxy_port}"  # the site's URL: the load balancer's
    pipelines: list[Pipeline] = []

    def pipeline(s: RunningSim, **env: str) -> Pipeline:
        pipelines.append(Pipeline(s, redis_url, namespace, tmp, **env))
        return pipelines[-1]

    web: WebStack | None = None
    trade: TradeStack | None = None
    proxy: HAProxy | None = None
    try:
        web = start_web_stack(
            sim, pipeline, tmp, TP_WEB_ORIGIN=origin, TP_SIGNALS_FILE="none",
            TP_KEY_ENCRYPTION_KEY=KEK, TP_LOGIN_PER_MINUTE_ADDRESS="1000",
            TP_SYMBOLS=",".join(SYMBOLS), TP_EXEC_TIMEOUT_MS="1500", TP_EXEC_RECONCILE_S="5",
            TP_TRADE_REPLY_TIMEOUT_MS="8000",
        )  # fmt: skip
        web.origin = origin
        web.start_web()
        trade = TradeStack(sim, web.redis, web.keys, web.env, tmp, proxy_port)
        trade.start_execution()
        proxy = HAProxy(tmp / "haproxy", [w.port for w in web.webs], proxy_port,
                        check_interval_ms=500)  # fmt: skip
        proxy.start()
        web.pipeline.wait_for("1 s candles", lambda: all(
            web.redis.zcard(web.keys.candles(s, "1s")) > 2 for s in SYMBOLS))  # fmt: skip
        yield Cluster(web, trade, proxy)
    finally:
        services = [*(w.service for w in web.webs)] if web else []
        services += [s for p in pipelines for s in p.services()]
        if trade is not None and trade.execution is not None:
            services.append(trade.execution)
        stop_all(services)
        if proxy is not None:
            proxy.stop()
        sim.stop()
        for p in pipelines:
            for key in p.redis.scan_iter(match=f"{namespace}:*", count=1000):
                p.redis.delete(key)
            p.redis.close()


def feeds_equal_redis(
    cluster: Cluster, feeds: list[Feed], start_ms: int
) -> dict[str, dict[int, dict[str, Any]]]:
    """Wait for WINDOW closed candles per symbol from ``start_ms`` in Redis, then until every
    feed holds each of them, equal to Redis's; return them (by symbol, then open time).

    A second without trades has no candle: the window is the first WINDOW candles Redis holds.
    """

    def ends() -> dict[str, int] | None:
        out = {}
        for s in SYMBOLS:
            opens = sorted(cluster.stored(s, start_ms, start_ms + 60_000))
            if len(opens) < WINDOW:
                return None
            out[s] = opens[WINDOW - 1] + 1
        return out

    end_ms: dict[str, int] = cluster.wait("the window's candles closed in Redis", ends)

    def window() -> dict[str, dict[int, dict[str, Any]]]:
        return {s: cluster.stored(s, start_ms, end_ms[s]) for s in SYMBOLS}

    def differences() -> list[str]:
        out = []
        for s, stored in window().items():
            for i, feed in enumerate(feeds):
                for t, candle in stored.items():
                    got = feed.candle(s, t)
                    if got != candle:
                        out.append(f"client {i} on {feed.server}: {s} {t}: {got} != {candle}")
        return out

    with contextlib.suppress(AssertionError):
        cluster.wait("every client to hold every closed candle", lambda: not differences())
    left = differences()
    assert not left, f"{len(left)} differences:\n" + "\n".join(left[:10])
    return window()


def next_second_ms() -> int:
    return (time.time_ns() // 1_000_000 // 1000 + 1) * 1000


@pytest.mark.timeout(180)
def test_clients_spread_over_both_processes_get_the_same_candles(cluster: Cluster) -> None:
    a, b = server_name(cluster.a.port), server_name(cluster.b.port)
    feeds = [Feed(cluster.proxy.url) for _ in range(CLIENTS)]
    try:
        cluster.wait("every subscription answered", lambda: all(f.subscribed() for f in feeds))
        start_ms = next_second_ms()  # every client is subscribed before this candle opens
        spread = Counter(f.server for f in feeds)
        assert set(spread) == {a, b}, spread  # no affinity: both processes hold clients
        # Each process counts the clients HAProxy says it gave it (its web:health entry).
        cluster.wait("web:health to count each process's clients", lambda: (
            cluster.health_clients(cluster.a), cluster.health_clients(cluster.b)
        ) == (spread[a], spread[b]), timeout_s=10)  # fmt: skip

        compared = feeds_equal_redis(cluster, feeds, start_ms)
        on_a = [f for f in feeds if f.server == a]
        on_b = [f for f in feeds if f.server == b]
        for s, candles in compared.items():
            assert len(candles) == WINDOW
            for t in candles:
                assert {orjson.dumps(f.candle(s, t)) for f in on_a} == {
                    orjson.dumps(f.candle(s, t)) for f in on_b}  # fmt: skip
    finally:
        for f in feeds:
            f.close()


@pytest.mark.timeout(120)
def test_an_order_placed_through_one_process_reaches_the_socket_on_the_other(
    cluster: Cluster,
) -> None:
    # REST (sign-in, link, order) on A; the user's only socket on B.
    trader = Trader(cluster.trade, rest_url=cluster.a.base_url, socket_url=cluster.b.base_url)
    try:
        # The user's only socket is B's: A holds no client at all.
        cluster.wait("web:health: the socket on B, none on A", lambda: (
            cluster.health_clients(cluster.a), cluster.health_clients(cluster.b)) == (0, 1),
            timeout_s=10)  # fmt: skip
        linked = trader.link_hmac(cluster.trade.exchange_account())
        assert linked.status_code == 200, linked.text
        assert linked.json()["ok"] is True, linked.text
        resp = trader.post("/api/orders", symbol="BTCUSDT", side="BUY", type="MARKET",
                           quantity="0.010")  # fmt: skip
        assert resp.status_code == 200, resp.text
        order = resp.json()["order"]
        assert order["status"] == "FILLED", order
        cid = order["client_order_id"]

        def events_of(kind: str) -> list[dict[str, Any]]:
            with trader._lock:
                events = [e["data"] for e in trader.events if e["kind"] == kind]
            return [e for e in events if e.get("client_order_id") == cid]

        def filled_qty() -> Decimal:
            return sum((Decimal(f["qty"]) for f in events_of("fill")), Decimal(0))

        def statuses() -> set[str]:
            return {e["status"] for e in events_of("order")}

        cluster.wait("the order's FILLED event on B", lambda: "FILLED" in statuses())
        cluster.wait("the order's fills on B", lambda: filled_qty() == Decimal("0.01"))
    finally:
        trader.close()


@pytest.mark.timeout(120)
def test_clients_of_a_killed_process_reconnect_to_the_survivor_and_keep_getting_candles(
    cluster: Cluster,
) -> None:
    a, b = server_name(cluster.a.port), server_name(cluster.b.port)
    feeds = [Feed(cluster.proxy.url, reconnection=True) for _ in range(CLIENTS)]
    try:
        cluster.wait("every subscription answered", lambda: all(f.subscribed() for f in feeds))
        was_on_b = [f for f in feeds if f.server == b]
        assert was_on_b, Counter(f.server for f in feeds)

        cluster.b.service.kill9()  # SIGKILL, the gunicorn master and its worker
        cluster.wait("B's clients disconnected", lambda: all(f.disconnects for f in was_on_b))
        cluster.wait("every client connected to A and subscribed", lambda: all(
            f.server == a and f.subscribed() for f in feeds))  # fmt: skip
        assert all(f.disconnects == 0 for f in feeds if f not in was_on_b)
        start_ms = next_second_ms()
        cluster.wait(
            "web:health: A holds every client",
            lambda: cluster.health_clients(cluster.a) == CLIENTS,
            timeout_s=10,
        )
        feeds_equal_redis(cluster, feeds, start_ms)
    finally:
        for f in feeds:
            f.close()
        restart(cluster, cluster.b)


def restart(cluster: Cluster, web: WebProcess) -> None:
    """Start ``web`` again on its port, so a later test finds both processes up."""
    if web.service.alive():
        return
    web.service.start()

    def up() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{web.base_url}/livez", timeout=2).status_code == 200
        return False

    cluster.wait(f"{web.port} back", up, timeout_s=30)
