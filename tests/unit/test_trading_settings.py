"""Leverage and margin type per symbol: Binance's answers and refusals (pure)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from simulator.trading.account_config import set_leverage, set_margin_type
from simulator.trading.accounts import Account
from simulator.trading.errors import ApiError
from simulator.trading.filters import SymbolRules
from simulator.trading.orders import Order
from simulator.trading.payloads import account_update, position_risk
from tests.unit.test_trading_history_queries import RULES


def rules_for(symbol: str) -> SymbolRules | None:
    return RULES if symbol == "BTCUSDT" else None


def refusal(fn, account: Account, params: dict) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        fn(account, params, rules_for)
    return info.value.code, info.value.msg


def test_margin_type_switches_and_is_reported() -> None:
    account = Account("k", "s", D(1000))
    assert account.margin_type("BTCUSDT") == "CROSSED"
    answer = set_margin_type(account, {"symbol": "BTCUSDT", "marginType": "ISOLATED"}, rules_for)
    assert answer == {"code": 200, "msg": "success"}
    risk = position_risk(account, "BTCUSDT", D(9000), RULES, v3=False)
    assert (risk["marginType"], risk["leverage"]) == ("isolated", "20")
    update = account_update(account, account.position("BTCUSDT"), D(9000), event_ms=1, trans_ms=1)
    assert update["a"]["P"][0]["mt"] == "isolated"
    assert refusal(set_margin_type, account, {"symbol": "BTCUSDT", "marginType": "ISOLATED"}) == (
        -4046,
        "No need to change margin type.",
    )
    set_margin_type(account, {"symbol": "BTCUSDT", "marginType": "CROSSED"}, rules_for)
    assert position_risk(account, "BTCUSDT", None, RULES, v3=False)["marginType"] == "cross"


def test_margin_type_is_locked_by_open_orders_then_by_a_position() -> None:
    account = Account("k", "s", D(1000))
    order = Order(1, "c", "BTCUSDT", "BUY", "LIMIT", "GTC", D(9000), D(1), False, 0, 0)
    account.add_order(order)
    params = {"symbol": "BTCUSDT", "marginType": "ISOLATED"}
    assert refusal(set_margin_type, account, params) == (
        -4047,
        "Margin type cannot be changed if there exists open orders.",
    )
    order.status = "FILLED"
    account.position("BTCUSDT").apply_fill(D(1), D(9000), D(0), 0)
    assert refusal(set_margin_type, account, params) == (
        -4048,
        "Margin type cannot be changed if there exists position.",
    )


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "marginType": "CROSS"}, -1102),
        ({"symbol": "BTCUSDT", "marginType": "isolated"}, -1102),
        ({"symbol": "NOPEUSDT", "marginType": "ISOLATED"}, -1121),
    ],
)
def test_bad_margin_type_requests(params: dict, code: int) -> None:
    assert refusal(set_margin_type, Account("k", "s", D(1000)), params)[0] == code


def test_leverage_answer_and_bounds() -> None:
    account = Account("k", "s", D(1000))
    assert set_leverage(account, {"symbol": "BTCUSDT", "leverage": "25"}, rules_for) == {
        "leverage": 25,
        "maxNotionalValue": "1000000",
        "symbol": "BTCUSDT",
    }
    assert account.leverage_of("BTCUSDT") == 25
    assert refusal(set_leverage, account, {"symbol": "BTCUSDT", "leverage": "126"}) == (
        -4028,
        "Leverage 126 is not valid",
    )
    assert refusal(set_leverage, account, {"symbol": "BTCUSDT", "leverage": "x"})[0] == -1102
