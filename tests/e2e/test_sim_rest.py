"""The simulator's REST market data: shapes, errors, weights, bans, and klines = ground truth."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from simulator.ledger import INTERVALS, close_time_ms, open_time_ms
from tests.e2e.conftest import RunningSim

WEIGHT = "X-MBX-USED-WEIGHT-1M"


def test_ping_time_and_exchange_info(sim: RunningSim) -> None:
    assert sim.http.get("/fapi/v1/ping").json() == {}
    server_time = sim.http.get("/fapi/v1/time").json()["serverTime"]
    assert abs(server_time - time.time() * 1000) < 5000
    resp = sim.http.get("/fapi/v1/exchangeInfo")
    info = resp.json()
    assert resp.headers[WEIGHT]
    assert info["timezone"] == "UTC"
    assert info["futuresType"] == "U_MARGINED"
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400
    }  # fmt: skip
    symbols = info["symbols"]
    assert len(symbols) == 122
    assert symbols[0]["symbol"] == "BTCUSDT"
    assert all(s["status"] == "TRADING" and s["contractType"] == "PERPETUAL" for s in symbols)
    btc_filters = {f["filterType"]: f for f in symbols[0]["filters"]}
    assert btc_filters["PRICE_FILTER"]["tickSize"] == "0.01"
    assert btc_filters["LOT_SIZE"]["stepSize"] == "0.001"


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        ({"interval": "1m"}, -1102,
         "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ({"symbol": "BTCUSDT"}, -1102,
         "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."),
        ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121, "Invalid symbol."),
        ({"symbol": "BTCUSDT", "interval": "2m"}, -1120, "Invalid interval."),
        ({"symbol": "BTCUSDT", "interval": "1m", "limit": "ten"}, -1100,
         "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'."),
    ],
)  # fmt: skip
def test_klines_errors_are_binance_errors(
    sim: RunningSim, params: dict[str, str], code: int, msg: str
) -> None:
    resp = sim.http.get("/fapi/v1/klines", params=params)
    assert resp.status_code == 400
    assert resp.json() == {"code": code, "msg": msg}
    assert WEIGHT in resp.headers


def test_used_weight_header_counts_by_endpoint_and_limit(sim: RunningSim) -> None:
    def used(path: str, **params: str) -> int:
        return int(sim.http.get(path, params=params).headers[WEIGHT])

    base = used("/fapi/v1/ping")
    assert used("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit="50") == base + 1
    assert used("/fapi/v1/klines", symbol="BTCUSDT", interval="1m") == base + 6  # default 500
    assert used("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit="1500") == base + 16
    assert used("/fapi/v1/aggTrades", symbol="BTCUSDT") == base + 36


def test_past_the_weight_limit_429_then_growing_418_bans(
    sim_factory: Callable[..., RunningSim],
) -> None:
    sim = sim_factory(weight_limit=10, ban_after=1, ban_base_s=1.0)
    statuses: list[httpx.Response] = []
    for _ in range(30):
        resp = sim.http.get("/fapi/v1/aggTrades", params={"symbol": "BTCUSDT"})  # weight 20
        statuses.append(resp)
        if resp.status_code == 418:
            break
    codes = [r.status_code for r in statuses]
    assert 429 in codes
    assert codes[-1] == 418
    too_many = statuses[codes.index(429)]
    assert int(too_many.headers["Retry-After"]) > 0
    assert too_many.json() == {
        "code": -1003,
        "msg": "Too many requests; current limit is 10 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
    }
    ban = statuses[-1].json()
    assert ban["code"] == -1003
    assert ban["msg"].startswith("Way too many requests; IP banned until ")
    first_ban_s = int(statuses[-1].headers["Retry-After"])
    time.sleep(first_ban_s + 0.2)
    again = sim.http.get("/fapi/v1/ping")
    while again.status_code == 429:
        again = sim.http.get("/fapi/v1/ping")
    assert again.status_code in (418, 200)  # 200 only if a new minute started meanwhile
    if again.status_code == 418:
        assert int(again.headers["Retry-After"]) > first_ban_s  # bans grow
    sim.admin("POST", "/sim/reset")
    assert sim.http.get("/fapi/v1/ping").status_code == 200


def _derive(trades: list[dict], interval: str) -> list[list[object]]:
    bars: dict[int, dict] = {}
    for t in trades:
        p, q = Decimal(t["p"]), Decimal(t["q"])
        b = bars.setdefault(open_time_ms(interval, t["T"]), {
            "o": t["p"], "h": p, "l": p, "v": Decimal(0), "q": Decimal(0), "n": 0,
            "V": Decimal(0), "Q": Decimal(0)})  # fmt: skip
        b["h"], b["l"], b["c"] = max(b["h"], p), min(b["l"], p), t["p"]
        b["v"] += q
        b["q"] += p * q
        b["n"] += t["l"] - t["f"] + 1
        if not t["m"]:
            b["V"] += q
            b["Q"] += p * q
    return [
        [t, b["o"], b["h"], b["l"], b["c"], b["v"], close_time_ms(interval, t), b["q"], b["n"],
         b["V"], b["Q"], "0"]
        for t, b in sorted(bars.items())
    ]  # fmt: skip


def _as_numbers(row: list[object]) -> list[object]:
    return [Decimal(x) if isinstance(x, str | Decimal) else x for x in row]


def test_rest_klines_equal_klines_derived_from_the_emitted_trades(sim: RunningSim) -> None:
    time.sleep(2.0)
    sim.admin("POST", "/sim/rate", {"rate": 0})  # freeze the market so both reads agree
    for symbol in ("BTCUSDT", "ETHUSDT", "DOGEUSDT"):
        trades = sim.admin("GET", f"/sim/trades?symbol={symbol}&limit=100000")
        assert trades, symbol
        ids = [t["a"] for t in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive
        assert all(b["f"] == a["l"] + 1 for a, b in itertools.pairwise(trades))
        rest = sim.http.get("/fapi/v1/aggTrades", params={"symbol": symbol, "limit": 1000}).json()
        assert rest == [{k: t[k] for k in "apqflTm"} for t in trades][-1000:]
        for interval in INTERVALS:
            rows = sim.http.get(
                "/fapi/v1/klines", params={"symbol": symbol, "interval": interval}
            ).json()
            assert [_as_numbers(r) for r in rows] == [
                _as_numbers(r) for r in _derive(trades, interval)
            ], (symbol, interval)
            assert all(isinstance(r[1], str) and isinstance(r[8], int) for r in rows)
