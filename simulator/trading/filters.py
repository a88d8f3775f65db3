"""A symbol's exchangeInfo filters and the order checks Binance makes with them (pure).

Semantics from the reference, section 2.2 (``common-definition.md``). A real BTCUSDT entry::

    {"minPrice":"556.72","maxPrice":"1000000","filterType":"PRICE_FILTER","tickSize":"0.01"},
    {"stepSize":"0.001","filterType":"LOT_SIZE","maxQty":"1000","minQty":"0.001"},
    {"notional":"5","filterType":"MIN_NOTIONAL"},
    {"multiplierDown":"0.8500","multiplierUp":"1.1500","multiplierDecimal":"4",
     "filterType":"PERCENT_PRICE"}

Precision: a value with more decimals than ``pricePrecision``/``quantityPrecision`` is -1111;
a value within precision but off the tick/step grid is -4014/-4023.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation
from typing import Any

from simulator.trading.errors import ApiError, mandatory

ZERO = Decimal(0)


@dataclass(frozen=True)
class SymbolRules:
    """The parts of one exchangeInfo symbol the order checks use."""

    symbol: str
    status: str
    price_precision: int
    quantity_precision: int
    min_price: Decimal
    max_price: Decimal
    tick_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    market_step_size: Decimal
    max_num_orders: int
    min_notional: str  # kept as sent: it is echoed in the -4164 message
    multiplier_up: Decimal
    multiplier_down: Decimal

    @classmethod
    def from_exchange_info(cls, info: Mapping[str, Any]) -> SymbolRules:
        """Build the rules from one exchangeInfo ``symbols[]`` object."""
        by_type = {f["filterType"]: f for f in info.get("filters", [])}
        price = by_type.get("PRICE_FILTER", {})
        lot = by_type.get("LOT_SIZE", {})
        market = by_type.get("MARKET_LOT_SIZE", lot)
        percent = by_type.get("PERCENT_PRICE", {})

        def dec(filt: Mapping[str, Any], key: str) -> Decimal:
            return Decimal(str(filt.get(key, "0")))

        return cls(
            symbol=info["symbol"],
            status=info.get("status", "TRADING"),
            price_precision=int(info.get("pricePrecision", 8)),
            quantity_precision=int(info.get("quantityPrecision", 8)),
            min_price=dec(price, "minPrice"),
            max_price=dec(price, "maxPrice"),
            tick_size=dec(price, "tickSize"),
            min_qty=dec(lot, "minQty"),
            max_qty=dec(lot, "maxQty"),
            step_size=dec(lot, "stepSize"),
            market_min_qty=dec(market, "minQty"),
            market_max_qty=dec(market, "maxQty"),
            market_step_size=dec(market, "stepSize"),
            max_num_orders=int(by_type.get("MAX_NUM_ORDERS", {}).get("limit", 200)),
            min_notional=str(by_type.get("MIN_NOTIONAL", {}).get("notional", "0")),
            multiplier_up=dec(percent, "multiplierUp"),
            multiplier_down=dec(percent, "multiplierDown"),
        )

    @property
    def tick(self) -> Decimal:
        """Return the price step used for synthetic book levels (never zero)."""
        return self.tick_size if self.tick_size > 0 else Decimal(1).scaleb(-self.price_precision)


def parse_decimal(name: str, raw: str | None) -> Decimal:
    """Parse a decimal parameter as sent; raise -1102 when it is missing or not a plain number."""
    if raw is None or raw == "":
        raise mandatory(name)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise mandatory(name) from None
    if not value.is_finite() or "e" in raw.lower():
        raise mandatory(name)
    return value


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _off_grid(value: Decimal, base: Decimal, step: Decimal) -> bool:
    return step > 0 and (value - base) % step != 0


def check_price(rules: SymbolRules, price: Decimal) -> None:
    """Apply PRICE_FILTER and the price precision; raise the matching ApiError."""
    if _decimals(price) > rules.price_precision:
        raise ApiError(-1111, "Precision is over the maximum defined for this asset.")
    if price <= 0:
        raise ApiError(-4001, "Price less than 0.")
    if rules.min_price > 0 and price < rules.min_price:
        raise ApiError(-4013, "Price less than min price.")
    if rules.max_price > 0 and price > rules.max_price:
        raise ApiError(-4002, "Price greater than max price.")
    if _off_grid(price, rules.min_price, rules.tick_size):
        raise ApiError(-4014, "Price not increased by tick size.")


def check_quantity(rules: SymbolRules, qty: Decimal, *, market: bool) -> None:
    """Apply LOT_SIZE (MARKET_LOT_SIZE for market orders) and the quantity precision."""
    min_qty, max_qty, step = (
        (rules.market_min_qty, rules.market_max_qty, rules.market_step_size)
        if market
        else (rules.min_qty, rules.max_qty, rules.step_size)
    )
    if _decimals(qty) > rules.quantity_precision:
        raise ApiError(-1111, "Precision is over the maximum defined for this asset.")
    if qty <= 0:
        raise ApiError(-4003, "Quantity less than or equal to zero.")
    if min_qty > 0 and qty < min_qty:
        raise ApiError(-4004, "Quantity less than min quantity.")
    if max_qty > 0 and qty > max_qty:
        raise ApiError(-4005, "Quantity greater than max quantity.")
    if _off_grid(qty, min_qty, step):
        raise ApiError(-4023, "Qty not increased by step size.")


def percent_price_bounds(rules: SymbolRules, mark: Decimal) -> tuple[Decimal, Decimal]:
    """Return (lowest SELL price, highest BUY price) PERCENT_PRICE allows around ``mark``."""
    places = Decimal(1).scaleb(-rules.price_precision)
    low = (mark * rules.multiplier_down).quantize(places, ROUND_UP)
    high = (mark * rules.multiplier_up).quantize(places, ROUND_DOWN)
    return low, high


def check_percent_price(
    rules: SymbolRules, side: str, price: Decimal, mark: Decimal | None
) -> None:
    """Apply PERCENT_PRICE to a LIMIT price against the mark price (skipped without a mark).

    The bound is printed at the price precision: ``Limit price can't be higher than 55312.30.``
    """
    if mark is None or rules.multiplier_up <= 0:
        return
    low, high = percent_price_bounds(rules, mark)
    if side == "BUY" and price > high:
        raise ApiError(-4016, f"Limit price can't be higher than {high:f}.")
    if side == "SELL" and price < low:
        raise ApiError(-4024, f"Limit price can't be lower than {low:f}.")


def check_min_notional(rules: SymbolRules, price: Decimal, qty: Decimal) -> None:
    """Apply MIN_NOTIONAL (callers skip it for reduce-only orders, as Binance does)."""
    if price * qty < Decimal(rules.min_notional):
        raise ApiError(
            -4164,
            f"Order's notional must be no smaller than {rules.min_notional} "
            "(unless you choose reduce only).",
        )
