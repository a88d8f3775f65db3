"""The simulator's websocket URLs, control messages and connection limits, with real clients."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from simulator.ws_server import WsLimits
from tests.e2e.conftest import RawWs, RunningSim, loads

AGG_FIELDS = ["e", "E", "a", "s", "p", "q", "nq", "f", "l", "T", "m"]


def collect(ws: ClientConnection, seconds: float) -> list[dict]:
    """Return every message received within ``seconds``."""
    out: list[dict] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            out.append(loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return out


def reply(ws: ClientConnection, request: dict) -> dict:
    """Send a control message and return its reply (skipping market data)."""
    ws.send(json.dumps(request))
    while True:
        msg = loads(ws.recv(timeout=5))
        if "id" in msg:
            return msg


def closed_with(ws: ClientConnection) -> ConnectionClosed:
    """Read until the server closes; return how it closed (fail if it never does)."""
    try:
        for _ in range(100_000):
            ws.recv(timeout=10)
    except ConnectionClosed as exc:
        return exc
    raise AssertionError("the server never closed the connection")


def test_raw_and_combined_url_forms_deliver_full_payloads(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}/market/ws/btcusdt@aggTrade/ethusdt@aggTrade") as ws:
        msgs = collect(ws, 0.8)
    assert {m["s"] for m in msgs} == {"BTCUSDT", "ETHUSDT"}
    assert all(list(m) == AGG_FIELDS for m in msgs)
    with connect(f"{sim.ws_url}/market/stream?streams=btcusdt@aggTrade/btcusdt@kline_1m") as ws:
        msgs = collect(ws, 0.8)
    assert {m["stream"] for m in msgs} == {"btcusdt@aggTrade", "btcusdt@kline_1m"}
    kline = next(m["data"] for m in msgs if m["stream"] == "btcusdt@kline_1m")
    assert kline["e"] == "kline"
    assert kline["k"]["B"] == "0"
    assert kline["k"]["i"] == "1m"


def test_a_stream_on_the_wrong_route_is_acknowledged_then_silent(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}/public/ws/btcusdt@bookTicker/btcusdt@aggTrade") as ws:
        assert reply(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 1}) == {
            "result": None,
            "id": 1,
        }
        msgs = collect(ws, 0.8)
    assert msgs
    assert {m["e"] for m in msgs} == {"bookTicker"}


def test_unrouted_legacy_urls_deliver_public_streams_only(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}/ws/btcusdt@trade/btcusdt@aggTrade/btcusdt@markPrice@1s") as ws:
        msgs = collect(ws, 0.8)
    assert msgs
    assert {m["e"] for m in msgs} == {"trade"}
    with connect(f"{sim.ws_url}/stream?streams=btcusdt@bookTicker/btcusdt@kline_1m") as ws:
        msgs = collect(ws, 0.8)
    assert msgs
    assert {m["stream"] for m in msgs} == {"btcusdt@bookTicker"}


@pytest.mark.parametrize(
    "path", ["/market/ws/btcusdt@nonsense", "/ws?btcusdt@depth", "/market/ws/BTCUSDT@aggTrade"]
)
def test_an_invalid_url_is_closed_with_1008(sim: RunningSim, path: str) -> None:
    with connect(f"{sim.ws_url}{path}") as ws:
        exc = closed_with(ws)
    assert exc.rcvd is not None
    assert exc.rcvd.code == 1008
    assert loads(exc.rcvd.reason) == {"code": -1, "msg": "Illegal format ws or stream"}


def test_control_messages_and_their_exact_replies(sim_factory: Callable[..., RunningSim]) -> None:
    sim = sim_factory(limits=WsLimits(msg_rate=1000))
    with connect(f"{sim.ws_url}/market/ws") as ws:
        sub = {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 1}
        assert reply(ws, sub) == {"result": None, "id": 1}
        assert reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {
            "result": ["btcusdt@aggTrade", "btcusdt@depth"],
            "id": 3,
        }
        unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 312}
        assert reply(ws, unsub) == {"result": None, "id": 312}
        get = {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}
        assert reply(ws, get) == {"result": False, "id": 2}
        assert reply(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}) == {
            "result": None,
            "id": 5,
        }
        assert reply(ws, get) == {"result": True, "id": 2}
        wrapped = collect(ws, 1.0)
        assert wrapped
        assert all(m.get("stream") == "btcusdt@aggTrade" for m in wrapped)

        def error(request: dict | str) -> dict:
            ws.send(request if isinstance(request, str) else json.dumps(request))
            while True:
                msg = loads(ws.recv(timeout=5))
                if "error" in msg:
                    return msg["error"]

        assert error("{not json")["code"] == 3
        assert error("{not json")["msg"].startswith("Invalid JSON: expected value at line 1 column")
        bad = error({"method": "SUBSCRIBEE", "params": [], "id": 1})
        assert bad["code"] == 2
        assert bad["msg"].startswith(
            "Invalid request: unknown variant `SUBSCRIBEE`, expected one of `SUBSCRIBE`, "
            "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column"
        )
        missing = error({"params": [], "id": 1})
        assert missing["msg"].startswith("Invalid request: missing field `method` at line 1")
        assert error({"method": "SUBSCRIBE", "params": [], "id": "x"}) == {
            "code": 2,
            "msg": "Invalid request: request ID must be an unsigned integer",
        }
        assert error({"method": "SET_PROPERTY", "params": ["combined", 1], "id": 6}) == {
            "code": 1,
            "msg": "Invalid value type: expected Boolean",
        }
        assert error({"method": "GET_PROPERTY", "params": ["colour"], "id": 7}) == {
            "code": 0,
            "msg": "Unknown property",
        }
        assert error({"method": "GET_PROPERTY", "params": [5], "id": 8}) == {
            "code": 2,
            "msg": "Invalid request: property name must be a string",
        }
        assert error({"method": "SET_PROPERTY", "params": ["combined", True, 1], "id": 9}) == {
            "code": 2,
            "msg": "Invalid request: too many parameters",
        }
        assert error({"method": "SUBSCRIBE", "params": ["btcusdt@bogus"], "id": 10})["code"] == 2
        # the connection survives every error
        assert reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 11})["result"] == [
            "btcusdt@aggTrade"
        ]


def test_stream_limit_per_connection(sim_factory: Callable[..., RunningSim]) -> None:
    sim = sim_factory(limits=WsLimits(max_streams=3))
    streams = "/".join(f"{s}@aggTrade" for s in ("btcusdt", "ethusdt", "bchusdt", "xrpusdt"))
    with connect(f"{sim.ws_url}/market/stream?streams={streams}") as ws:
        assert closed_with(ws).rcvd.code == 1008  # type: ignore[union-attr]
    with connect(f"{sim.ws_url}/market/ws/btcusdt@aggTrade/ethusdt@aggTrade") as ws:
        msg = reply(ws, {"method": "SUBSCRIBE", "params": ["a@trade", "b@trade"], "id": 4})
        assert msg["error"]["code"] == 2
        assert reply(ws, {"method": "SUBSCRIBE", "params": ["a@trade"], "id": 5})["result"] is None


def test_too_many_incoming_messages_close_with_1008(sim_factory: Callable[..., RunningSim]) -> None:
    sim = sim_factory(limits=WsLimits(msg_rate=3))
    with connect(f"{sim.ws_url}/market/ws") as ws:
        for k in range(6):
            try:
                ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": k}))
            except ConnectionClosed:
                break
        exc = closed_with(ws)
    assert exc.rcvd is not None
    assert (exc.rcvd.code, exc.rcvd.reason) == (1008, "Too many requests")


def test_server_pings_and_drops_a_client_that_never_pongs(
    sim_factory: Callable[..., RunningSim],
) -> None:
    sim = sim_factory(limits=WsLimits(ping_interval_s=0.2, pong_timeout_s=0.7))
    raw = RawWs(f"{sim.ws_url}/market/ws")
    assert raw.status == 101
    opcodes = [op for op, _ in raw.frames()]
    raw.close()
    assert opcodes.count(0x9) >= 2  # pings
    assert opcodes[-1] == 0x8  # then a close frame
    with connect(f"{sim.ws_url}/market/ws") as ws:  # this client answers pings
        time.sleep(1.0)
        assert reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [], "id": 1}


def test_connections_are_closed_at_the_end_of_their_lifetime(
    sim_factory: Callable[..., RunningSim],
) -> None:
    sim = sim_factory(limits=WsLimits(lifetime_s=1.0))
    with connect(f"{sim.ws_url}/public/ws/btcusdt@bookTicker") as ws:
        exc = closed_with(ws)
    assert exc.rcvd is not None
    assert exc.rcvd.code == 1001
    assert sim.admin("GET", "/sim/state")["ws"]["lifetimeCloses"] == 1


def test_a_client_that_does_not_read_is_disconnected_not_buffered(
    sim_factory: Callable[..., RunningSim],
) -> None:
    sim = sim_factory(rate=5000.0, limits=WsLimits(max_buffer_bytes=64 * 1024))
    streams = "/".join(f"{s}@trade" for s in ("btcusdt", "ethusdt", "bchusdt", "xrpusdt"))
    raw = RawWs(f"{sim.ws_url}/public/ws/{streams}", rcvbuf=4096)
    # 6-9 s alone; the kernel's send buffer (autotuned up to 4 MiB) fills first, so a loaded
    # host (one clean-clone run: not within 20 s) needs longer. The loop ends at detection.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sim.admin("GET", "/sim/state")["ws"]["slowDisconnects"] >= 1:
            break
        time.sleep(0.2)
    raw.close()
    state = sim.admin("GET", "/sim/state")["ws"]
    assert state["slowDisconnects"] == 1
    assert state["open"] == 0
