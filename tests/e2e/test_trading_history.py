"""userTrades, allOrders and the admin record of fills, over real HTTP against the engine."""

from __future__ import annotations

from decimal import Decimal as D

from simulator.trading import TradingEngine
from tests.e2e.test_trading_api import Exchange, drain, e2e, error_of

TRADE_FIELDS = {
    "buyer", "commission", "commissionAsset", "id", "maker", "orderId", "price", "qty",
    "quoteQty", "realizedPnl", "side", "positionSide", "symbol", "time",
}  # fmt: skip


@e2e()
async def test_user_trades_match_the_stream_and_the_account(ex: Exchange) -> None:
    key = (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    stream = ex.engine.open_user_stream(key, frozenset({"ORDER_TRADE_UPDATE"}))
    assert stream is not None
    bought = (await ex.order(side="BUY", type="MARKET", quantity="3")).json()  # 2 levels
    ex.market.books["BTCUSDT"] = (D("9100.00"), D("5"), D("9100.10"), D("5"))
    sold = (await ex.order(side="SELL", type="MARKET", quantity="1")).json()
    events = [e["o"] for e in await drain(stream) if e["o"]["x"] == "TRADE"]
    rows = (await ex.signed("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"})).json()
    assert [r["id"] for r in rows] == [e["t"] for e in events]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert all(set(r) == TRADE_FIELDS for r in rows)
    first, second, close = rows
    assert (first["orderId"], first["price"], first["qty"], first["quoteQty"]) == (
        bought["orderId"],
        "9000.10",
        "2.000",
        "18000.20000",
    )
    assert (first["side"], first["buyer"], first["maker"], first["positionSide"]) == (
        "BUY",
        True,
        False,
        "BOTH",
    )
    assert first["commission"] == f"{D('18000.20') * D('0.0004'):.8f}"
    assert (second["price"], second["qty"], second["realizedPnl"]) == (
        "9000.11",
        "1.000",
        "0.00000000",
    )
    assert (close["orderId"], close["side"], close["buyer"]) == (sold["orderId"], "SELL", False)
    entry = (D("18000.20") + D("9000.11")) / 3
    assert close["realizedPnl"] == f"{(D('9100.00') - entry):.8f}"
    assert D(close["realizedPnl"]) == D(events[2]["rp"])
    by_order = await ex.signed(
        "GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "orderId": str(sold["orderId"])}
    )
    assert [r["id"] for r in by_order.json()] == [close["id"]]
    from_id = await ex.signed(
        "GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT", "fromId": str(second["id"])}
    )
    assert [r["id"] for r in from_id.json()] == [second["id"], close["id"]]
    assert (await ex.signed("GET", "/fapi/v1/userTrades", {"symbol": "ETHUSDT"})).json() == []
    assert error_of(await ex.signed("GET", "/fapi/v1/userTrades", {}))[1] == -1102
    bad_combo = {"symbol": "BTCUSDT", "fromId": "1", "startTime": "1"}
    assert error_of(await ex.signed("GET", "/fapi/v1/userTrades", bad_combo))[1] == -1128


@e2e()
async def test_all_orders_lists_every_state_like_get_order(ex: Exchange) -> None:
    resting = {"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "8000"}
    canceled = (await ex.order(**resting, quantity="0.010", newClientOrderId="gone")).json()
    await ex.signed("DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "gone"})
    filled = (await ex.order(side="BUY", type="MARKET", quantity="0.010")).json()
    open_ = (await ex.order(**resting, quantity="0.020")).json()
    listed = (await ex.signed("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT"})).json()
    assert [(o["orderId"], o["status"]) for o in listed] == [
        (canceled["orderId"], "CANCELED"),
        (filled["orderId"], "FILLED"),
        (open_["orderId"], "NEW"),
    ]
    one = await ex.signed(
        "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": str(filled["orderId"])}
    )
    assert listed[1] == one.json()
    later = await ex.signed(
        "GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT", "orderId": str(filled["orderId"])}
    )
    assert [o["orderId"] for o in later.json()] == [filled["orderId"], open_["orderId"]]
    last = await ex.signed("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT", "limit": "1"})
    assert [o["orderId"] for o in last.json()] == [open_["orderId"]]
    too_many = await ex.signed("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSDT", "limit": "1001"})
    assert error_of(too_many)[1] == -1130


@e2e()
async def test_the_admin_record_has_every_fill_across_symbols(ex: Exchange) -> None:
    await ex.order(side="BUY", type="MARKET", quantity="0.010")
    await ex.signed(
        "POST",
        "/fapi/v1/order",
        {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.100"},
    )
    await ex.order(side="SELL", type="MARKET", quantity="0.010")
    record = (await ex.http.get(f"{ex.base}/sim/accounts/{ex.api_key}/trades")).json()
    assert [(r["symbol"], r["side"]) for r in record] == [
        ("BTCUSDT", "BUY"),
        ("ETHUSDT", "SELL"),
        ("BTCUSDT", "SELL"),
    ]
    assert all(set(r) == TRADE_FIELDS for r in record)
    btc = (await ex.signed("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"})).json()
    assert [r for r in record if r["symbol"] == "BTCUSDT"] == btc
    unknown = await ex.http.get(f"{ex.base}/sim/accounts/{'z' * 64}/trades")
    assert error_of(unknown)[:2] == (404, -2015)


def test_history_routes_weigh_five() -> None:
    assert TradingEngine.ROUTE_WEIGHTS[("GET", "/fapi/v1/userTrades")] == 5
    assert TradingEngine.ROUTE_WEIGHTS[("GET", "/fapi/v1/allOrders")] == 5
    assert TradingEngine.ROUTE_WEIGHTS[("POST", "/fapi/v1/marginType")] == 1
