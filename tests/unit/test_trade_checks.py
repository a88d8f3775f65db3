"""The web tier's checks of a trade command, against real exchangeInfo filters (BTCUSDT 2021)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.trading import Instrument, OrderCommand, decode_command, encode_command
from tests.conftest import exchange_info
from web import trade_checks as checks
from web.trade_checks import Refusal


@pytest.fixture(scope="module")
def btc() -> Instrument:
    entry = next(s for s in exchange_info()["symbols"] if s["symbol"] == "BTCUSDT")
    return Instrument.from_exchange(entry)


def order(**over: Any) -> dict[str, Any]:
    return {"side": "BUY", "type": "LIMIT", "quantity": "0.010", "price": "30000.00", **over}


def refused(body: dict[str, Any], inst: Instrument, ref: Decimal | None = None) -> str:
    with pytest.raises(Refusal) as info:
        checks.place(body, inst, ref)
    return info.value.code


def test_filters_come_from_the_exchange_entry(btc: Instrument) -> None:
    assert btc.tick_size == Decimal("0.01")
    assert btc.step_size == Decimal("0.001")
    assert btc.min_notional == Decimal("5")
    assert btc.multiplier_up == Decimal("1.1500")
    assert Instrument.from_dict(btc.to_dict()) == btc


def test_a_valid_limit_and_market_order_pass(btc: Instrument) -> None:
    ok = checks.place(order(), btc, Decimal("30000"))
    assert ok.quantity == Decimal("0.010")
    assert ok.price == Decimal("30000.00")
    assert ok.time_in_force == "GTC"
    market = checks.place({"side": "SELL", "type": "MARKET", "quantity": "0.5"}, btc, None)
    assert market.price is None
    assert market.order_type == "MARKET"


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"quantity": "0.0105"}, "step_size"),
        ({"price": "30000.005"}, "tick_size"),
        ({"quantity": "0.0001"}, "min_qty"),
        ({"quantity": "100000"}, "max_qty"),
        ({"price": "100.00"}, "min_price"),
        ({"quantity": "0.001", "price": "1000.00"}, "min_notional"),
        ({"quantity": "0"}, "bad_quantity"),
        ({"quantity": "-1"}, "bad_quantity"),
        ({"quantity": "NaN"}, "bad_quantity"),
        ({"quantity": "Infinity"}, "bad_quantity"),
        ({"quantity": "1e400"}, "bad_quantity"),
        ({"quantity": 0.01}, "bad_quantity"),
        ({"quantity": ["1"]}, "bad_quantity"),
        ({"quantity": None}, "bad_quantity"),
        ({"quantity": True}, "bad_quantity"),
        ({"price": "abc"}, "bad_price"),
        ({"side": "buy"}, "bad_side"),
        ({"type": "STOP_MARKET"}, "bad_type"),
        ({"time_in_force": "GTD"}, "bad_time_in_force"),
        ({"reduce_only": "yes"}, "bad_reduce_only"),
        ({"price": "40000.00"}, "percent_price"),
    ],
)
def test_every_rule_is_named(btc: Instrument, over: dict[str, Any], code: str) -> None:
    assert refused(order(**over), btc, Decimal("30000")) == code


def test_market_orders_take_no_price_and_use_the_market_lot_size(btc: Instrument) -> None:
    assert refused({"side": "BUY", "type": "MARKET", "quantity": "1", "price": "1"}, btc) == (
        "bad_price"
    )
    assert refused({"side": "BUY", "type": "MARKET", "quantity": "0.001"}, btc, Decimal(1000)) == (
        "min_notional"
    )
    # reduce-only is exempt from MIN_NOTIONAL, as on Binance
    checks.place({"side": "SELL", "type": "MARKET", "quantity": "0.001", "reduce_only": True},
                 btc, Decimal(1000))  # fmt: skip


def test_request_ids_and_symbols(btc: Instrument) -> None:
    for bad in (None, "", "x" * 65, "has space", 5, ["a"]):
        with pytest.raises(Refusal, match="request_id"):
            checks.request_id({"request_id": bad})
    with pytest.raises(Refusal) as info:
        checks.symbol({"symbol": "DOGEUSDX"}, {"BTCUSDT": btc})
    assert info.value.code == "unknown_symbol"
    assert info.value.status == 404


def test_commands_round_trip_and_a_bad_field_is_named() -> None:
    cmd = OrderCommand("r-1", "0x" + "A" * 40, "place", 1, symbol="BTCUSDT",
                       client_order_id="tpabc", side="BUY", order_type="LIMIT",
                       time_in_force="GTC", quantity=Decimal("0.010"),
                       price=Decimal("30000.5"))  # fmt: skip
    assert decode_command(encode_command(cmd)) == cmd
    from core.errors import SchemaError

    with pytest.raises(SchemaError, match="quantity"):
        decode_command(encode_command(cmd).replace(b'"0.010"', b'"1e5"'))
    with pytest.raises(SchemaError, match="unknown fields"):
        decode_command(encode_command(cmd).replace(b'"k":"cmd"', b'"k":"cmd","x":1'))
