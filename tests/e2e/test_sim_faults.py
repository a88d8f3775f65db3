"""Faults injected mid-run through the admin API, as a client of the simulator sees them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import RunningSim, loads
from tests.e2e.test_sim_ws import collect

AGG = "/market/ws/btcusdt@aggTrade/ethusdt@aggTrade"


def is_closed(ws: object) -> bool:
    try:
        for _ in range(1000):
            ws.recv(timeout=5)  # type: ignore[attr-defined]
    except ConnectionClosed:
        return True
    return False


def test_drop_all_or_by_path_or_by_stream(sim: RunningSim) -> None:
    with (
        connect(f"{sim.ws_url}/market/ws/btcusdt@aggTrade") as market,
        connect(f"{sim.ws_url}/public/ws/btcusdt@bookTicker") as public,
    ):
        assert sim.admin("POST", "/sim/faults", {"type": "drop", "path": "/market"}) == {
            "type": "drop",
            "dropped": 1,
        }
        assert is_closed(market)
        assert collect(public, 0.5)  # untouched
        dropped = sim.admin(
            "POST", "/sim/faults", {"type": "drop", "stream": "btcusdt@bookTicker", "abort": False}
        )
        assert dropped["dropped"] == 1
        assert is_closed(public)
    with connect(f"{sim.ws_url}/market/ws") as a, connect(f"{sim.ws_url}/public/ws") as b:
        assert sim.admin("POST", "/sim/faults", {"type": "drop"})["dropped"] == 2
        assert is_closed(a)
        assert is_closed(b)


def test_stall_silences_a_symbol_without_closing(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}{AGG}") as ws:
        fault = sim.admin("POST", "/sim/faults", {"type": "stall", "symbol": "BTCUSDT"})
        collect(ws, 0.2)  # frames already on the wire
        stalled = collect(ws, 0.8)
        assert stalled
        assert {m["s"] for m in stalled} == {"ETHUSDT"}
        sim.admin("DELETE", f"/sim/faults/{fault['id']}")
        assert "BTCUSDT" in {m["s"] for m in collect(ws, 0.8)}


def test_stall_everything_keeps_the_connection_open(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}{AGG}") as ws:
        sim.admin("POST", "/sim/faults", {"type": "stall", "seconds": 0.8})
        collect(ws, 0.2)
        assert collect(ws, 0.4) == []
        assert collect(ws, 1.0)  # the fault expired: data flows on the same connection


def test_delay_makes_frames_late(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}{AGG}") as ws:
        sim.admin("POST", "/sim/faults", {"type": "delay", "ms": 700, "path": "/market"})
        collect(ws, 0.3)
        ages = [time.time() * 1000 - m["E"] for m in collect(ws, 1.5)]
        assert ages
        assert min(ages) > 500
        sim.admin("DELETE", "/sim/faults")


def test_duplicate_sends_frames_twice(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}{AGG}") as ws:
        sim.admin("POST", "/sim/faults", {"type": "duplicate", "seconds": 5})
        collect(ws, 0.2)
        ids = [(m["s"], m["a"]) for m in collect(ws, 0.8)]
    assert len(ids) > 4
    assert len(set(ids)) < len(ids)


def test_reorder_swaps_frames(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}/market/ws/btcusdt@aggTrade") as ws:
        sim.admin("POST", "/sim/faults", {"type": "reorder", "seconds": 5})
        collect(ws, 0.2)
        ids = [m["a"] for m in collect(ws, 1.0)]
    assert any(b < a for a, b in itertools.pairwise(ids))


def test_down_closes_everything_refuses_and_comes_back(sim: RunningSim) -> None:
    with connect(f"{sim.ws_url}/market/ws/btcusdt@aggTrade") as ws:
        sim.admin("POST", "/sim/faults", {"type": "down", "seconds": 1.5})
        assert is_closed(ws)
    with pytest.raises(ConnectionRefusedError):
        connect(f"{sim.ws_url}/market/ws", open_timeout=2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{sim.rest_url}/fapi/v1/ping", timeout=2)
    time.sleep(2.0)
    assert httpx.get(f"{sim.rest_url}/fapi/v1/ping", timeout=2).json() == {}
    with connect(f"{sim.ws_url}/market/ws/btcusdt@aggTrade") as ws:
        assert loads(ws.recv(timeout=5))["e"] == "aggTrade"


def test_refuse_rejects_websocket_handshakes(sim: RunningSim) -> None:
    sim.admin("POST", "/sim/faults", {"type": "refuse"})
    with pytest.raises(InvalidStatus) as info:
        connect(f"{sim.ws_url}/market/ws")
    assert info.value.response.status_code == 503
    assert sim.http.get("/fapi/v1/ping").status_code == 200  # REST unaffected
    sim.admin("DELETE", "/sim/faults")
    with connect(f"{sim.ws_url}/market/ws"):
        pass


@pytest.mark.parametrize(
    ("status", "code", "msg_start"),
    [
        (500, -1000, "An unknown error occured while processing the request."),
        (503, -1000, "Unknown error, please check your request or try again later."),
        (429, -1003, "Too many requests; current limit is 2400 requests per minute."),
        (418, -1003, "Way too many requests; IP banned until "),
    ],
)
def test_rest_faults_answer_binance_errors(
    sim: RunningSim, status: int, code: int, msg_start: str
) -> None:
    sim.admin("POST", "/sim/faults", {"type": "rest", "status": status, "count": 2})
    for _ in range(2):
        resp = sim.http.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m"})
        assert resp.status_code == status
        body = resp.json()
        assert body["code"] == code
        assert body["msg"].startswith(msg_start)
        if status in (429, 418):
            assert int(resp.headers["Retry-After"]) > 0
    assert sim.http.get("/fapi/v1/ping").status_code == 200  # count used up


def test_faults_given_at_start(sim_factory: Callable[..., RunningSim]) -> None:
    sim = sim_factory(faults=({"type": "rest", "status": 502, "count": 1},))
    assert sim.http.get("/fapi/v1/ping").status_code == 502
    assert sim.http.get("/fapi/v1/ping").status_code == 200


def test_event_rate_can_be_changed_and_state_inspected(sim: RunningSim) -> None:
    assert sim.admin("POST", "/sim/rate", {"rate": 0}) == {"rate": 0.0}
    time.sleep(0.2)
    before = sim.admin("GET", "/sim/state")["model"]["aggTrades"]
    time.sleep(0.5)
    assert sim.admin("GET", "/sim/state")["model"]["aggTrades"] == before
    sim.admin("POST", "/sim/rate", {"rate": 2000})
    time.sleep(0.5)
    state = sim.admin("GET", "/sim/state")
    assert state["rate"] == 2000
    assert state["model"]["aggTrades"] > before + 200
    assert state["ledger"]["aggTradesBoundPerSymbol"] == 5000
    bad = sim.http.post("/sim/faults", json={"type": "nope"})
    assert bad.status_code == 400
    assert "type must be one of" in bad.json()["error"]
