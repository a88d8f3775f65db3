"""Order state from the exchange's answers and events: monotonic, final is final, fills exact."""

from __future__ import annotations

from core.trading import Order
from execution import orders


def fresh(status: str = "SENDING") -> Order:
    return Order("tp" + "x" * 30, "BTCUSDT", "BUY", "LIMIT", "0.010", status, price="30000")


def event(x: str, status: str, z: str, t_ms: int, **extra: str) -> dict[str, object]:
    return {"c": "tp" + "x" * 30, "s": "BTCUSDT", "S": "BUY", "o": "LIMIT", "q": "0.010",
            "x": x, "X": status, "z": z, "T": t_ms, "i": 7, "ap": "30000", **extra}  # fmt: skip


def test_a_fill_that_arrives_before_the_rest_answer_is_not_undone_by_it() -> None:
    order = fresh()
    assert orders.apply_event(order, event("TRADE", "FILLED", "0.010", 200))
    late_answer = {"status": "NEW", "executedQty": "0", "updateTime": 100, "orderId": 7}
    assert not orders.apply_rest(order, late_answer)
    assert order.status == "FILLED"
    assert order.executed_qty == "0.01"


def test_cumulative_quantity_never_goes_back_and_repeats_change_nothing() -> None:
    order = fresh()
    assert orders.apply_event(order, event("TRADE", "PARTIALLY_FILLED", "0.004", 100))
    assert not orders.apply_event(order, event("TRADE", "PARTIALLY_FILLED", "0.004", 100))
    assert not orders.apply_event(order, event("NEW", "NEW", "0", 90))
    assert orders.apply_event(order, event("CANCELED", "CANCELED", "0.004", 150))
    assert order.final
    assert order.executed_qty == "0.004"
    assert not orders.apply_event(order, event("TRADE", "PARTIALLY_FILLED", "0.004", 160))


def test_the_exchange_may_shrink_a_reduce_only_order() -> None:
    order = fresh()
    orders.apply_rest(order, {"status": "NEW", "executedQty": "0", "origQty": "0.004",
                              "updateTime": 5, "orderId": 9})  # fmt: skip
    assert order.quantity == "0.004"
    assert order.order_id == 9


def test_a_fill_is_the_same_record_from_the_stream_and_from_user_trades() -> None:
    o = event("TRADE", "FILLED", "0.010", 200, t="55", L="30000.10", l="0.010", n="0.12004000",
              N="USDT", rp="0.00000000", m="false")  # fmt: skip
    o["m"] = False
    row = {"symbol": "BTCUSDT", "id": 55, "orderId": 7, "side": "BUY", "price": "30000.1",
           "qty": "0.01", "commission": "0.12004", "commissionAsset": "USDT", "realizedPnl": "0",
           "maker": False, "time": 200}  # fmt: skip
    from_stream = orders.fill_from_event(o)
    from_rest = orders.fill_from_trade(row, "tp" + "x" * 30)
    assert from_stream == from_rest


def test_error_codes_become_sentences() -> None:
    assert "minimum notional" in orders.error_text(-4164, "Order's notional must be ...")
    assert orders.error_text(-9999, "Odd.") == "the exchange refused: Odd."


def test_an_account_update_moves_balances_and_sizes_without_a_rest_read() -> None:
    # the documented ACCOUNT_UPDATE (reference §4), trimmed
    a = {
        "m": "ORDER",
        "B": [{"a": "USDT", "wb": "122624.12345678", "cw": "100.12345678", "bc": "50.12345678"}],
        "P": [
            {
                "s": "BTCUSDT",
                "pa": "0.010",
                "ep": "30000.00000",
                "bep": "0",
                "cr": "200",
                "up": "-0.5",
                "mt": "cross",
                "iw": "0",
                "ps": "BOTH",
            },
            {"s": "ETHUSDT", "pa": "0", "ep": "0", "up": "0", "mt": "cross", "ps": "BOTH"},
        ],
    }
    balances = {"USDT": {"wallet": "1", "available": "1"}}
    positions = {"ETHUSDT": {"amount": "1"}, "BTCUSDT": {"leverage": "7"}}
    orders.apply_account_update(a, balances, positions)  # fmt: skip
    assert balances["USDT"] == {"wallet": "122624.12345678", "available": "1"}
    assert positions == {
        "BTCUSDT": {
            "leverage": "7",
            "amount": "0.01",
            "entry_price": "30000",
            "unrealized_pnl": "-0.5",
            "margin_type": "cross",
        }
    }
