"""How an order trades against the simulated top of book (pure).

The market only exposes the best bid and ask with their quantities, so depth is synthetic:

* A taker BUY takes ``ask_qty`` at the ask, then ``ask_qty`` more at each price one tick worse
  (ask + tick, ask + 2 ticks, ...), for at most ``max_levels`` levels; a SELL walks down from the
  bid the same way. A LIMIT order stops at its limit price, any order at the PERCENT_PRICE bound.
* A resting LIMIT order is a maker: it trades at its own price once the opposite best price
  reaches it (BUY when ask <= price, SELL when bid >= price), for at most the opposite best
  quantity per book update, shared in time priority by the orders resting on that symbol.

Taking liquidity does not change the market's book: the next order sees the same top of book.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class TopOfBook:
    """The best bid and ask with their quantities."""

    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal


@dataclass(frozen=True)
class Fill:
    """One trade of an order: a quantity at a price."""

    price: Decimal
    qty: Decimal


def is_marketable(side: str, price: Decimal, book: TopOfBook) -> bool:
    """Return whether a LIMIT order at ``price`` would take liquidity on arrival."""
    if side == "BUY":
        return book.ask_qty > 0 and price >= book.ask
    return book.bid_qty > 0 and price <= book.bid


def take(
    side: str,
    qty: Decimal,
    book: TopOfBook,
    *,
    tick: Decimal,
    limit_price: Decimal | None = None,
    bound: Decimal | None = None,
    max_levels: int = 50,
) -> list[Fill]:
    """Return the fills of a taker order walking the synthetic levels (possibly partial)."""
    start, level_qty = (book.ask, book.ask_qty) if side == "BUY" else (book.bid, book.bid_qty)
    step = tick if side == "BUY" else -tick
    fills: list[Fill] = []
    remaining = qty
    if level_qty <= 0 or start <= 0:
        return fills
    for level in range(max_levels):
        if remaining <= 0:
            break
        price = start + step * level
        if price <= 0:
            break
        if limit_price is not None and (
            price > limit_price if side == "BUY" else price < limit_price
        ):
            break
        if bound is not None and (price > bound if side == "BUY" else price < bound):
            break
        fill_qty = min(remaining, level_qty)
        fills.append(Fill(price, fill_qty))
        remaining -= fill_qty
    return fills


def crossing_qty(side: str, price: Decimal, book: TopOfBook) -> Decimal:
    """Return how much of the opposite best quantity a resting order at ``price`` may trade now."""
    if side == "BUY":
        return book.ask_qty if book.ask_qty > 0 and book.ask <= price else ZERO
    return book.bid_qty if book.bid_qty > 0 and book.bid >= price else ZERO
