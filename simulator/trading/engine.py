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

from simulator.trading import history, payloads
from simulator.trading.account_config import set_leverage, set_margin_type
from simulator.trading.accounts import Account, AccountBook
from simulator.trading.emitter import EventEmitter
from simulator.trading.entry_checks import check_entry, price_bound
from simulator.trading.errors import ApiError
from simulator.trading.filters import SymbolRules
from simulator.trading.market_view import MarketView
from simulator.trading.matching import Fill, TopOfBook, crossing_qty, is_marketable, take
from simulator.trading.order_limits import DEFAULT_LIMITS, OrderCounter
from simulator.trading.order_params import order_ref, parse_new_order, symbol_rules
from simulator.trading.orders import Order, Trade
from simulator.trading.userstream import ListenKeys, UserStream
from simulator.trading.weights import ROUTE_WEIGHTS

if TYPE_CHECKING:
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
        lookup_lag_ms: Callable[[str], int] = lambda _symbol: 0,
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
        self.events = EventEmitter(
            self.listen_keys, now_ms=market.now_ms, mark_price=market.mark_price
        )
        self.lookup_lag_ms = lookup_lag_ms  # REST read lag of GET /fapi/v1/order, per symbol
        self._order_limits = order_limits
        self._counters: dict[str, OrderCounter] = {}
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
        public_key: Ed25519PublicKey | None = None,
        can_trade: bool = True,
    ) -> Account:
        """Create a paper account with ``balance`` USDT (HMAC, or Ed25519 with ``public_key``).

        Raises ValueError for a used API key, or a secret key given with a public key.
        """
        account = self.accounts.create(
            balance,
            api_key=api_key,
            secret_key=secret_key,
            public_key=public_key,
            can_trade=can_trade,
        )
        log.info(
            "paper account created",
            extra={"balance": str(balance), "ed25519": public_key is not None},
        )
        return account

    def add_routes(self, app: web.Application) -> None:
        """Register the trading REST routes and ``POST /sim/accounts`` on ``app``."""
        from simulator.trading.routes import add_routes

        add_routes(app, self)

    def open_user_stream(self, listen_key: str, events: frozenset[str] | None) -> UserStream | None:
        """Attach a reader to a live listen key; None for unknown or expired keys."""
        return self.listen_keys.open(listen_key, events)

    def expire_listen_keys(self, api_key: str | None = None) -> int:
        """Expire now the live listen key of one account (or of all); return how many."""
        return self.listen_keys.expire_now(api_key)

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
        check_entry(
            account,
            req,
            rules,
            mark,
            book,
            marks=self.market.mark_price,
            max_levels=self.max_synthetic_levels,
        )
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
        self.events.order(account, order, "NEW")
        bound = price_bound(rules, req.side, mark)
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
        if order is None or self.now_ms() - order.time_ms < self.lookup_lag_ms(rules.symbol):
            raise ApiError(-2013, "Order does not exist.")
        return payloads.order_object(order, rules, with_time=True)

    def open_orders(self, account: Account, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Return the open orders of one symbol, or of all symbols without ``symbol``."""
        symbol = symbol_rules(params, self.rules).symbol if params.get("symbol") else None
        return [
            payloads.order_object(o, self._rules_of(o.symbol), with_time=True)
            for o in account.open_orders(symbol)
        ]

    def all_orders(self, account: Account, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Answer GET /fapi/v1/allOrders (orders of one symbol in any state)."""
        rules = symbol_rules(params, self.rules)
        return history.all_orders(account.orders_of(rules.symbol), params, rules, self.now_ms())

    def user_trades(self, account: Account, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Answer GET /fapi/v1/userTrades (fills of one symbol)."""
        rules = symbol_rules(params, self.rules)
        trades = account.trades.get(rules.symbol, [])
        return history.user_trades(trades, params, rules, self.now_ms())

    def every_trade(self, account: Account) -> list[dict[str, Any]]:
        """Return every kept fill of the account across symbols (``/sim/accounts/{key}/trades``)."""
        return history.every_trade(account.trades, self._rules_of)

    # -- settings -------------------------------------------------------------------------------

    def change_leverage(self, account: Account, params: Mapping[str, str]) -> dict[str, Any]:
        """Answer POST /fapi/v1/leverage and emit ACCOUNT_CONFIG_UPDATE."""
        answer = set_leverage(account, params, self.rules)
        self.events.leverage(account, answer["symbol"], answer["leverage"])
        return answer

    def change_margin_type(self, account: Account, params: Mapping[str, str]) -> dict[str, Any]:
        """Answer POST /fapi/v1/marginType (recorded and reported; margin stays cross)."""
        return set_margin_type(account, params, self.rules)

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
            trade_id = self._new_id(self._next_trade_id, order.symbol)
            account.add_trade(
                Trade(
                    seq=account.trade_count,
                    id=trade_id,
                    order_id=order.order_id,
                    symbol=order.symbol,
                    side=order.side,
                    price=fill.price,
                    qty=qty,
                    commission=fee,
                    realized_pnl=realized,
                    maker=maker,
                    time_ms=now,
                )
            )
            self.events.order(
                account,
                order,
                "TRADE",
                last_qty=qty,
                last_price=fill.price,
                commission=fee,
                trade_id=trade_id,
                maker=maker,
                realized=realized,
            )
            self.events.account(account, order.symbol)
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
        self.events.order(account, order, status)

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
