"""The order and trade records the engine keeps, and the order lifecycle states."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)


@dataclass
class Order:
    """One order of one account, as Binance reports it (one-way mode, USDT margined)."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # LIMIT / MARKET
    time_in_force: str  # GTC / IOC / FOK / GTX
    price: Decimal  # 0 for MARKET
    orig_qty: Decimal
    reduce_only: bool
    time_ms: int
    update_time_ms: int
    self_trade_prevention_mode: str = "NONE"
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    expiry_reason: int = 0  # ORDER_TRADE_UPDATE "er"
    fills: list[tuple[Decimal, Decimal]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """Return whether the order still rests (NEW or PARTIALLY_FILLED)."""
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        """Return the quantity not yet filled."""
        return self.orig_qty - self.executed_qty

    @property
    def avg_price(self) -> Decimal:
        """Return the average fill price, 0 before the first fill."""
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    @property
    def signed_side(self) -> int:
        """Return +1 for BUY, -1 for SELL."""
        return 1 if self.side == "BUY" else -1

    def record_fill(self, price: Decimal, qty: Decimal, now_ms: int) -> None:
        """Add one fill and move the status to PARTIALLY_FILLED or FILLED."""
        self.executed_qty += qty
        self.cum_quote += price * qty
        self.fills.append((price, qty))
        self.update_time_ms = now_ms
        self.status = "FILLED" if self.executed_qty >= self.orig_qty else "PARTIALLY_FILLED"


@dataclass(frozen=True, slots=True)
class Trade:
    """One fill of one order, as the account's trade history reports it."""

    seq: int  # per account, in execution order (across symbols)
    id: int  # per symbol, the ORDER_TRADE_UPDATE "t"
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time_ms: int
