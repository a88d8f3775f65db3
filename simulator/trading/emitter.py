"""User-stream events of the trading engine: stamped, built only when a stream reads them.

An event for an account whose listen key has no connected stream is not built at all: like on
Binance, what happens while no stream is connected is missed by the streams (no replay); the
REST endpoints (order, openOrders, allOrders, userTrades, positionRisk) are how a client catches
up. ``E`` and ``T`` are strictly increasing per account and event type (reference section 4).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from simulator.trading import payloads
from simulator.trading.accounts import Account
from simulator.trading.orders import Order
from simulator.trading.userstream import EventClock, ListenKeys


class EventEmitter:
    """Publishes ORDER_TRADE_UPDATE, ACCOUNT_UPDATE and ACCOUNT_CONFIG_UPDATE events."""

    def __init__(
        self,
        listen_keys: ListenKeys,
        *,
        now_ms: Callable[[], int],
        mark_price: Callable[[str], Decimal | None],
    ) -> None:
        self._keys = listen_keys
        self._now_ms = now_ms
        self._mark_price = mark_price
        self._clocks: dict[str, EventClock] = {}

    def _stamp(self, account: Account, event_type: str) -> tuple[int, int]:
        clock = self._clocks.get(account.api_key)
        if clock is None:
            clock = self._clocks[account.api_key] = EventClock()
        return clock.stamp(event_type, self._now_ms())

    def order(self, account: Account, order: Order, execution: str, **fields: Any) -> None:
        """Publish an ORDER_TRADE_UPDATE (``fields``: see ``payloads.order_trade_update``)."""
        if not self._keys.has_streams(account.api_key):
            return
        event_ms, trans_ms = self._stamp(account, "ORDER_TRADE_UPDATE")
        event = payloads.order_trade_update(
            order, account, event_ms=event_ms, trans_ms=trans_ms, execution=execution, **fields
        )
        self._keys.publish(account.api_key, event)

    def account(self, account: Account, symbol: str) -> None:
        """Publish an ACCOUNT_UPDATE (reason ORDER) with the symbol's position."""
        if not self._keys.has_streams(account.api_key):
            return
        event_ms, trans_ms = self._stamp(account, "ACCOUNT_UPDATE")
        event = payloads.account_update(
            account,
            account.position(symbol),
            self._mark_price(symbol),
            event_ms=event_ms,
            trans_ms=trans_ms,
        )
        self._keys.publish(account.api_key, event)

    def leverage(self, account: Account, symbol: str, leverage: int) -> None:
        """Publish ``{"e":"ACCOUNT_CONFIG_UPDATE",...,"ac":{"s":symbol,"l":leverage}}``."""
        if not self._keys.has_streams(account.api_key):
            return
        event_ms, trans_ms = self._stamp(account, "ACCOUNT_CONFIG_UPDATE")
        event = {
            "e": "ACCOUNT_CONFIG_UPDATE",
            "E": event_ms,
            "T": trans_ms,
            "ac": {"s": symbol, "l": leverage},
        }
        self._keys.publish(account.api_key, event)
