"""The new-order checks that need the market or the account (pure).

``parse_new_order`` (``order_params.py``) has already checked the parameters against the symbol's
filters; these checks look at the mark price, the top of book, the open orders and the margin.
"""

from __future__ import annotations

from decimal import Decimal

from simulator.trading.accounts import Account, MarkFn
from simulator.trading.errors import ApiError
from simulator.trading.filters import (
    SymbolRules,
    check_min_notional,
    check_percent_price,
    percent_price_bounds,
)
from simulator.trading.matching import TopOfBook, is_marketable, take
from simulator.trading.order_params import NewOrder
from simulator.trading.orders import Order

ZERO = Decimal(0)


def price_bound(rules: SymbolRules, side: str, mark: Decimal | None) -> Decimal | None:
    """Return the PERCENT_PRICE limit a taker may reach (BUY: the cap, SELL: the floor)."""
    if mark is None or rules.multiplier_up <= 0:
        return None
    low, high = percent_price_bounds(rules, mark)
    return high if side == "BUY" else low


def market_price(side: str, book: TopOfBook | None, mark: Decimal | None) -> Decimal | None:
    """Return the price a MARKET order would start at: the best opposite price, else the mark."""
    if book is not None:
        price = book.ask if side == "BUY" else book.bid
        if price > 0:
            return price
    return mark


def check_entry(
    account: Account,
    req: NewOrder,
    rules: SymbolRules,
    mark: Decimal | None,
    book: TopOfBook | None,
    *,
    marks: MarkFn,
    max_levels: int,
) -> None:
    """Apply the checks that need the market or the account, in Binance's spirit.

    Raises ApiError: -4016/-4024 PERCENT_PRICE, -4164 MIN_NOTIONAL, -4116 duplicated client id,
    -2025 too many open orders, -2022 reduce-only that cannot reduce, -4131 MARKET beyond
    PERCENT_PRICE, -5022 GTX that would take, -5021 FOK that cannot fill, -2019 margin.
    """
    symbol = req.symbol
    if req.type == "LIMIT":
        check_percent_price(rules, req.side, req.price, mark)
    ref_price = req.price if req.type == "LIMIT" else market_price(req.side, book, mark)
    if not req.reduce_only and ref_price is not None:
        check_min_notional(rules, req.price if req.type == "LIMIT" else mark or ref_price, req.qty)
    if req.client_order_id is not None and any(
        o.client_order_id == req.client_order_id for o in account.open_orders(symbol)
    ):
        raise ApiError(-4116, "ClientOrderId is duplicated.")
    if sum(1 for _ in account.open_orders(symbol)) >= rules.max_num_orders:
        raise ApiError(-2025, "Reach max open order limit.")
    amount = account.position(symbol).amount
    if req.reduce_only and (amount == 0 or (amount > 0) == (req.side == "BUY")):
        raise ApiError(-2022, "ReduceOnly Order is rejected.")
    if req.type == "MARKET" and book is not None and mark is not None:
        best = book.ask if req.side == "BUY" else book.bid
        bound = price_bound(rules, req.side, mark)
        if bound is not None and (best > bound if req.side == "BUY" else best < bound):
            raise ApiError(
                -4131,
                "The counterparty's best price does not meet the PERCENT_PRICE filter limit.",
            )
    if req.time_in_force == "GTX" and book is not None and is_marketable(req.side, req.price, book):
        raise ApiError(
            -5022,
            "Due to the order could not be executed as maker, the Post Only "
            "order will be rejected. The order will not be recorded in the order "
            "history",
        )
    if req.time_in_force == "FOK" and req.type == "LIMIT":
        fills = (
            []
            if book is None
            else take(
                req.side,
                req.qty,
                book,
                tick=rules.tick,
                limit_price=req.price,
                bound=price_bound(rules, req.side, mark),
                max_levels=max_levels,
            )
        )
        if sum((f.qty for f in fills), ZERO) < req.qty:
            raise ApiError(
                -5021,
                "Due to the order could not be filled immediately, the FOK "
                "order has been rejected. The order will not be recorded in the "
                "order history",
            )
    if not req.reduce_only and ref_price is not None:
        probe = Order(
            0,
            "",
            symbol,
            req.side,
            req.type,
            req.time_in_force,
            ref_price,
            req.qty,
            False,
            0,
            0,
        )
        needed = account.open_order_margin(symbol, probe) - account.open_order_margin(symbol)
        if needed > account.available_balance(marks):
            raise ApiError(-2019, "Margin is insufficient.")
