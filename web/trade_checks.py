"""Pure checks of a trade command before anything reaches the exchange: types, filters, sizes.

Every refusal names its rule (:class:`Refusal` ``code``) and says what would pass. The filter
rules are Binance's (docs/binance.md, "Filters"): a bound of 0 is
disabled; PRICE_FILTER counts ticks from ``minPrice``; LOT_SIZE (MARKET_LOT_SIZE for market
orders) counts steps from ``minQty``; MIN_NOTIONAL uses the price (the reference price for a
market order) and exempts reduce-only; PERCENT_PRICE bounds a limit price around the mark price.
The web tier has no mark price: it uses the latest book ticker's mid price, so the exchange's own
check stays the final word on PERCENT_PRICE.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.trading import (
    MARGIN_TYPES,
    ORDER_TYPES,
    REQUEST_ID,
    SIDES,
    TIME_IN_FORCE,
    Instrument,
    parse_decimal,
)

MAX_DIGITS = 30


class Refusal(Exception):
    """A command that cannot be sent: ``code`` names the rule, ``message`` says what passes."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    price: Decimal | None
    time_in_force: str | None
    reduce_only: bool


def request_id(body: dict[str, Any]) -> str:
    rid = body.get("request_id")
    if not isinstance(rid, str) or not REQUEST_ID.match(rid):
        raise Refusal(
            "bad_request_id",
            "request_id must be 1-64 letters, digits or . _ : -, "
            "chosen by the client and reused only to retry the same command",
        )
    return rid


def symbol(body: dict[str, Any], instruments: dict[str, Instrument]) -> Instrument:
    sym = body.get("symbol")
    if not isinstance(sym, str) or not sym:
        raise Refusal("bad_symbol", "symbol must be a string such as BTCUSDT")
    instrument = instruments.get(sym)
    if instrument is None:
        raise Refusal("unknown_symbol", f"{sym[:40]!r} is not traded here", 404)
    return instrument


def _number(body: dict[str, Any], name: str) -> Decimal:
    raw = body.get(name)
    if isinstance(raw, float):
        raise Refusal(
            f"bad_{name}",
            f'{name} must be a decimal string such as "0.010" (a JSON '
            "number may lose digits: money is sent exactly)",
        )
    value = parse_decimal(raw)
    if value is None:
        raise Refusal(f"bad_{name}", f"{name} must be a finite decimal number, as a string")
    if value <= 0:
        raise Refusal(f"bad_{name}", f"{name} must be greater than zero")
    if len(value.as_tuple().digits) > MAX_DIGITS or value.adjusted() > 15:
        raise Refusal(f"bad_{name}", f"{name} is too large")
    return value


def _multiple(value: Decimal, base: Decimal, step: Decimal) -> bool:
    return not step or (value - base) % step == 0


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


def place(body: dict[str, Any], inst: Instrument, ref_price: Decimal | None) -> PlaceOrder:
    """Return the order ``body`` asks for, or raise Refusal naming the first rule it breaks."""
    side = body.get("side")
    if side not in SIDES:
        raise Refusal("bad_side", "side must be BUY or SELL")
    order_type = body.get("type", "LIMIT")
    if order_type not in ORDER_TYPES:
        raise Refusal("bad_type", f"type must be one of {', '.join(ORDER_TYPES)}")
    reduce_only = body.get("reduce_only", False)
    if not isinstance(reduce_only, bool):
        raise Refusal("bad_reduce_only", "reduce_only must be true or false")
    quantity = _number(body, "quantity")
    price: Decimal | None = None
    tif: str | None = None
    if order_type == "LIMIT":
        price = _number(body, "price")
        tif = body.get("time_in_force", "GTC")
        if tif not in TIME_IN_FORCE:
            raise Refusal("bad_time_in_force", f"time_in_force must be one of {TIME_IN_FORCE}")
        if inst.min_price and price < inst.min_price:
            raise Refusal("min_price", f"price must be at least {_fmt(inst.min_price)}")
        if inst.max_price and price > inst.max_price:
            raise Refusal("max_price", f"price must be at most {_fmt(inst.max_price)}")
        if not _multiple(price, inst.min_price, inst.tick_size):
            raise Refusal(
                "tick_size", f"price must be a multiple of the tick size {_fmt(inst.tick_size)}"
            )
    elif "price" in body or "time_in_force" in body:
        raise Refusal("bad_price", "a MARKET order takes no price or time_in_force")
    market = order_type == "MARKET"
    step = inst.market_step_size if market else inst.step_size
    lo = inst.market_min_qty if market else inst.min_qty
    hi = inst.market_max_qty if market else inst.max_qty
    if lo and quantity < lo:
        raise Refusal("min_qty", f"quantity must be at least {_fmt(lo)}")
    if hi and quantity > hi:
        raise Refusal("max_qty", f"quantity must be at most {_fmt(hi)}")
    if not _multiple(quantity, lo, step):
        raise Refusal("step_size", f"quantity must be a multiple of the step size {_fmt(step)}")
    notional_price = price if price is not None else ref_price
    if (
        not reduce_only
        and inst.min_notional
        and notional_price is not None
        and notional_price * quantity < inst.min_notional
    ):
        raise Refusal(
            "min_notional",
            f"order value (price x quantity) must be at least {_fmt(inst.min_notional)}",
        )
    if price is not None and ref_price is not None:
        if side == "BUY" and inst.multiplier_up and price > ref_price * inst.multiplier_up:
            raise Refusal(
                "percent_price",
                f"a buy limit must be at most {_fmt(inst.multiplier_up)} x the market price",
            )
        if side == "SELL" and inst.multiplier_down and price < ref_price * inst.multiplier_down:
            raise Refusal(
                "percent_price",
                f"a sell limit must be at least {_fmt(inst.multiplier_down)} x the market price",
            )
    return PlaceOrder(inst.symbol, side, order_type, quantity, price, tif, reduce_only)


def leverage(body: dict[str, Any]) -> int:
    value = body.get("leverage")
    if type(value) is not int or not 1 <= value <= 125:
        raise Refusal("bad_leverage", "leverage must be an integer from 1 to 125")
    return value


def margin_type(body: dict[str, Any]) -> str:
    value = body.get("margin_type")
    if value not in MARGIN_TYPES:
        raise Refusal("bad_margin_type", "margin_type must be ISOLATED or CROSSED")
    return str(value)
