"""What the trading engine needs to know about the simulated market, as a protocol.

The market model implements it; tests use a small double. Prices and sizes are ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol


class MarketView(Protocol):
    """Read-only view of the simulated market, as the trading engine sees it."""

    def exchange_symbols(self) -> Mapping[str, Mapping[str, Any]]:
        """Return symbol -> its exchangeInfo symbol object (with ``filters``)."""
        ...

    def best_bid_ask(self, symbol: str) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
        """Return (bid, bid_qty, ask, ask_qty), or None while the symbol has no book."""
        ...

    def mark_price(self, symbol: str) -> Decimal | None:
        """Return the symbol's mark price, or None if there is none yet."""
        ...

    def now_ms(self) -> int:
        """Return the exchange's clock in UTC milliseconds (what /fapi/v1/time answers)."""
        ...
