"""The paper-trading engine: accounts, order entry and matching, user-stream events.

The market loop calls ``on_book(symbol)`` after each book change; the REST routes call the
order and account methods; the websocket server pumps ``open_user_stream(...).get()``.
Everything runs on one asyncio event loop, so no locking is needed.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from simulator.trading import payloads
from simulator.trading.accounts import Account, AccountBook
from simulator.trading.errors import ApiError
from simulator.trading.filters import (
    SymbolRules,
    check_min_notional,
    check_percent_price,
    percent_price_bounds,
)
from simulator.trading.market_view import MarketView
from simulator.trading.matching import Fill, TopOfBook, crossing_qty, is_marketable, take
from simulator.trading.order_limits import DEFAULT_LIMITS, OrderCounter
from simulator.trading.order_params import NewOrder, order_ref, parse_new_order, symbol_rules
from simulator.trading.orders import Order
from simulator.trading.userstream import EventClock, ListenKeys, UserStream
from simulator.trading.weights import ROUTE_WEIGHTS

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

ZERO = Decimal(0)
EXPIRED_IOC = 2  # "er": IOC remainder canceled (reference section 4)
_ID_CHARS = string.ascii_letters + string.digits


class TradingEngine:
    """Paper trading against a MarketView, behind Binance's USD-M REST and user-stream API."""

    ROUTE_WEIGHTS: ClassVar[Mapping[tuple[str, str], int]] = ROUTE_WEIGHTS

    def __init__(
        self,
        market: MarketView,
        *,
        taker_fee: Decimal = Decimal("0.0004"),
        maker_fee: Decimal = Decimal("0.0002"),
        default_leverage: int = 20,
        listen_key_ttl_secs: float = 3600.0,
        user_stream_queue: int = 1000,
        max_synthetic_levels: int = 50,
        order_limits: tuple[tuple[str, int, int, str], ...] = DEFAULT_LIMITS,
        clock_secs: Callable[[], float] = time.monotonic,
    ) -> None:
        self.market = market
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.max_synthetic_levels = max_synthetic_levels
        self.accounts = AccountBook(default_leverage=default_leverage)
        self.listen_keys = ListenKeys(
            ttl_secs=listen_key_ttl_secs,
            max_queue=user_stream_queue,
            clock_secs=clock_secs,
            now_ms=market.now_ms,
        )
        self._order_limits = order_limits
        self._counters: dict[str, OrderCounter] = {}
        self._clocks: dict[str, EventClock] = {}
        self._rules: dict[str, SymbolRules] = {}
        self._next_order_id: dict[str, int] = {}
        self._next_trade_id: dict[str, int] = {}
        self._resting: dict[str, list[tuple[Account, Order]]] = {}

    # -- accounts and wiring ------------------------------------------------------------------

    def create_account(
        self,
        balance: Decimal = Decimal(10000),
        *,
        api_key: str | None = None,
        secret_key: str | None = None,
    ) -> Account:
        """Create a paper account with ``balance`` USDT; raise ValueError for a used API key."""
        account = self.accounts.create(balance, api_key=api_key, secret_key=secret_key)
        log.info("paper account created", extra={"balance": str(balance)})
        return account

    def add_routes(self, app: web.Application) -> None:
        """Register the trading REST routes and ``POST /sim/accounts`` on ``app``."""
        from simulator.trading.routes import add_routes

        add_routes(app, self)

    def open_user_stream(self, listen_key: str, events: frozenset[str] | None) -> UserStream | None:
        """Attach a reader to a live listen key; None for unknown or expired keys."""
        return self.listen_keys.open(listen_key, events)

    def now_ms(self) -> int:
        """Return the exchange clock."""
        return self.market.now_ms()

    def rules(self, symbol: str) -> SymbolRules | None:
        """Return the symbol's filters, or None for a symbol the market does not list."""
        rules = self._rules.get(symbol)
        if rules is None:
            info = self.market.exchange_symbols().get(symbol)
            if info is None:
                return None
            rules = self._rules[symbol] = SymbolRules.from_exchange_info(info)
        return rules

    def book(self, symbol: str) -> TopOfBook | None:
        """Return the symbol's top of book, or None."""
        top = self.market.best_bid_ask(symbol)
        return None if top is None else TopOfBook(*top)

    def order_counter(self, account: Account) -> OrderCounter:
        """Return the account's ORDERS rate-limit counter."""
        counter = self._counters.get(account.api_key)
        if counter is None:
            counter = self._counters[account.api_key] = OrderCounter(self._order_limits)
        return counter

    # -- orders ---------------------------------------------------------------------------------

    def place_order(self, account: Account, params: Mapping[str, str]) -> dict[str, Any]:
        """Validate, accept and match a new order; return the REST response object.

        Raises ApiError with Binance's code for every refusal.
        """
        req, rules = parse_new_order(params, self.rules)
        symbol, now = req.symbol, self.now_ms()
        mark = self.market.mark_price(symbol)
        book = self.book(symbol)
        self._check_entry(account, req, rules, mark, book)
        order = Order(
            order_id=self._new_id(self._next_order_id, symbol),
            client_order_id=req.client_order_id
            or "sim" + "".join(secrets.choice(_ID_CHARS) for _ in range(19)),
            symbol=symbol,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force,
            price=req.price,
            orig_qty=req.qty,
            reduce_only=req.reduce_only,
            time_ms=now,
            update_time_ms=now,
            self_trade_prevention_mode=req.stp_mode,
        )
        account.add_order(order)
        ack = payloads.order_object(order, rules)
        self._emit_order(account, order, "NEW")
        bound = self._price_bound(rules, req.side, mark)
        fills: list[Fill] = []
        if book is not None and (req.type == "MARKET" or is_marketable(req.side, req.price, book)):
            fills = take(
                req.side,
                req.qty,
                book,
                tick=rules.tick,
                limit_price=req.price if req.type == "LIMIT" else None,
                bound=bound,
                max_levels=self.max_synthetic_levels,
            )
        self._execute(account, order, fills, maker=False)
        if order.is_open:
            if req.type == "MARKET" or req.time_in_force == "IOC":
                self._finish(account, order, "EXPIRED", EXPIRED_IOC if req.type == "LIMIT" else 0)
            else:
                self._resting.setdefault(symbol, []).append((account, order))
        log.debug("order %s %s %s", symbol, order.order_id, order.status)
        return ack if req.resp_type == "ACK" else payloads.order_object(order, rules)

    def _check_entry(
        self,
        account: Account,
        req: NewOrder,
        rules: SymbolRules,
        mark: Decimal | None,
        book: TopOfBook | None,
    ) -> None:
        """Apply the checks that need the market or the account, in Binance's spirit."""
        symbol = req.symbol
        if req.type == "LIMIT":
            check_percent_price(rules, req.side, req.price, mark)
        ref_price = req.price if req.type == "LIMIT" else self._market_price(req.side, book, mark)
        if not req.reduce_only and ref_price is not None:
            check_min_notional(
                rules, req.price if req.type == "LIMIT" else mark or ref_price, req.qty
            )
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
            bound = self._price_bound(rules, req.side, mark)
            if bound is not None and (best > bound if req.side == "BUY" else best < bound):
                raise ApiError(
                    -4131,
                    "The counterparty's best price does not meet the PERCENT_PRICE filter limit.",
                )
        if (
            req.time_in_force == "GTX"
            and book is not None
            and is_marketable(req.side, req.price, book)
        ):
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
                    bound=self._price_bound(rules, req.side, mark),
                    max_levels=self.max_synthetic_levels,
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
            if needed > account.available_balance(self.market.mark_price):
                raise ApiError(-2019, "Margin is insufficient.")

    def cancel_order(self, account: Account, params: Mapping[str, str]) -> dict[str, Any]:
        """Cancel one open order; raise -2011 when there is no such open order."""
        rules = symbol_rules(params, self.rules)
        order_id, client_id = order_ref(params)
        order = account.find_order(rules.symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        self._finish(account, order, "CANCELED")
        return payloads.order_object(order, rules)

    def cancel_all(self, account: Account, params: Mapping[str, str]) -> dict[str, Any]:
        """Cancel every open order of one symbol."""
        rules = symbol_rules(params, self.rules)
        for order in list(account.open_orders(rules.symbol)):
            self._finish(account, order, "CANCELED")
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def query_order(self, account: Account, params: Mapping[str, str]) -> dict[str, Any]:
        """Return one order in any state; raise -2013 when it does not exist."""
        rules = symbol_rules(params, self.rules)
        order_id, client_id = order_ref(params)
        order = account.find_order(rules.symbol, order_id, client_id)
        if order is None:
            raise ApiError(-2013, "Order does not exist.")
        return payloads.order_object(order, rules, with_time=True)

    def open_orders(self, account: Account, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Return the open orders of one symbol, or of all symbols without ``symbol``."""
        symbol = symbol_rules(params, self.rules).symbol if params.get("symbol") else None
        return [
            payloads.order_object(o, self._rules_of(o.symbol), with_time=True)
            for o in account.open_orders(symbol)
        ]

    # -- matching -------------------------------------------------------------------------------

    def on_book(self, symbol: str) -> None:
        """Fill the orders resting on ``symbol`` that the new book crosses (cheap when none)."""
        resting = self._resting.get(symbol)
        if not resting:
            return
        book = self.book(symbol)
        if book is not None:
            budget = {"BUY": book.ask_qty, "SELL": book.bid_qty}
            for account, order in list(resting):
                if not order.is_open:
                    continue
                qty = min(
                    order.remaining, budget[order.side], crossing_qty(order.side, order.price, book)
                )
                if qty > 0:
                    before = order.executed_qty
                    self._execute(account, order, [Fill(order.price, qty)], maker=True)
                    budget[order.side] -= order.executed_qty - before
        self._resting[symbol] = [(a, o) for a, o in self._resting.get(symbol, []) if o.is_open]

    def _execute(self, account: Account, order: Order, fills: list[Fill], *, maker: bool) -> None:
        """Book the fills on the order, the position and the wallet; emit the events."""
        rate = self.maker_fee if maker else self.taker_fee
        position = account.position(order.symbol)
        for fill in fills:
            qty = min(fill.qty, order.remaining)
            if order.reduce_only:  # never more than what closes the position
                closable = -position.amount if order.side == "BUY" else position.amount
                qty = min(qty, max(closable, ZERO))
            if qty <= 0:
                break
            now = self.now_ms()
            fee = fill.price * qty * rate
            realized = position.apply_fill(qty * order.signed_side, fill.price, fee, now)
            account.wallet_balance += realized - fee
            account.update_time_ms = now
            order.record_fill(fill.price, qty, now)
            self._emit_order(
                account,
                order,
                "TRADE",
                last_qty=qty,
                last_price=fill.price,
                commission=fee,
                trade_id=self._new_id(self._next_trade_id, order.symbol),
                maker=maker,
                realized=realized,
            )
            self._emit_account(account, order.symbol)
        if fills:
            self._expire_reduce_only(account, order.symbol)

    def _expire_reduce_only(self, account: Account, symbol: str) -> None:
        """Expire resting reduce-only orders that can no longer reduce the position."""
        amount = account.position(symbol).amount
        for order in list(account.open_orders(symbol)):
            if order.reduce_only and (amount == 0 or (amount > 0) == (order.side == "BUY")):
                self._finish(account, order, "EXPIRED")

    def _finish(self, account: Account, order: Order, status: str, expiry_reason: int = 0) -> None:
        order.status = status
        order.expiry_reason = expiry_reason
        order.update_time_ms = self.now_ms()
        self._emit_order(account, order, status)

    # -- events ---------------------------------------------------------------------------------

    def _stamp(self, account: Account, event_type: str) -> tuple[int, int]:
        clock = self._clocks.get(account.api_key)
        if clock is None:
            clock = self._clocks[account.api_key] = EventClock()
        return clock.stamp(event_type, self.now_ms())

    def _emit_order(self, account: Account, order: Order, execution: str, **kw: Any) -> None:
        if not self.listen_keys.has_streams(account.api_key):
            return
        event_ms, trans_ms = self._stamp(account, "ORDER_TRADE_UPDATE")
        event = payloads.order_trade_update(
            order, account, event_ms=event_ms, trans_ms=trans_ms, execution=execution, **kw
        )
        self.listen_keys.publish(account.api_key, event)

    def _emit_account(self, account: Account, symbol: str) -> None:
        if not self.listen_keys.has_streams(account.api_key):
            return
        event_ms, trans_ms = self._stamp(account, "ACCOUNT_UPDATE")
        event = payloads.account_update(
            account,
            account.position(symbol),
            self.market.mark_price(symbol),
            event_ms=event_ms,
            trans_ms=trans_ms,
        )
        self.listen_keys.publish(account.api_key, event)

    # -- helpers --------------------------------------------------------------------------------

    def _rules_of(self, symbol: str) -> SymbolRules:
        rules = self.rules(symbol)
        if rules is None:  # the symbol was listed when the order was placed
            raise ApiError(-1121, "Invalid symbol.")
        return rules

    @staticmethod
    def _new_id(counters: dict[str, int], symbol: str) -> int:
        value = counters.get(symbol, 100_000_000) + 1  # ids increase per symbol, like Binance's
        counters[symbol] = value
        return value

    @staticmethod
    def _price_bound(rules: SymbolRules, side: str, mark: Decimal | None) -> Decimal | None:
        if mark is None or rules.multiplier_up <= 0:
            return None
        low, high = percent_price_bounds(rules, mark)
        return high if side == "BUY" else low

    @staticmethod
    def _market_price(side: str, book: TopOfBook | None, mark: Decimal | None) -> Decimal | None:
        if book is not None:
            price = book.ask if side == "BUY" else book.bid
            if price > 0:
                return price
        return mark
