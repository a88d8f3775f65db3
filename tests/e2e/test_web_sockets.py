"""Market data over Socket.IO from a served web process: real clients, real pipeline updates."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import socketio

from core.schemas import Candle, decode
from tests.e2e.repairs import repair_candle
from tests.e2e.webstack import WebStack, sign_in
from web.market import candle_json


class Refused(Exception):
    """The server refused the connection; args[0]: the connect_error data received."""


class Watcher:
    """A python-socketio client that records every event in arrival order."""

    def __init__(self, url: str, token: str | None = None, *, origin: str | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        # Every web process serves the site's one origin (behind a load balancer).
        extra = {"origin": origin} if origin else {}
        self.sio = socketio.Client(reconnection=False, websocket_extra_options=extra)
        self.sio.on("*", self._record)
        self.disconnected = threading.Event()
        self.sio.on("disconnect", lambda *a: self.disconnected.set())
        self.sio.on("connect_error", lambda data=None: self._record("connect_error", data))
        try:
            self.sio.connect(url, transports=["websocket"], wait_timeout=10,
                             auth={"token": token} if token else None)  # fmt: skip
        except socketio.exceptions.ConnectionError as exc:
            raise Refused(self.of("connect_error")) from exc

    def _record(self, event: str, data: Any = None) -> None:
        with self.lock:
            self.events.append((event, data))

    def call(self, event: str, data: Any) -> Any:
        return self.sio.call(event, data, timeout=10)

    def of(self, event: str) -> list[Any]:
        with self.lock:
            return [d for e, d in self.events if e == event]

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 20) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; events: {self.events[-5:]}")

    def close(self) -> None:
        self.sio.disconnect()


def md_rooms(w: Watcher, room: str) -> list[dict[str, Any]]:
    return [m["rooms"][room] for m in w.of("md") if room in m["rooms"]]


@pytest.mark.timeout(150)
def test_snapshot_then_live_updates_that_converge_to_the_stored_candles(
    web_stack: WebStack,
) -> None:
    stack = web_stack
    symbols = httpx.get(f"{stack.base_url}/api/symbols").json()["symbols"]
    sym = symbols[0]
    _, login = sign_in(httpx.Client(base_url=stack.base_url))
    w = Watcher(stack.base_url, login.json()["access_token"])
    stack.pipeline.wait_for(
        "1 s candles", lambda: stack.redis.zcard(stack.keys.candles(sym, "1s")) > 3
    )

    ack = w.call("subscribe", {"channel": "candles", "symbol": sym, "timeframe": "1s"})
    assert ack == {"ok": True, "room": f"c:{sym}:1s"}
    kinds = [e for e, _ in w.events]
    assert kinds[0] == "snapshot"  # before any live message of the room
    snapshot = w.of("snapshot")[0]["candles"]
    assert len(snapshot) > 3
    assert [c["open_time"] for c in snapshot] == sorted(
        c["open_time"] for c in snapshot)  # fmt: skip
    assert {"open", "high", "low", "close", "volume", "closed", "source"} <= snapshot[-1].keys()

    # Live: messages keep coming, one per tick at most, each newer or equal to the last seen.
    def closed_live() -> set[int]:
        return {c["open_time"] for r in md_rooms(w, f"c:{sym}:1s") for c in r["data"]
                if c["closed"]}  # fmt: skip

    w.wait("four candles closing live", lambda: len(closed_live()) >= 4)
    sent = [m["t"] for m in w.of("md")]
    assert sent == sorted(sent)
    # (One message per client per tick is the registry's rule: tests/unit/test_web_rooms.py.)
    merged = {c["open_time"]: c for c in snapshot}
    for room in md_rooms(w, f"c:{sym}:1s"):
        assert room["at"] > 0
        assert room["data"]
        for c in room["data"]:
            assert c["open_time"] >= snapshot[-1]["open_time"] - 1000  # no stale history
            merged[c["open_time"]] = c
    # What the client holds equals what the pipeline stored (closed candles are final).
    time.sleep(1.5)
    for room in md_rooms(w, f"c:{sym}:1s")[-5:]:
        for c in room["data"]:
            merged[c["open_time"]] = c
    stored = {c.open_time_ms: c for c in (decode(m, Candle) for m in
              stack.redis.zrange(stack.keys.candles(sym, "1s"), 0, -1))}  # fmt: skip
    checked = 0
    for t, c in merged.items():
        s = stored.get(t)
        if c["closed"] and s is not None and s.closed:
            assert (c["open"], c["high"], c["low"], c["close"], c["volume"], c["trades"]) == (
                format(s.open, "f"), format(s.high, "f"), format(s.low, "f"),
                format(s.close, "f"), format(s.volume, "f"), s.trades), (t, c, s)  # fmt: skip
            checked += 1
    assert checked >= 6, checked

    # Signals and the book ticker: snapshot, then live.
    ack = w.call("subscribe", {"channel": "signals", "symbol": sym, "timeframe": "1s"})
    assert ack["ok"], ack
    w.wait("signals live", lambda: md_rooms(w, f"s:{sym}:1s"), timeout_s=30)
    live = md_rooms(w, f"s:{sym}:1s")[-1]["data"]
    assert {s["signal"] for s in live} <= {"rsi_1s", "ema_1s"}
    assert all(s["state"] in ("long", "short", "flat") for s in live)
    assert w.call("subscribe", {"channel": "book", "symbol": sym})["ok"]
    book = w.wait("book live", lambda: md_rooms(w, f"b:{sym}"))[-1]["data"]
    assert book["symbol"] == sym
    assert float(book["bid"]) <= float(book["ask"])

    # Unsubscribing stops a room's messages.
    assert w.call("unsubscribe", {"channel": "candles", "symbol": sym, "timeframe": "1s"})["ok"]
    time.sleep(0.3)
    before = len(md_rooms(w, f"c:{sym}:1s"))
    time.sleep(1.5)
    assert len(md_rooms(w, f"c:{sym}:1s")) == before
    w.close()


@pytest.mark.timeout(150)
def test_bad_subscriptions_unauthorised_and_expired_connections_are_refused(
    web_stack: WebStack,
) -> None:
    stack = web_stack
    url = stack.base_url
    sym = httpx.get(f"{url}/api/symbols").json()["symbols"][0]
    anon = Watcher(url)  # anonymous read-only is on in this process
    refusals = {
        "unknown_symbol": {"channel": "candles", "symbol": "NOPEUSDT", "timeframe": "1s"},
        "unknown_timeframe": {"channel": "candles", "symbol": sym, "timeframe": "7m"},
        "bad_request": {"channel": "orders", "symbol": sym},
    }
    for code, request in refusals.items():
        ack = anon.call("subscribe", request)
        assert (ack["ok"], ack["error"]) == (False, code), ack
    assert anon.call("subscribe", "junk")["error"] == "bad_request"
    # A channel that is not a string (unhashable, once a TypeError with no answer) is refused.
    for channel in (["candles"], {"a": 1}, None, 7):
        for event in ("subscribe", "unsubscribe"):
            ack = anon.call(event, {"channel": channel, "symbol": sym, "timeframe": "1s"})
            assert ack["error"] == "bad_request", (event, channel, ack)
    # The per-connection limit (TP_WEB_MAX_SUBSCRIPTIONS=6 in this stack).
    symbols = httpx.get(f"{url}/api/symbols").json()["symbols"]
    acks = [anon.call("subscribe", {"channel": "book", "symbol": s}) for s in symbols]
    acks.append(anon.call("subscribe", {"channel": "candles", "symbol": sym, "timeframe": "1m"}))
    assert [a["ok"] for a in acks] == [True] * 6 + [False]
    assert acks[-1]["error"] == "too_many_subscriptions"
    anon.close()

    # A process that requires sign-in refuses anonymous and bad tokens at connect.
    closed = stack.start_web(TP_WEB_ANONYMOUS="0", TP_ACCESS_TTL_S="6")
    for token, code in ((None, "unauthorized"), ("not-a-jwt", "invalid_token")):
        with pytest.raises(Refused) as refused:
            Watcher(closed.base_url, token, origin=stack.origin)
        assert refused.value.args[0][0]["data"] == {"error": code}, refused.value
    http = httpx.Client(base_url=closed.base_url)
    _, login = sign_in(http)
    expiring = Watcher(closed.base_url, login.json()["access_token"], origin=stack.origin)
    assert expiring.call("subscribe", {"channel": "book", "symbol": sym})["ok"]

    # Another client refreshes before its token ends and stays connected.
    http2 = httpx.Client(base_url=closed.base_url)
    _, login2 = sign_in(http2)
    kept = Watcher(closed.base_url, login2.json()["access_token"], origin=stack.origin)
    time.sleep(2)
    fresh = http2.post("/auth/refresh").json()["access_token"]
    assert kept.call("reauth", {"token": fresh})["ok"]

    expiring.wait("auth_expired", lambda: expiring.of("auth_expired"), timeout_s=15)
    assert expiring.of("auth_expired")[0] == {"reason": "token_expired"}
    assert expiring.disconnected.wait(5)
    time.sleep(1)
    assert not kept.disconnected.is_set()
    assert kept.call("subscribe", {"channel": "book", "symbol": sym})["ok"]
    kept.close()


@pytest.mark.timeout(150)
def test_logout_in_one_web_process_disconnects_the_sockets_of_another(web_stack: WebStack) -> None:
    stack = web_stack
    other = stack.start_web()
    http_a = httpx.Client(base_url=stack.base_url)
    _, login = sign_in(http_a)
    token = login.json()["access_token"]
    on_b = Watcher(other.base_url, token, origin=stack.origin)  # connected to the second process
    sym = httpx.get(f"{other.base_url}/api/symbols").json()["symbols"][0]
    assert on_b.call("subscribe", {"channel": "book", "symbol": sym})["ok"]
    out = http_a.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 204
    # Told through the Socket.IO Redis queue, then disconnected by its own process.
    on_b.wait("auth_revoked", lambda: on_b.of("auth_revoked"), timeout_s=10)
    assert on_b.disconnected.wait(10)
    # Health is reported every 2 s: wait for a report from each process that counts it.
    deadline = time.monotonic() + 10
    while True:
        health = stack.web_health()
        if len(health) == 2 and sum(h["revoked"] for h in health.values()) >= 1:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.2)


class Chart:
    """Holds one candle room as the page's chart does (web/static/app.js): the latest candle per
    open time from snapshots and ``md``; a live candle older than every held one is of a range
    not held; every (re)subscription asks ``since`` the oldest held candle that may still
    change, and a room listed in ``md.resync`` is subscribed to again."""

    def __init__(self, url: str, token: str, origin: str, sub: dict[str, str]) -> None:
        self.url, self.token, self.origin, self.sub = url, token, origin, sub
        self.room = f"c:{sub['symbol']}:{sub['timeframe']}"
        self.held: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False,
                                   websocket_extra_options={"origin": origin})  # fmt: skip
        self.sio.on("connect", lambda: self.sio.emit("subscribe", self.subscription()))
        self.sio.on("snapshot", self._snapshot)
        self.sio.on("md", self._md)

    def connect(self) -> None:
        self.sio.connect(self.url, transports=["websocket"], wait_timeout=10,
                         auth={"token": self.token})  # fmt: skip

    def subscription(self) -> dict[str, Any]:
        with self.lock:
            changing = [t for t, c in self.held.items()
                        if not (c["closed"] and c["source"] == "exchange")]  # fmt: skip
            since = min(changing, default=max(self.held, default=None))
        return self.sub if since is None else {**self.sub, "since": since}

    def _snapshot(self, msg: dict[str, Any]) -> None:
        if msg["room"] == self.room:
            with self.lock:
                if msg.get("truncated"):
                    first = msg["candles"][0]["open_time"]
                    self.held = {t: c for t, c in self.held.items() if t >= first}
                self.held.update((c["open_time"], c) for c in msg["candles"])

    def _md(self, msg: dict[str, Any]) -> None:
        with self.lock:
            oldest = min(self.held, default=0)
            for c in msg["rooms"].get(self.room, {}).get("data", []):
                if c["open_time"] >= oldest:
                    self.held[c["open_time"]] = c
        if self.room in msg.get("resync", ()):
            self.sio.emit("subscribe", self.subscription())

    def candle(self, open_time: int) -> dict[str, Any] | None:
        with self.lock:
            return self.held.get(open_time)

    def closed(self) -> list[int]:
        with self.lock:
            return sorted(t for t, c in self.held.items() if c["closed"])


@pytest.mark.timeout(150)
def test_a_chart_gets_the_repairs_of_old_candles_it_holds_across_a_disconnect(
    web_stack: WebStack,
) -> None:
    # Issue 16: a candle repaired while the client was away, older than a snapshot reaches, and
    # one repaired while it is connected, older than its room keeps, both reach it.
    stack = web_stack
    web = stack.start_web(TP_WEB_SNAPSHOT_CANDLES="3")
    sym = httpx.get(f"{web.base_url}/api/symbols").json()["symbols"][0]
    _, login = sign_in(httpx.Client(base_url=web.base_url))
    sub = {"channel": "candles", "symbol": sym, "timeframe": "1s"}
    keeper = Watcher(web.base_url, origin=stack.origin)  # keeps the room and its newest candles
    assert keeper.call("subscribe", sub)["ok"]
    chart = Chart(web.base_url, login.json()["access_token"], stack.origin, sub)
    chart.connect()
    p = stack.pipeline  # its wait_for also checks that the pipeline's processes are alive
    p.wait_for("6 closed candles held", lambda: len(chart.closed()) >= 6, timeout_s=30)
    chart.sio.disconnect()
    target = chart.closed()[0]  # 6+ s older than the newest: no 3-candle snapshot has it
    stored = repair_candle(stack, sym, "1s", target)
    assert chart.candle(target) != stored
    chart.connect()  # as the page does: subscribe again, since its oldest changing candle
    p.wait_for("the repair held", lambda: chart.candle(target) == stored, timeout_s=10)

    # Connected: a repair older than the few candles its room keeps passes through to it.
    second = chart.closed()[1]
    stored2 = repair_candle(stack, sym, "1s", second)
    p.wait_for("the live repair held", lambda: chart.candle(second) == stored2, timeout_s=10)
    # And it holds what Redis holds, candle for candle (but the newest, still arriving).
    time.sleep(1)
    with chart.lock:
        mine = dict(chart.held)
    newest = max(mine)
    for raw in stack.redis.zrangebyscore(stack.keys.candles(sym, "1s"), target, newest - 3000):
        c = candle_json(orjson.loads(raw))
        assert c is not None
        assert mine.get(c["open_time"]) == c, (c, mine.get(c["open_time"]))
    # The process reports the repairs it passed on (every 2 s).
    p.wait_for("late in web health",
               lambda: any(h.get("late") for h in stack.web_health().values()))  # fmt: skip
    chart.sio.disconnect()
    keeper.close()


def loads(data: Any) -> Any:
    return orjson.loads(data)
