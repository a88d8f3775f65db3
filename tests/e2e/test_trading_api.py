"""The trading REST API over real HTTP: an aiohttp server on a free port, httpx as the client.

The only double is ``FakeMarket``, the exchange's market (top of book, mark price, clock),
built on the real exchangeInfo entries of BTCUSDT and ETHUSDT (2021-07-22 capture).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from aiohttp import web

from simulator.trading import TradingEngine, UserStream, UserStreamClosedError, sign

FIXTURE = Path(__file__).parents[1] / "fixtures" / "exchange-info-2021-07-22.txt"
DOC_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_PAYLOAD = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    "&recvWindow=5000&timestamp=1591702613943"
)
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
# the documented ORDER_TRADE_UPDATE (reference section 4, SCRAPE Event-Order-Update.md)
DOC_ORDER_UPDATE = orjson.loads(
    '{"e":"ORDER_TRADE_UPDATE","E":1568879465651,"T":1568879465650,"o":{"s":"BTCUSDT","c":"TEST",'
    '"S":"SELL","o":"TRAILING_STOP_MARKET","f":"GTC","q":"0.001","p":"0","ap":"0","sp":"7103.04",'
    '"x":"NEW","X":"NEW","i":8886774,"l":"0","z":"0","L":"0","N":"USDT","n":"0",'
    '"T":1568879465650,"t":0,"b":"0","a":"9.91","m":false,"R":false,"wt":"CONTRACT_PRICE",'
    '"ot":"TRAILING_STOP_MARKET","ps":"LONG","cp":false,"AP":"7476.89","cr":"5.0","pP":false,'
    '"si":0,"ss":0,"rp":"0","V":"EXPIRE_TAKER","pm":"OPPONENT","gtd":0,"er":"0"}}'
)


def real_symbols() -> dict[str, Any]:
    info = orjson.loads(FIXTURE.read_text().splitlines()[0].split(": ", 1)[1])
    return {s["symbol"]: s for s in info["symbols"] if s["symbol"] in ("BTCUSDT", "ETHUSDT")}


class FakeMarket:
    """A settable market: one top of book and one mark price per symbol, a settable clock."""

    def __init__(self) -> None:
        self.symbols = real_symbols()
        self.books: dict[str, tuple[D, D, D, D]] = {
            "BTCUSDT": (D("8999.90"), D("2"), D("9000.10"), D("2")),
            "ETHUSDT": (D("250.00"), D("10"), D("250.01"), D("10")),
        }
        self.marks = {"BTCUSDT": D("9000"), "ETHUSDT": D("250")}
        self.frozen_ms: int | None = None

    def exchange_symbols(self) -> Mapping[str, Mapping[str, Any]]:
        return self.symbols

    def best_bid_ask(self, symbol: str) -> tuple[D, D, D, D] | None:
        return self.books.get(symbol)

    def mark_price(self, symbol: str) -> D | None:
        return self.marks.get(symbol)

    def now_ms(self) -> int:
        return self.frozen_ms if self.frozen_ms is not None else int(time.time() * 1000)


class Exchange:
    """A served engine plus an httpx client that signs like a Binance connector."""

    def __init__(self, **engine_opts: Any) -> None:
        self.market = FakeMarket()
        self.engine = TradingEngine(self.market, **engine_opts)
        self.http = httpx.AsyncClient(timeout=5)
        self.api_key = ""
        self.secret = ""

    async def __aenter__(self) -> Exchange:
        app = web.Application()
        self.engine.add_routes(app)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        created = await self.http.post(f"{self.base}/sim/accounts", json={"balance": "10000"})
        assert created.status_code == 200
        self.api_key, self.secret = created.json()["apiKey"], created.json()["secretKey"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.runner.cleanup()

    async def signed(
        self, method: str, path: str, params: Mapping[str, str], *, in_body: bool = False
    ) -> httpx.Response:
        """Send a SIGNED request the way python connectors do: urlencode, then sign it."""
        payload = urlencode({**params, "timestamp": str(self.market.now_ms())})
        payload += "&signature=" + sign(self.secret, payload)
        headers = {"X-MBX-APIKEY": self.api_key}
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return await self.http.request(
                method, self.base + path, content=payload, headers=headers
            )
        return await self.http.request(method, f"{self.base}{path}?{payload}", headers=headers)

    async def order(self, **params: str) -> httpx.Response:
        return await self.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", **params})

    async def keyed(self, method: str, path: str) -> httpx.Response:
        return await self.http.request(
            method, self.base + path, headers={"X-MBX-APIKEY": self.api_key}
        )


def e2e(
    **engine_opts: Any,
) -> Callable[[Callable[[Exchange], Awaitable[None]]], Callable[[], None]]:
    """Turn ``async def test(ex)`` into a plain test running against a freshly served engine."""

    def decorate(scenario: Callable[[Exchange], Awaitable[None]]) -> Callable[[], None]:
        def test() -> None:
            async def main() -> None:
                async with Exchange(**engine_opts) as ex:
                    await scenario(ex)

            asyncio.run(main())

        test.__name__, test.__doc__ = scenario.__name__, scenario.__doc__
        return test

    return decorate


def error_of(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    return response.status_code, body["code"], body["msg"]


async def drain(stream: UserStream) -> list[dict[str, Any]]:
    events = []
    while stream.queue_size:
        events.append(orjson.loads(await stream.get()))
    return events


# -- accounts and authentication --------------------------------------------------------------


@e2e()
async def test_official_signed_examples_place_orders_over_http(ex: Exchange) -> None:
    created = await ex.http.post(
        f"{ex.base}/sim/accounts",
        json={"balance": 5000, "apiKey": DOC_KEY, "secretKey": DOC_SECRET},
    )
    assert created.json() == {
        "apiKey": DOC_KEY,
        "secretKey": DOC_SECRET,
        "balance": "5000.00000000",
    }
    ex.market.frozen_ms = 1591702613943 + 150
    headers = {"X-MBX-APIKEY": DOC_KEY}
    url = f"{ex.base}/fapi/v1/order"
    as_query = await ex.http.post(f"{url}?{DOC_PAYLOAD}&signature={DOC_SIGNATURE}", headers=headers)
    as_body = await ex.http.post(
        url,
        content=f"{DOC_PAYLOAD}&signature={DOC_SIGNATURE}",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    mixed_sig = "30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4"
    mixed = await ex.http.post(
        f"{url}?symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC",
        content=f"quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943&signature={mixed_sig}",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    for n, response in enumerate((as_query, as_body, mixed), start=1):
        assert response.status_code == 200, response.text
        assert response.headers["X-MBX-ORDER-COUNT-10S"] == str(n)
        assert response.headers["X-MBX-ORDER-COUNT-1M"] == str(n)
        body = response.json()
        assert {
            k: body[k]
            for k in (
                "symbol",
                "status",
                "price",
                "origQty",
                "executedQty",
                "cumQuote",
                "avgPrice",
                "type",
                "timeInForce",
                "side",
                "positionSide",
                "reduceOnly",
                "updateTime",
            )
        } == {
            "symbol": "BTCUSDT",
            "status": "NEW",
            "price": "9000.00",
            "origQty": "1.000",
            "executedQty": "0.000",
            "cumQuote": "0.00000",
            "avgPrice": "0.00",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "side": "BUY",
            "positionSide": "BOTH",
            "reduceOnly": False,
            "updateTime": 1591702614093,
        }
    ex.market.frozen_ms = 1591702613943 + 5001
    stale = await ex.http.post(f"{url}?{DOC_PAYLOAD}&signature={DOC_SIGNATURE}", headers=headers)
    assert error_of(stale) == (
        400,
        -1021,
        "Timestamp for this request is outside of the recvWindow.",
    )


@e2e()
async def test_authentication_failures_answer_like_binance(ex: Exchange) -> None:
    url = f"{ex.base}/fapi/v2/balance"
    payload = f"timestamp={ex.market.now_ms()}"
    good = f"{url}?{payload}&signature={sign(ex.secret, payload)}"
    assert (await ex.http.get(good, headers={"X-MBX-APIKEY": ex.api_key})).status_code == 200
    assert error_of(await ex.http.get(good)) == (401, -2014, "API-key format invalid.")
    assert error_of(await ex.http.get(good, headers={"X-MBX-APIKEY": "a" * 64})) == (
        401,
        -2015,
        "Invalid API-key, IP, or permissions for action.",
    )
    tampered = f"{url}?{payload}1&signature={sign(ex.secret, payload)}"
    assert error_of(await ex.http.get(tampered, headers={"X-MBX-APIKEY": ex.api_key})) == (
        400,
        -1022,
        "Signature for this request is not valid.",
    )
    unsigned = f"{url}?{payload}"
    assert error_of(await ex.http.get(unsigned, headers={"X-MBX-APIKEY": ex.api_key}))[1] == -1102
    ahead = f"timestamp={ex.market.now_ms() + 5000}"
    future = f"{url}?{ahead}&signature={sign(ex.secret, ahead)}"
    assert error_of(await ex.http.get(future, headers={"X-MBX-APIKEY": ex.api_key})) == (
        400,
        -1021,
        "Timestamp for this request was 1000ms ahead of the server's time.",
    )


@e2e()
async def test_query_string_wins_over_body(ex: Exchange) -> None:
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.002"
    body = f"quantity=0.005&price=8000&timestamp={ex.market.now_ms()}"
    sig = sign(ex.secret, query + body)
    response = await ex.http.post(
        f"{ex.base}/fapi/v1/order?{query}",
        content=f"{body}&signature={sig}",
        headers={"X-MBX-APIKEY": ex.api_key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["origQty"] == "0.002"


# -- orders ------------------------------------------------------------------------------------


@e2e()
async def test_market_order_walks_synthetic_levels_and_updates_the_account(ex: Exchange) -> None:
    response = await ex.order(side="BUY", type="MARKET", quantity="5", newOrderRespType="RESULT")
    body = response.json()
    # 2 @ 9000.10, 2 @ 9000.11, 1 @ 9000.12
    assert (body["status"], body["executedQty"], body["cumQuote"]) == (
        "FILLED",
        "5.000",
        "45000.54000",
    )
    assert body["avgPrice"] == "9000.108"  # exact: more decimals than pricePrecision when needed
    fee = D("45000.54") * D("0.0004")
    balance = (await ex.signed("GET", "/fapi/v2/balance", {})).json()[0]
    assert balance["balance"] == f"{D(10000) - fee:.8f}"
    risk = (await ex.signed("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})).json()[0]
    assert (risk["positionAmt"], risk["entryPrice"], risk["leverage"]) == (
        "5.000",
        "9000.108",
        "20",
    )
    assert risk["unRealizedProfit"] == f"{(D(9000) - D('9000.108')) * 5:.8f}"
    account = (await ex.signed("GET", "/fapi/v3/account", {})).json()
    assert account["positions"][0]["positionAmt"] == "5.000"
    assert account["totalPositionInitialMargin"] == f"{D(5) * 9000 / 20:.8f}"


@e2e()
async def test_resting_limit_order_fills_as_maker_when_the_book_crosses(ex: Exchange) -> None:
    listen_key = (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    stream = ex.engine.open_user_stream(listen_key, None)
    assert stream is not None
    placed = (
        await ex.order(
            side="BUY",
            type="LIMIT",
            timeInForce="GTC",
            quantity="3",
            price="8990.00",
            newClientOrderId="dip-1",
        )
    ).json()
    assert placed["status"] == "NEW"
    ex.engine.on_book("BTCUSDT")  # book unchanged: nothing crosses
    ex.market.books["BTCUSDT"] = (D("8989.00"), D("1"), D("8989.50"), D("1"))
    ex.engine.on_book("BTCUSDT")  # 1 of 3 at the limit price
    ex.engine.on_book("BTCUSDT")  # 1 more
    query = {"symbol": "BTCUSDT", "origClientOrderId": "dip-1"}
    got = (await ex.signed("GET", "/fapi/v1/order", query)).json()
    assert (got["status"], got["executedQty"], got["avgPrice"]) == (
        "PARTIALLY_FILLED",
        "2.000",
        "8990.00",
    )
    open_orders = (await ex.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})).json()
    assert [o["clientOrderId"] for o in open_orders] == ["dip-1"]
    events = await drain(stream)
    trades = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert [(t["l"], t["L"], t["m"], t["X"]) for t in trades] == [
        ("1", "8990", True, "PARTIALLY_FILLED"),
        ("1", "8990", True, "PARTIALLY_FILLED"),
    ]
    assert trades[0]["n"] == "1.798"  # 8990 * 0.0002, maker fee
    updates = [e for e in events if e["e"] == "ACCOUNT_UPDATE"]
    assert [u["a"]["P"][0]["pa"] for u in updates] == ["1", "2"]
    for kind in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"):
        times = [(e["E"], e["T"]) for e in events if e["e"] == kind]
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(times))
    canceled = (await ex.signed("DELETE", "/fapi/v1/order", query)).json()
    assert (canceled["status"], canceled["executedQty"]) == ("CANCELED", "2.000")
    assert error_of(await ex.signed("DELETE", "/fapi/v1/order", query)) == (
        400,
        -2011,
        "Unknown order sent.",
    )


@e2e()
async def test_time_in_force_outcomes(ex: Exchange) -> None:
    ioc = (
        await ex.order(
            side="BUY",
            type="LIMIT",
            timeInForce="IOC",
            quantity="3",
            price="9000.10",
            newOrderRespType="RESULT",
        )
    ).json()
    assert (ioc["status"], ioc["executedQty"]) == ("EXPIRED", "2.000")
    fok = await ex.order(side="BUY", type="LIMIT", timeInForce="FOK", quantity="5", price="9000.11")
    assert error_of(fok)[1] == -5021
    fok_ok = (
        await ex.order(
            side="BUY",
            type="LIMIT",
            timeInForce="FOK",
            quantity="4",
            price="9000.11",
            newOrderRespType="RESULT",
        )
    ).json()
    assert fok_ok["status"] == "FILLED"
    gtx = await ex.order(
        side="SELL", type="LIMIT", timeInForce="GTX", quantity="1", price="8999.90"
    )
    assert error_of(gtx)[:2] == (400, -5022)
    maker = (
        await ex.order(side="SELL", type="LIMIT", timeInForce="GTX", quantity="1", price="9001.00")
    ).json()
    assert maker["status"] == "NEW"
    ack = (await ex.order(side="SELL", type="MARKET", quantity="1")).json()  # ACK: as accepted
    assert (ack["status"], ack["executedQty"]) == ("NEW", "0.000")
    final = await ex.signed(
        "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": str(ack["orderId"])}
    )
    assert final.json()["status"] == "FILLED"


@e2e()
async def test_order_rejections_carry_binance_codes(ex: Exchange) -> None:
    cases = [
        ({"type": "STOP_MARKET", "side": "SELL", "stopPrice": "8000"}, -4120),
        (
            {
                "type": "LIMIT",
                "side": "BUY",
                "timeInForce": "GTC",
                "quantity": "0.0001",
                "price": "9000",
            },
            -1111,
        ),
        (
            {
                "type": "LIMIT",
                "side": "BUY",
                "timeInForce": "GTC",
                "quantity": "0.001",
                "price": "4000",
            },
            -4164,
        ),
        (
            {
                "type": "LIMIT",
                "side": "BUY",
                "timeInForce": "GTC",
                "quantity": "0.01",
                "price": "10350.01",
            },
            -4016,
        ),
        (
            {
                "type": "LIMIT",
                "side": "SELL",
                "timeInForce": "GTC",
                "quantity": "0.01",
                "price": "7649.99",
            },
            -4024,
        ),
        ({"type": "MARKET", "side": "SELL", "quantity": "1", "reduceOnly": "true"}, -2022),
        ({"type": "MARKET", "side": "BUY", "quantity": "30"}, -2019),  # 270k notional, 10k at 20x
    ]
    for params, code in cases:
        assert error_of(await ex.order(**params))[1] == code, params
    notional = await ex.order(
        type="LIMIT", side="BUY", timeInForce="GTC", quantity="0.001", price="4000"
    )
    assert error_of(notional)[2] == (
        "Order's notional must be no smaller than 5 (unless you choose reduce only)."
    )
    first = await ex.order(
        type="LIMIT",
        side="BUY",
        timeInForce="GTC",
        quantity="0.01",
        price="8000",
        newClientOrderId="same",
    )
    assert first.status_code == 200
    again = await ex.order(
        type="LIMIT",
        side="BUY",
        timeInForce="GTC",
        quantity="0.01",
        price="8000",
        newClientOrderId="same",
    )
    assert error_of(again) == (400, -4116, "ClientOrderId is duplicated.")
    missing = await ex.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": "42"})
    assert error_of(missing) == (400, -2013, "Order does not exist.")
    done = await ex.signed("DELETE", "/fapi/v1/allOpenOrders", {"symbol": "BTCUSDT"})
    assert done.json() == {"code": 200, "msg": "The operation of cancel all open order is done."}
    assert (await ex.signed("GET", "/fapi/v1/openOrders", {})).json() == []


@e2e()
async def test_reduce_only_closes_and_realizes_pnl(ex: Exchange) -> None:
    await ex.order(side="BUY", type="MARKET", quantity="1")  # 1 @ 9000.10
    ex.market.books["BTCUSDT"] = (D("9100.00"), D("5"), D("9100.10"), D("5"))
    ex.market.marks["BTCUSDT"] = D("9100")
    close = (
        await ex.order(
            side="SELL", type="MARKET", quantity="3", reduceOnly="true", newOrderRespType="RESULT"
        )
    ).json()
    assert (close["status"], close["executedQty"]) == ("EXPIRED", "1.000")  # capped at the position
    risk = (await ex.signed("GET", "/fapi/v3/positionRisk", {"symbol": "BTCUSDT"})).json()[0]
    assert risk["positionAmt"] == "0.000"
    fees = D("9000.10") * D("0.0004") + D("9100.00") * D("0.0004")
    balance = (await ex.signed("GET", "/fapi/v2/balance", {})).json()[0]
    assert balance["balance"] == f"{D(10000) + D('99.90') - fees:.8f}"


@e2e(order_limits=(("10S", 10_000, 3, "10 SECOND"), ("1M", 60_000, 1200, "MINUTE")))
async def test_order_rate_limit_answers_429(ex: Exchange) -> None:
    ex.market.frozen_ms = 1_700_000_001_000
    for _ in range(3):
        await ex.order(side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="8000")
    refused = await ex.order(
        side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="8000"
    )
    assert error_of(refused) == (
        429,
        -1015,
        "Too many new orders; current limit is 3 orders per 10 SECOND.",
    )
    assert refused.headers["Retry-After"] == "9"


# -- user data stream -------------------------------------------------------------------------


@e2e(listen_key_ttl_secs=0.3)
async def test_listen_key_lifecycle_and_expiry_event(ex: Exchange) -> None:
    first = (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    assert (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"] == first
    assert (await ex.keyed("PUT", "/fapi/v1/listenKey")).json() == {"listenKey": first}
    stream = ex.engine.open_user_stream(first, frozenset({"ACCOUNT_UPDATE"}))
    assert stream is not None
    await ex.order(side="BUY", type="MARKET", quantity="0.01")
    update = orjson.loads(await stream.get())
    assert update["e"] == "ACCOUNT_UPDATE"  # the ORDER_TRADE_UPDATEs were filtered out
    assert set(update["a"]["P"][0]) == {"s", "pa", "ep", "bep", "cr", "up", "mt", "iw", "ps"}
    expired = orjson.loads(await asyncio.wait_for(stream.get(), timeout=5))
    assert expired["e"] == "listenKeyExpired"
    assert expired["listenKey"] == first
    assert stream.closed_reason == "listenKeyExpired"
    with pytest.raises(UserStreamClosedError):
        await stream.get()
    assert ex.engine.open_user_stream(first, None) is None
    gone = await ex.keyed("PUT", "/fapi/v1/listenKey")
    assert error_of(gone)[:2] == (400, -1125)
    assert (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"] != first


@e2e(user_stream_queue=3)
async def test_slow_user_stream_is_dropped_not_grown(ex: Exchange) -> None:
    key = (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    slow = ex.engine.open_user_stream(key, None)
    assert slow is not None
    await ex.order(side="BUY", type="MARKET", quantity="3")  # NEW + 2 x (TRADE, ACCOUNT_UPDATE)
    assert slow.closed_reason == "slow consumer"
    assert slow.queue_size == 0
    with pytest.raises(UserStreamClosedError):
        await slow.get()


@e2e()
async def test_order_trade_update_carries_every_documented_field(ex: Exchange) -> None:
    key = (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    stream = ex.engine.open_user_stream(key, frozenset({"ORDER_TRADE_UPDATE"}))
    assert stream is not None
    await ex.order(side="SELL", type="MARKET", quantity="0.01", newClientOrderId="m1")
    new, trade = [orjson.loads(await stream.get()) for _ in range(2)]
    assert set(trade["o"]) == set(DOC_ORDER_UPDATE["o"])
    assert set(new["o"]) == set(DOC_ORDER_UPDATE["o"])
    assert (new["o"]["x"], trade["o"]["x"], trade["o"]["X"]) == ("NEW", "TRADE", "FILLED")
    assert (trade["o"]["c"], trade["o"]["l"], trade["o"]["L"], trade["o"]["S"]) == (
        "m1",
        "0.01",
        "8999.9",
        "SELL",
    )
    assert trade["o"]["T"] == trade["T"]
    assert trade["E"] >= trade["T"]
    await ex.keyed("DELETE", "/fapi/v1/listenKey")
    assert stream.closed_reason == "listenKey deleted"


@e2e()
async def test_leverage_drives_the_margin_check(ex: Exchange) -> None:
    assert (await ex.signed("GET", "/fapi/v1/positionSide/dual", {})).json() == {
        "dualSidePosition": False
    }
    order = {"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "8000"}
    assert (await ex.order(**order, quantity="2")).status_code == 200  # 16000 at 20x: 800
    changed = await ex.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "1"})
    assert changed.json() == {"leverage": 1, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}
    assert error_of(await ex.order(**order, quantity="0.1"))[1] == -2019  # 16000 locked at 1x
    bad = await ex.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "0"})
    assert error_of(bad)[1] == -4028
    assert TradingEngine.ROUTE_WEIGHTS[("POST", "/fapi/v1/order")] == 0


@e2e()
async def test_sim_accounts_validates_its_input(ex: Exchange) -> None:
    url = f"{ex.base}/sim/accounts"
    default = (await ex.http.post(url)).json()
    assert default["balance"] == "10000.00000000"
    assert len(default["apiKey"]) == len(default["secretKey"]) == 64
    assert error_of(await ex.http.post(url, json={"balance": "-1"}))[1] == -1130
    assert error_of(await ex.http.post(url, json={"apiKey": ex.api_key}))[1] == -1130
