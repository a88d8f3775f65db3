"""User-data streams on /private, pumped from the paper-trading engine."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.conftest import RunningSim, loads

trading = pytest.importorskip("simulator.trading")


def _account_and_key(sim: RunningSim) -> tuple[dict, str]:
    account = sim.admin("POST", "/sim/accounts", {"balance": "10000"})
    resp = sim.http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": account["apiKey"]})
    assert resp.status_code == 200, resp.text
    return account, resp.json()["listenKey"]


def _market_buy(sim: RunningSim, account: dict) -> None:
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": "0.010",
        "timestamp": str(int(time.time() * 1000)),
    }
    query = urlencode(params)
    query += "&signature=" + trading.sign(account["secretKey"], query)
    resp = sim.http.post(f"/fapi/v1/order?{query}", headers={"X-MBX-APIKEY": account["apiKey"]})
    assert resp.status_code == 200, resp.text


def test_order_updates_arrive_on_the_private_routes(sim: RunningSim) -> None:
    account, key = _account_and_key(sim)
    with (
        connect(f"{sim.ws_url}/private/ws/{key}") as raw,
        connect(
            f"{sim.ws_url}/private/stream?listenKey={key}&events=ORDER_TRADE_UPDATE"
        ) as combined,
    ):
        time.sleep(0.2)
        _market_buy(sim, account)
        event = loads(raw.recv(timeout=5))
        assert event["e"] in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "TRADE_LITE")
        wrapped = loads(combined.recv(timeout=5))
        assert wrapped["stream"] == key
        assert wrapped["data"]["e"] == "ORDER_TRADE_UPDATE"
        assert wrapped["data"]["o"]["s"] == "BTCUSDT"


def test_an_unknown_listen_key_is_closed(sim: RunningSim) -> None:
    with (
        connect(f"{sim.ws_url}/private/ws/{'x' * 64}") as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1008
