"""userTrades and allOrders: selection, paging, time windows and errors (pure)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from simulator.trading.errors import ApiError
from simulator.trading.filters import SymbolRules
from simulator.trading.history import WINDOW_MS, all_orders, every_trade, trade_row, user_trades
from simulator.trading.orders import Order, Trade

NOW = 1_700_000_000_000
DAY = 86_400_000
RULES = SymbolRules(
    symbol="BTCUSDT",
    status="TRADING",
    price_precision=2,
    quantity_precision=3,
    min_price=D("556.72"),
    max_price=D("1000000"),
    tick_size=D("0.01"),
    min_qty=D("0.001"),
    max_qty=D("1000"),
    step_size=D("0.001"),
    market_min_qty=D("0.001"),
    market_max_qty=D("100"),
    market_step_size=D("0.001"),
    max_num_orders=200,
    min_notional="5",
    multiplier_up=D("1.15"),
    multiplier_down=D("0.85"),
)


def trade(n: int, time_ms: int, order_id: int = 7, symbol: str = "BTCUSDT") -> Trade:
    return Trade(
        seq=n,
        id=1000 + n,
        order_id=order_id,
        symbol=symbol,
        side="SELL",
        price=D("7819.01"),
        qty=D("0.002"),
        commission=D("0.0078190100"),
        realized_pnl=D("-0.91539999"),
        maker=False,
        time_ms=time_ms,
    )


def order(order_id: int, time_ms: int) -> Order:
    return Order(
        order_id, f"c{order_id}", "BTCUSDT", "BUY", "LIMIT", "GTC", D("9000"), D("1"), False,
        time_ms, time_ms,
    )  # fmt: skip


def ids(rows: list[dict]) -> list[int]:
    return [r.get("id", r.get("orderId")) for r in rows]


def code_of(fn, *args) -> int:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value.code


def test_trade_row_has_binances_fields_and_formats() -> None:
    row = trade_row(trade(0, NOW), RULES)
    assert row == {
        "buyer": False,
        "commission": "0.00781901",
        "commissionAsset": "USDT",
        "id": 1000,
        "maker": False,
        "orderId": 7,
        "price": "7819.01",
        "qty": "0.002",
        "quoteQty": "15.63802",
        "realizedPnl": "-0.91539999",
        "side": "SELL",
        "positionSide": "BOTH",
        "symbol": "BTCUSDT",
        "time": NOW,
    }


TRADES = [trade(n, NOW - 10 * DAY + n * DAY, order_id=7 if n < 5 else 8) for n in range(10)]


def test_default_is_the_last_7_days_most_recent_first_cut() -> None:
    assert ids(user_trades(TRADES, {}, RULES, NOW)) == [1003, 1004, 1005, 1006, 1007, 1008, 1009]
    assert ids(user_trades(TRADES, {"limit": "2"}, RULES, NOW)) == [1008, 1009]


def test_from_id_is_inclusive_and_ignores_the_default_window() -> None:
    assert ids(user_trades(TRADES, {"fromId": "1001", "limit": "3"}, RULES, NOW)) == [
        1001,
        1002,
        1003,
    ]


def test_order_id_selects_the_orders_fills() -> None:
    assert ids(user_trades(TRADES, {"orderId": "7"}, RULES, NOW)) == [1000, 1001, 1002, 1003, 1004]
    assert ids(user_trades(TRADES, {"orderId": "8", "fromId": "1008"}, RULES, NOW)) == [1008, 1009]


def test_start_time_pages_forward_end_time_backward() -> None:
    start = str(NOW - 10 * DAY + DAY)
    assert ids(user_trades(TRADES, {"startTime": start, "limit": "2"}, RULES, NOW)) == [1001, 1002]
    end = str(NOW - 10 * DAY + 2 * DAY)
    assert ids(user_trades(TRADES, {"endTime": end, "limit": "2"}, RULES, NOW)) == [1001, 1002]
    window = {"startTime": start, "endTime": str(NOW - 10 * DAY + 3 * DAY)}
    assert ids(user_trades(TRADES, window, RULES, NOW)) == [1001, 1002, 1003]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"fromId": "1", "startTime": str(NOW)}, -1128),
        ({"startTime": str(NOW), "endTime": str(NOW - 1)}, -1023),
        ({"startTime": str(NOW - WINDOW_MS - 1), "endTime": str(NOW)}, -1127),
        ({"limit": "1001"}, -1130),
        ({"limit": "0"}, -1130),
        ({"fromId": "-1"}, -1100),
    ],
)
def test_bad_queries_are_refused(params: dict, code: int) -> None:
    assert code_of(user_trades, TRADES, params, RULES, NOW) == code


def test_a_7_day_window_is_accepted() -> None:
    params = {"startTime": str(NOW - WINDOW_MS), "endTime": str(NOW)}
    assert len(user_trades(TRADES, params, RULES, NOW)) == 7


ORDERS = [order(100 + n, NOW - 9 * DAY + n * DAY) for n in range(9)]


def test_all_orders_recent_first_cut_or_from_an_order_id() -> None:
    assert ids(all_orders(reversed(ORDERS), {"limit": "3"}, RULES, NOW)) == [106, 107, 108]
    assert ids(all_orders(ORDERS, {"orderId": "101", "limit": "3"}, RULES, NOW)) == [
        101,
        102,
        103,
    ]
    row = all_orders(ORDERS, {"orderId": "108"}, RULES, NOW)[0]
    assert (row["orderId"], row["time"], row["price"], row["origQty"]) == (
        108,
        ORDERS[-1].time_ms,
        "9000.00",
        "1.000",
    )


def test_all_orders_time_window() -> None:
    params = {"startTime": str(ORDERS[1].time_ms), "endTime": str(ORDERS[3].time_ms)}
    assert ids(all_orders(ORDERS, params, RULES, NOW)) == [101, 102, 103]
    too_long = {"startTime": str(NOW - 8 * DAY), "endTime": str(NOW)}
    assert code_of(all_orders, ORDERS, too_long, RULES, NOW) == -1127


def test_every_trade_merges_symbols_in_execution_order() -> None:
    eth = [trade(1, NOW, symbol="ETHUSDT"), trade(3, NOW, symbol="ETHUSDT")]
    btc = [trade(0, NOW), trade(2, NOW)]
    rows = every_trade({"BTCUSDT": btc, "ETHUSDT": eth}, lambda _s: RULES)
    assert [(r["symbol"], r["id"]) for r in rows] == [
        ("BTCUSDT", 1000),
        ("ETHUSDT", 1001),
        ("BTCUSDT", 1002),
        ("ETHUSDT", 1003),
    ]
