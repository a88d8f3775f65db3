"""Faults on the trading path of a running simulator, as an execution client sees them.

Lost order answers (``order_unknown``), REST read lag (``lookup_lag``), forced listen-key expiry
(``listenkey_expire``) and abrupt user-stream drops (``drop`` on ``/private``); what a client
missed is found again through REST (order, userTrades) and the admin record of fills.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from simulator.trading import sign
from tests.e2e.conftest import RunningSim, loads
from tests.e2e.test_sim_ws import collect

UNKNOWN_503 = {
    "code": -1000,
    "msg": "Unknown error, please check your request or try again later.",
}
TIMEOUT_408 = {
    "code": -1007,
    "msg": "Timeout waiting for response from backend server. "
    "Send status unknown; execution status unknown.",
}


class Client:
    """A paper account on the simulator, signing like a Binance connector (HMAC)."""

    def __init__(self, sim: RunningSim) -> None:
        self.sim = sim
        created = sim.admin("POST", "/sim/accounts", {"balance": "10000"})
        self.api_key, self.secret = created["apiKey"], created["secretKey"]

    def request(
        self, method: str, path: str, params: dict[str, str], *, timeout: float = 10
    ) -> httpx.Response:
        query = urlencode({**params, "timestamp": str(int(time.time() * 1000))})
        query += "&signature=" + sign(self.secret, query)
        return self.sim.http.request(
            method,
            f"{path}?{query}",
            headers={"X-MBX-APIKEY": self.api_key},
            timeout=timeout,
        )

    def buy(self, cid: str, *, symbol: str = "BTCUSDT", timeout: float = 10) -> httpx.Response:
        qty = "0.010" if symbol == "BTCUSDT" else "0.100"
        params = {"symbol": symbol, "side": "BUY", "type": "MARKET", "quantity": qty}
        return self.request(
            "POST", "/fapi/v1/order", {**params, "newClientOrderId": cid}, timeout=timeout
        )

    def lookup(self, cid: str, symbol: str = "BTCUSDT") -> httpx.Response:
        return self.request("GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": cid})

    def listen_key(self, method: str = "POST") -> httpx.Response:
        return self.sim.http.request(
            method, "/fapi/v1/listenKey", headers={"X-MBX-APIKEY": self.api_key}
        )

    def user_stream(self, listen_key: str) -> ClientConnection:
        ws = connect(f"{self.sim.ws_url}/private/ws/{listen_key}")
        time.sleep(0.1)  # the stream is attached once the handshake is served
        return ws

    def record(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.sim.admin("GET", f"/sim/accounts/{self.api_key}/trades")
        return result


def executions(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["o"]["c"], e["o"]["x"]) for e in events if e["e"] == "ORDER_TRADE_UPDATE"]


@pytest.fixture
def client(sim: RunningSim) -> Client:
    return Client(sim)


def test_order_unknown_503_executes_the_order_and_loses_the_answer(
    sim: RunningSim, client: Client
) -> None:
    key = client.listen_key().json()["listenKey"]
    with client.user_stream(key) as ws:
        sim.admin("POST", "/sim/faults", {"type": "order_unknown"})
        lost = client.buy("lost-1")
        assert (lost.status_code, lost.json()) == (503, UNKNOWN_503)
        assert "X-MBX-USED-WEIGHT-1M" in lost.headers
        seen = executions(collect(ws, 0.5))
        assert seen[0] == ("lost-1", "NEW")
        assert set(seen[1:]) == {("lost-1", "TRADE")}  # one fill per synthetic level taken
    found = client.lookup("lost-1")
    assert (found.status_code, found.json()["status"]) == (200, "FILLED")
    assert client.buy("next").status_code == 200  # count 1: used up
    assert sim.admin("GET", "/sim/faults") == []
    assert client.record()[0]["orderId"] == found.json()["orderId"]


def test_order_unknown_408_on_one_symbol_only(sim: RunningSim, client: Client) -> None:
    sim.admin("POST", "/sim/faults", {"type": "order_unknown", "mode": "408", "symbol": "BTCUSDT"})
    assert client.buy("eth", symbol="ETHUSDT").status_code == 200
    lost = client.buy("btc")
    assert (lost.status_code, lost.json()) == (408, TIMEOUT_408)
    assert client.lookup("btc").json()["status"] == "FILLED"


def test_order_unknown_timeout_holds_the_answer_past_the_clients_timeout(
    sim: RunningSim, client: Client
) -> None:
    sim.admin("POST", "/sim/faults", {"type": "order_unknown", "mode": "timeout", "ms": 3000})
    with pytest.raises(httpx.ReadTimeout):
        client.buy("slow", timeout=0.5)
    assert client.lookup("slow").json()["status"] == "FILLED"
    sim.admin("POST", "/sim/faults", {"type": "order_unknown", "mode": "timeout", "ms": 300})
    patient = client.buy("patient", timeout=10)
    assert (patient.status_code, patient.json()["clientOrderId"]) == (200, "patient")


def test_order_unknown_given_at_start(sim_factory: Callable[..., RunningSim]) -> None:
    sim = sim_factory(faults=({"type": "order_unknown", "mode": 408, "count": 2},))
    client = Client(sim)
    assert [client.buy(f"c{n}").status_code for n in range(3)] == [408, 408, 200]
    rows = client.request("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"}).json()
    assert len({r["orderId"] for r in rows}) == 3


def test_lookup_lag_hides_new_orders_from_queries_for_a_while(
    sim: RunningSim, client: Client
) -> None:
    sim.admin("POST", "/sim/faults", {"type": "lookup_lag", "ms": 1500})
    placed = client.buy("lagged")
    assert placed.status_code == 200
    by_id = client.request(
        "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": str(placed.json()["orderId"])}
    )
    by_cid = client.lookup("lagged")
    for early in (by_id, by_cid):
        assert (early.status_code, early.json()) == (
            400,
            {"code": -2013, "msg": "Order does not exist."},
        )
    time.sleep(1.6)
    assert client.lookup("lagged").json()["status"] == "FILLED"
    client.buy("fresh")
    assert client.lookup("fresh").status_code == 400
    sim.admin("DELETE", "/sim/faults")
    assert client.lookup("fresh").status_code == 200


def test_listenkey_expire_ends_the_stream_and_the_key(sim: RunningSim, client: Client) -> None:
    key = client.listen_key().json()["listenKey"]
    with client.user_stream(key) as ws:
        fault = {"type": "listenkey_expire", "apiKey": client.api_key}
        assert sim.admin("POST", "/sim/faults", fault) == {"type": "listenkey_expire", "expired": 1}
        assert sim.admin("POST", "/sim/faults", fault)["expired"] == 0  # twice: harmless
        expired = loads(ws.recv(timeout=5))
        assert expired["e"] == "listenKeyExpired"
        assert expired["listenKey"] == key
        assert isinstance(expired["E"], int)
        client.buy("after")
        assert collect(ws, 0.5) == []  # nothing more on this stream
    gone = client.listen_key("PUT")
    assert (gone.status_code, gone.json()["code"]) == (400, -1125)
    fresh = client.listen_key().json()["listenKey"]
    assert fresh != key
    with client.user_stream(fresh) as ws:
        client.buy("again")
        assert ("again", "NEW") in executions(collect(ws, 0.5))


def test_dropped_user_stream_misses_events_which_rest_recovers(
    sim: RunningSim, client: Client
) -> None:
    key = client.listen_key().json()["listenKey"]
    with client.user_stream(key) as ws:
        assert sim.admin("POST", "/sim/faults", {"type": "drop", "path": "/private"}) == {
            "type": "drop",
            "dropped": 1,
        }
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is None  # no close frame: the TCP connection was cut
    placed = client.buy("while-away")
    assert placed.status_code == 200
    with client.user_stream(key) as again:  # same key, still valid: no replay
        assert collect(again, 0.5) == []
        client.buy("back")
        seen = executions(collect(again, 0.5))
        assert seen[0] == ("back", "NEW")
        assert {c for c, _ in seen} == {"back"}
    rows = client.request("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"}).json()
    assert placed.json()["orderId"] in {r["orderId"] for r in rows}
    assert [r["id"] for r in client.record()] == [r["id"] for r in rows]
