"""An account's fills and the history endpoints ``userTrades`` and ``allOrders`` (pure).

Parameters follow the futures docs (Account-Trade-List, All-Orders)::

    GET /fapi/v1/userTrades  symbol (required), orderId, fromId (trade id, inclusive),
                             startTime, endTime, limit (500, max 1000)
    GET /fapi/v1/allOrders   symbol (required), orderId (>=), startTime, endTime, limit

Time windows: one bound alone spans 7 days from it, both may be at most 7 days apart; with
neither, the last 7 days, unless ``orderId`` or ``fromId`` is given (then no time filter).
With ``fromId`` / ``orderId`` (orders: ``>=``) or ``startTime`` the first ``limit`` rows are
returned, otherwise the most recent ``limit``. Rows are ascending by id. A real row (docs example)::

    {"buyer":false,"commission":"-0.07819010","commissionAsset":"USDT","id":698759,"maker":false,
     "orderId":25851813,"price":"7819.01","qty":"0.002","quoteQty":"15.63802",
     "realizedPnl":"-0.91539999","side":"SELL","positionSide":"SHORT","symbol":"BTCUSDT",
     "time":1569514978020}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from simulator.trading.errors import ApiError, invalid
from simulator.trading.filters import SymbolRules
from simulator.trading.orders import Order, Trade
from simulator.trading.payloads import fixed, money, order_object

WINDOW_MS = 7 * 24 * 3_600_000
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
T = TypeVar("T")


def trade_row(trade: Trade, rules: SymbolRules) -> dict[str, Any]:
    """Return one ``GET /fapi/v1/userTrades`` row (decimals as strings, symbol precisions)."""
    pp, qp = rules.price_precision, rules.quantity_precision
    return {
        "buyer": trade.side == "BUY",
        "commission": money(trade.commission),
        "commissionAsset": "USDT",
        "id": trade.id,
        "maker": trade.maker,
        "orderId": trade.order_id,
        "price": fixed(trade.price, pp),
        "qty": fixed(trade.qty, qp),
        "quoteQty": fixed(trade.price * trade.qty, pp + qp),
        "realizedPnl": money(trade.realized_pnl),
        "side": trade.side,
        "positionSide": "BOTH",
        "symbol": trade.symbol,
        "time": trade.time_ms,
    }


def _long(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name, "")
    if raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise ApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(raw)


def _limit(params: Mapping[str, str]) -> int:
    limit = _long(params, "limit")
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit")
    return limit


def _has_window(params: Mapping[str, str]) -> bool:
    return bool(params.get("startTime") or params.get("endTime"))


def _window(params: Mapping[str, str], now_ms: int) -> tuple[int, int, bool]:
    """Return (start, end, oldest_first) of the time window; raise -1023 or -1127."""
    start, end = _long(params, "startTime"), _long(params, "endTime")
    if start is not None and end is not None:
        if start > end:
            raise ApiError(-1023, "Start time is greater than end time.")
        if end - start > WINDOW_MS:
            raise ApiError(-1127, "More than 168 hours between startTime and endTime.")
        return start, end, True
    if start is not None:
        return start, start + WINDOW_MS, True
    if end is not None:
        return end - WINDOW_MS, end, False
    return now_ms - WINDOW_MS, now_ms, False


def _page(rows: Iterable[T], limit: int, *, oldest_first: bool) -> list[T]:
    kept = list(rows)
    return kept[:limit] if oldest_first else kept[-limit:]


def user_trades(
    trades: Iterable[Trade], params: Mapping[str, str], rules: SymbolRules, now_ms: int
) -> list[dict[str, Any]]:
    """Answer ``GET /fapi/v1/userTrades`` from one symbol's trades (ascending by id).

    Raises ApiError -1128 for ``fromId`` with a time bound, -1023/-1127 for a bad window,
    -1100 for a malformed number and -1130 for a ``limit`` outside 1..1000.
    """
    limit = _limit(params)
    order_id, from_id = _long(params, "orderId"), _long(params, "fromId")
    timed = _has_window(params)
    if from_id is not None and timed:
        raise ApiError(-1128, "Combination of optional parameters invalid.")
    selected: Iterable[Trade] = trades
    oldest_first = True
    if order_id is not None:
        selected = (t for t in selected if t.order_id == order_id)
    if from_id is not None:
        selected = (t for t in selected if t.id >= from_id)
    if timed or (order_id is None and from_id is None):
        start, end, oldest_first = _window(params, now_ms)
        selected = (t for t in selected if start <= t.time_ms <= end)
    return [trade_row(t, rules) for t in _page(selected, limit, oldest_first=oldest_first)]


def all_orders(
    orders: Iterable[Order], params: Mapping[str, str], rules: SymbolRules, now_ms: int
) -> list[dict[str, Any]]:
    """Answer ``GET /fapi/v1/allOrders`` from one symbol's orders (ascending by orderId).

    Raises ApiError -1023/-1127 for a bad window, -1100 and -1130 as ``user_trades``.
    """
    limit = _limit(params)
    order_id = _long(params, "orderId")
    selected: Iterable[Order] = sorted(orders, key=lambda o: o.order_id)
    oldest_first = True
    if order_id is not None:
        selected = (o for o in selected if o.order_id >= order_id)
    if _has_window(params) or order_id is None:
        start, end, by_time = _window(params, now_ms)
        oldest_first = by_time or order_id is not None
        selected = (o for o in selected if start <= o.time_ms <= end)
    rows = _page(selected, limit, oldest_first=oldest_first)
    return [order_object(o, rules, with_time=True) for o in rows]


def every_trade(
    trades: Mapping[str, list[Trade]], rules_of: Callable[[str], SymbolRules]
) -> list[dict[str, Any]]:
    """Return every kept trade of an account across symbols, in execution order."""
    merged = sorted((t for rows in trades.values() for t in rows), key=lambda t: t.seq)
    return [trade_row(t, rules_of(t.symbol)) for t in merged]
