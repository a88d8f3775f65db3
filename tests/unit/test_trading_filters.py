"""Order filters built from a real exchangeInfo entry (BTCUSDT, 2021-07-22 capture)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from simulator.trading.errors import ApiError
from simulator.trading.filters import (
    SymbolRules,
    check_min_notional,
    check_percent_price,
    check_price,
    check_quantity,
    parse_decimal,
)
from simulator.trading.order_params import parse_new_order

FIXTURE = Path(__file__).parents[1] / "fixtures" / "exchange-info-2021-07-22.txt"


def real_symbols() -> dict[str, dict]:
    line = FIXTURE.read_text().splitlines()[0]
    info = orjson.loads(line.split(": ", 1)[1])
    return {s["symbol"]: s for s in info["symbols"]}


SYMBOLS = real_symbols()
BTC = SymbolRules.from_exchange_info(SYMBOLS["BTCUSDT"])


def error(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value.code, info.value.msg


def test_rules_are_read_from_the_real_filters() -> None:
    assert (BTC.tick_size, BTC.min_price, BTC.step_size, BTC.min_notional) == (
        Decimal("0.01"),
        Decimal("556.72"),
        Decimal("0.001"),
        "5",
    )
    assert (BTC.multiplier_up, BTC.multiplier_down, BTC.max_num_orders) == (
        Decimal("1.1500"),
        Decimal("0.8500"),
        200,
    )


@pytest.mark.parametrize(
    ("price", "code"),
    [
        ("9000.001", -1111),  # 3 decimals, pricePrecision is 2
        ("500", -4013),
        ("1000000.01", -4002),
        ("0", -4001),
    ],
)
def test_price_filter(price: str, code: int) -> None:
    assert error(check_price, BTC, Decimal(price))[0] == code


def test_price_tick_is_counted_from_min_price() -> None:
    check_price(BTC, Decimal("9000.00"))
    eth = SymbolRules.from_exchange_info(
        {
            **SYMBOLS["ETHUSDT"],
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.05",
                    "maxPrice": "0",
                    "tickSize": "0.10",
                }
            ],
        }
    )
    check_price(eth, Decimal("100.05"))
    assert error(check_price, eth, Decimal("100.10")) == (
        -4014,
        "Price not increased by tick size.",
    )


@pytest.mark.parametrize(
    ("qty", "market", "code"),
    [
        ("0.0001", False, -1111),
        ("0", False, -4003),
        ("-1", True, -4003),
        ("1001", False, -4005),
    ],
)
def test_lot_size(qty: str, market: bool, code: int) -> None:
    assert error(check_quantity, BTC, Decimal(qty), market=market)[0] == code


def test_step_and_min_qty_with_coarser_steps() -> None:
    coarse = SymbolRules.from_exchange_info(
        {
            **SYMBOLS["BTCUSDT"],
            "filters": [
                {"filterType": "LOT_SIZE", "minQty": "0.01", "maxQty": "100", "stepSize": "0.01"},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.1",
                    "maxQty": "10",
                    "stepSize": "0.1",
                },
            ],
        }
    )
    assert error(check_quantity, coarse, Decimal("0.005"), market=False)[0] == -4004
    assert error(check_quantity, coarse, Decimal("0.015"), market=False)[0] == -4023
    assert error(check_quantity, coarse, Decimal("0.25"), market=True)[0] == -4023
    assert error(check_quantity, coarse, Decimal("11"), market=True)[0] == -4005
    check_quantity(coarse, Decimal("0.25"), market=False)


def test_min_notional_message_is_binances() -> None:
    assert error(check_min_notional, BTC, Decimal("4000"), Decimal("0.001")) == (
        -4164,
        "Order's notional must be no smaller than 5 (unless you choose reduce only).",
    )
    check_min_notional(BTC, Decimal("5000"), Decimal("0.001"))


def test_percent_price_against_mark() -> None:
    mark = Decimal("10000")
    assert error(check_percent_price, BTC, "BUY", Decimal("11500.01"), mark) == (
        -4016,
        "Limit price can't be higher than 11500.00.",
    )
    assert error(check_percent_price, BTC, "SELL", Decimal("8499.99"), mark) == (
        -4024,
        "Limit price can't be lower than 8500.00.",
    )
    check_percent_price(BTC, "BUY", Decimal("11500"), mark)
    check_percent_price(BTC, "SELL", Decimal("1"), None)  # no mark yet: not applied


@pytest.mark.parametrize("raw", ["", "abc", "1e3", "NaN", "Infinity"])
def test_malformed_numbers_are_mandatory_parameter_errors(raw: str) -> None:
    assert error(parse_decimal, "quantity", raw)[0] == -1102


def rules_for(symbol: str) -> SymbolRules | None:
    return SymbolRules.from_exchange_info(SYMBOLS[symbol]) if symbol in SYMBOLS else None


BASE = {
    "symbol": "BTCUSDT",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.010",
    "price": "9000",
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"symbol": "NOPEUSDT"}, -1121),
        ({"side": "HOLD"}, -1117),
        ({"type": "STOP_MARKET"}, -4120),
        ({"type": "TRAILING_STOP_MARKET"}, -4120),
        ({"type": "ICEBERG"}, -1116),
        ({"timeInForce": "GTD"}, -1115),
        ({"positionSide": "LONG"}, -4061),
        ({"newClientOrderId": "has space"}, -4015),
        ({"newClientOrderId": "x" * 37}, -4015),
        ({"reduceOnly": "yes"}, -1130),
        ({"newOrderRespType": "FULL"}, -1136),
        ({"price": "9000.005"}, -1111),
        ({"quantity": "0.0105"}, -1111),
    ],
)
def test_new_order_parameter_errors(change: dict[str, str], code: int) -> None:
    assert error(parse_new_order, BASE | change, rules_for)[0] == code


@pytest.mark.parametrize("name", ["symbol", "side", "type", "quantity", "price", "timeInForce"])
def test_new_order_mandatory_parameters(name: str) -> None:
    params = {k: v for k, v in BASE.items() if k != name}
    assert error(parse_new_order, params, rules_for) == (
        -1102,
        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    )


def test_market_order_needs_no_price_and_reports_gtc() -> None:
    order, _ = parse_new_order(
        {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "1"}, rules_for
    )
    assert (order.type, order.time_in_force, order.price, order.resp_type) == (
        "MARKET",
        "GTC",
        Decimal(0),
        "ACK",
    )
