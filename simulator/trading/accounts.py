"""Paper-trading accounts: wallet, one-way positions, orders, and the cross-margin model.

Margin model (simple cross margin, USDT only; documented in docs/simulator-trading.md):

* leverage per symbol, default 20; initial margin = notional / leverage;
* position initial margin = |positionAmt| * mark / leverage;
* open-order initial margin = the notional of open non-reduce-only orders / leverage, where the
  part of orders opposite to the position that would only close it is free;
* available balance = wallet + unrealized PnL - position margin - open-order margin;
* no maintenance margin and no liquidation.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from simulator.trading.orders import Order, Trade

ZERO = Decimal(0)
MarkFn = Callable[[str], Decimal | None]


@dataclass
class Position:
    """A one-way (positionSide BOTH) position in one symbol."""

    symbol: str
    amount: Decimal = ZERO  # signed: > 0 long, < 0 short
    entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO  # accumulated, ACCOUNT_UPDATE "cr"
    open_fees: Decimal = ZERO  # fees paid while building the current position (break-even)
    update_time_ms: int = 0

    def apply_fill(self, signed_qty: Decimal, price: Decimal, fee: Decimal, now_ms: int) -> Decimal:
        """Trade ``signed_qty`` at ``price``; return the realized PnL of the closed part."""
        realized = ZERO
        amount = self.amount
        if amount == 0 or (amount > 0) == (signed_qty > 0):  # opening or adding
            new_amount = amount + signed_qty
            self.entry_price = (abs(amount) * self.entry_price + abs(signed_qty) * price) / abs(
                new_amount
            )
            self.open_fees += fee
        else:  # reducing, closing or flipping
            closed = min(abs(signed_qty), abs(amount))
            direction = 1 if amount > 0 else -1
            realized = (price - self.entry_price) * closed * direction
            new_amount = amount + signed_qty
            if new_amount == 0:
                self.entry_price, self.open_fees = ZERO, ZERO
            elif (new_amount > 0) != (amount > 0):  # flipped: the rest opens at this price
                self.entry_price, self.open_fees = price, fee
        self.amount = new_amount
        self.realized_pnl += realized
        self.update_time_ms = now_ms
        return realized

    def unrealized(self, mark: Decimal | None) -> Decimal:
        """Return the unrealized PnL at ``mark`` (0 without a mark price)."""
        return ZERO if mark is None or self.amount == 0 else (mark - self.entry_price) * self.amount

    @property
    def break_even_price(self) -> Decimal:
        """Return the entry price moved by the fees paid to open the position."""
        if self.amount == 0:
            return ZERO
        return self.entry_price + self.open_fees / self.amount


MAX_ORDERS_KEPT = 2_000  # per account, open ones always included
MAX_TRADES_KEPT = 50_000  # per account and symbol


@dataclass
class Account:
    """One paper-trading account: API credentials, USDT wallet, positions, orders and fills.

    An HMAC key has a ``secret_key``; an Ed25519 key has a ``public_key`` and no secret.
    """

    api_key: str
    secret_key: str | None
    wallet_balance: Decimal
    default_leverage: int = 20
    public_key: Ed25519PublicKey | None = None
    can_trade: bool = True  # false: a key whose futures trading is not enabled
    leverage: dict[str, int] = field(default_factory=dict)
    isolated: set[str] = field(default_factory=set)  # symbols set to ISOLATED (else CROSSED)
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[tuple[str, int], Order] = field(default_factory=dict)
    # The orders that were open when kept, oldest first; closed ones are dropped as they are met
    # (an order never reopens). The margin checks read the open orders at every order and account
    # read: walking all kept orders made the simulator slower as an account's history grew, which
    # Binance is not (bench/RESULTS.md, Execution: POST order 4 -> 32 ms at 1,500 orders kept).
    _maybe_open: dict[tuple[str, int], Order] = field(default_factory=dict, repr=False)
    trades: dict[str, list[Trade]] = field(default_factory=dict)  # per symbol, ascending id
    trade_count: int = 0
    update_time_ms: int = 0

    def add_order(self, order: Order) -> None:
        """Keep ``order``; past MAX_ORDERS_KEPT, forget the oldest closed orders.

        Binance also archives old closed orders (a query then answers -2013); here the bound
        keeps a long paper-trading session from growing memory and slowing every book update.
        """
        key = (order.symbol, order.order_id)
        self.orders[key] = order
        if order.is_open:
            self._maybe_open[key] = order
        excess = len(self.orders) - MAX_ORDERS_KEPT
        if excess <= 0:
            return
        # The oldest are nearly all closed: stop at the first `excess` instead of walking them all.
        for old in list(islice((k for k, o in self.orders.items() if not o.is_open), excess)):
            del self.orders[old]

    def add_trade(self, trade: Trade) -> None:
        """Keep one fill; past MAX_TRADES_KEPT per symbol, forget the oldest half-percent."""
        rows = self.trades.setdefault(trade.symbol, [])
        rows.append(trade)
        if len(rows) > MAX_TRADES_KEPT:
            del rows[: MAX_TRADES_KEPT // 200]  # in chunks: not a list shift per fill
        self.trade_count += 1

    def orders_of(self, symbol: str) -> list[Order]:
        """Return the kept orders of one symbol, in any state."""
        return [o for o in self.orders.values() if o.symbol == symbol]

    def margin_type(self, symbol: str) -> str:
        """Return ``ISOLATED`` or ``CROSSED`` for the symbol (CROSSED unless changed)."""
        return "ISOLATED" if symbol in self.isolated else "CROSSED"

    def position(self, symbol: str) -> Position:
        """Return the symbol's position, creating a flat one on first use."""
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        return pos

    def leverage_of(self, symbol: str) -> int:
        """Return the symbol's leverage (the account default unless changed)."""
        return self.leverage.get(symbol, self.default_leverage)

    def open_orders(self, symbol: str | None = None) -> Iterator[Order]:
        """Yield the open orders, of one symbol or all, oldest first."""
        index = self._maybe_open
        for key in [k for k, o in index.items() if not o.is_open]:
            del index[key]
        for order in list(index.values()):  # callers may close orders while iterating
            if order.is_open and (symbol is None or order.symbol == symbol):
                yield order

    def find_order(
        self, symbol: str, order_id: int | None, client_order_id: str | None
    ) -> Order | None:
        """Return an order by id, or the newest with that client id (open ones first)."""
        if order_id is not None:
            order = self.orders.get((symbol, order_id))
            if order is not None and (
                client_order_id is None or order.client_order_id == client_order_id
            ):
                return order
            return None
        matches = [
            o
            for o in self.orders.values()
            if o.symbol == symbol and o.client_order_id == client_order_id
        ]
        matches.sort(key=lambda o: (o.is_open, o.order_id))
        return matches[-1] if matches else None

    def open_order_notional(self, symbol: str) -> tuple[Decimal, Decimal]:
        """Return the (bids, asks) notional of the symbol's open orders (ORDER_TRADE_UPDATE b/a)."""
        bids = asks = ZERO
        for order in self.open_orders(symbol):
            if order.side == "BUY":
                bids += order.remaining * order.price
            else:
                asks += order.remaining * order.price
        return bids, asks

    def open_order_margin(self, symbol: str, extra: Order | None = None) -> Decimal:
        """Return the initial margin the symbol's open orders (plus ``extra``) lock."""
        amount = self.position(symbol).amount
        sides: dict[str, list[Order]] = {"BUY": [], "SELL": []}
        for order in self.open_orders(symbol):
            if not order.reduce_only:
                sides[order.side].append(order)
        if extra is not None and not extra.reduce_only:
            sides[extra.side].append(extra)
        notional = ZERO
        for side, orders in sides.items():
            closing = -amount if side == "BUY" else amount  # how much this side would only close
            free = max(closing, ZERO)
            for order in orders:
                covered = min(free, order.remaining)
                free -= covered
                notional += (order.remaining - covered) * order.price
        return notional / self.leverage_of(symbol)

    def position_margin(self, symbol: str, mark: Decimal | None) -> Decimal:
        """Return the position's initial margin at ``mark`` (entry price without a mark)."""
        pos = self.position(symbol)
        price = mark if mark is not None else pos.entry_price
        return abs(pos.amount) * price / self.leverage_of(symbol)

    def unrealized(self, marks: MarkFn) -> Decimal:
        """Return the total unrealized PnL."""
        return sum((p.unrealized(marks(s)) for s, p in self.positions.items()), ZERO)

    def margins(self, marks: MarkFn) -> tuple[Decimal, Decimal]:
        """Return (total position initial margin, total open-order initial margin)."""
        symbols = set(self.positions) | {o.symbol for o in self.open_orders()}
        position = sum((self.position_margin(s, marks(s)) for s in symbols), ZERO)
        orders = sum((self.open_order_margin(s) for s in symbols), ZERO)
        return position, orders

    def available_balance(self, marks: MarkFn) -> Decimal:
        """Return what is left for new orders under the cross-margin model."""
        position, orders = self.margins(marks)
        return self.wallet_balance + self.unrealized(marks) - position - orders


class AccountBook:
    """All accounts, found by API key."""

    def __init__(self, *, default_leverage: int = 20) -> None:
        self._by_key: dict[str, Account] = {}
        self._default_leverage = default_leverage

    def create(
        self,
        balance: Decimal,
        *,
        api_key: str | None = None,
        secret_key: str | None = None,
        public_key: Ed25519PublicKey | None = None,
        can_trade: bool = True,
    ) -> Account:
        """Create an account holding ``balance`` USDT; generate the keys that are not given.

        With ``public_key`` the account has an Ed25519 key and no secret. Raises ValueError
        when the API key is already in use, or for a secret key with a public key.
        """
        key = api_key or secrets.token_hex(32)
        if key in self._by_key:
            raise ValueError("API key already in use")
        if public_key is not None and secret_key is not None:
            raise ValueError("an Ed25519 key has no secret key")
        account = Account(
            api_key=key,
            secret_key=None if public_key is not None else secret_key or secrets.token_hex(32),
            wallet_balance=balance,
            default_leverage=self._default_leverage,
            public_key=public_key,
            can_trade=can_trade,
        )
        self._by_key[key] = account
        return account

    def get(self, api_key: str) -> Account | None:
        """Return the account of ``api_key``, or None."""
        return self._by_key.get(api_key)

    def __len__(self) -> int:
        return len(self._by_key)
