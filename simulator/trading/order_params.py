"""Read and check the parameters of ``POST /fapi/v1/order`` (pure).

Only what this endpoint still accepts since 2025-12-09 is supported: ``MARKET`` and ``LIMIT``
(GTC, IOC, FOK, GTX) in one-way mode; conditional types answer -4120 (reference section 3.3).
Checks that need the market (PERCENT_PRICE, MIN_NOTIONAL of MARKET orders, margin) are the
engine's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from simulator.trading.errors import ApiError, invalid, mandatory
from simulator.trading.filters import SymbolRules, check_price, check_quantity, parse_decimal
from simulator.trading.orders import CONDITIONAL_TYPES

ZERO = Decimal(0)
CLIENT_ORDER_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "GTX"})
STP_MODES = frozenset({"NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"})


@dataclass(frozen=True)
class NewOrder:
    """A new-order request whose parameters passed the stateless checks."""

    symbol: str
    side: str
    type: str
    time_in_force: str
    price: Decimal  # 0 for MARKET
    qty: Decimal
    reduce_only: bool
    client_order_id: str | None
    resp_type: str  # ACK / RESULT
    stp_mode: str


def required(params: Mapping[str, str], name: str) -> str:
    """Return a mandatory parameter; raise -1102 when it is missing or empty."""
    value = params.get(name, "")
    if value == "":
        raise mandatory(name)
    return value


def parse_bool(params: Mapping[str, str], name: str) -> bool:
    """Return a "true"/"false" parameter (absent means false); raise -1130 otherwise."""
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise invalid(name)
    return value == "true"


def symbol_rules(
    params: Mapping[str, str], rules_for: Callable[[str], SymbolRules | None]
) -> SymbolRules:
    """Return the rules of the ``symbol`` parameter; raise -1102 or -1121."""
    rules = rules_for(required(params, "symbol"))
    if rules is None:
        raise ApiError(-1121, "Invalid symbol.")
    return rules


def parse_new_order(
    params: Mapping[str, str], rules_for: Callable[[str], SymbolRules | None]
) -> tuple[NewOrder, SymbolRules]:
    """Check a new-order request against its symbol's filters; raise the first ApiError."""
    rules = symbol_rules(params, rules_for)
    side = required(params, "side")
    if side not in ("BUY", "SELL"):
        raise ApiError(-1117, "Invalid side.")
    order_type = required(params, "type")
    if order_type in CONDITIONAL_TYPES:
        raise ApiError(
            -4120,
            "Order type not supported for this endpoint. Please use the Algo Order API "
            "endpoints instead.",
        )
    if order_type not in ("LIMIT", "MARKET"):
        raise ApiError(-1116, "Invalid orderType.")
    position_side = params.get("positionSide", "BOTH")
    if position_side in ("LONG", "SHORT"):
        raise ApiError(-4061, "Order's position side does not match user's setting.")
    if position_side != "BOTH":
        raise ApiError(-4060, "Invalid position side.")
    if parse_bool(params, "closePosition"):
        raise ApiError(
            -4120,
            "Order type not supported for this endpoint. Please use the Algo "
            "Order API endpoints instead.",
        )
    reduce_only = parse_bool(params, "reduceOnly")
    resp_type = params.get("newOrderRespType", "ACK")
    if resp_type not in ("ACK", "RESULT"):
        raise ApiError(-1136, "Invalid newOrderRespType.")
    if params.get("priceMatch", "NONE") != "NONE":
        raise invalid("priceMatch")  # not simulated
    stp_mode = params.get("selfTradePreventionMode", "NONE")
    if stp_mode not in STP_MODES:
        raise invalid("selfTradePreventionMode")
    client_id = params.get("newClientOrderId")
    if client_id is not None and not CLIENT_ORDER_ID.fullmatch(client_id):
        raise ApiError(-4015, "Client order id is not valid.")
    qty = parse_decimal("quantity", params.get("quantity"))
    if order_type == "LIMIT":
        tif = required(params, "timeInForce")
        if tif not in TIME_IN_FORCE:
            raise ApiError(-1115, "Invalid timeInForce.")
        price = parse_decimal("price", params.get("price"))
        check_price(rules, price)
        check_quantity(rules, qty, market=False)
    else:
        tif, price = "GTC", ZERO  # Binance reports MARKET orders as GTC
        check_quantity(rules, qty, market=True)
    order = NewOrder(
        symbol=rules.symbol,
        side=side,
        type=order_type,
        time_in_force=tif,
        price=price,
        qty=qty,
        reduce_only=reduce_only,
        client_order_id=client_id,
        resp_type=resp_type,
        stp_mode=stp_mode,
    )
    return order, rules


def order_ref(params: Mapping[str, str]) -> tuple[int | None, str | None]:
    """Return (orderId, origClientOrderId) of a query/cancel request; one must be sent."""
    raw_id = params.get("orderId", "")
    client_id = params.get("origClientOrderId") or None
    if raw_id == "" and client_id is None:
        raise ApiError(
            -1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!"
        )
    if raw_id and not raw_id.isdigit():
        raise mandatory("orderId")
    return (int(raw_id) if raw_id else None), client_id
