"""Pure order logic: request parameters, state from the exchange's answers and events, texts.

The exchange is the source of truth for status and quantities. An update is applied only if it
is not older than what the order already shows (``update_ms``, then cumulative filled quantity),
so a late REST answer cannot undo a newer user-stream event, and a repeated event (stream overlap,
replay after a resync) changes nothing. A final status is never left.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.trading import Order, is_ours

# Binance codes -> what the user is told (docs/execution.md, "What we rely on from Binance").
ERROR_TEXT = {
    -1021: "the request reached the exchange too late (clock skew); nothing was placed",
    -1111: "too many decimals in price or quantity for this symbol",
    -1121: "unknown symbol",
    -2010: "the exchange rejected the order",
    -2011: "no such open order (already filled, canceled, or never placed)",
    -2013: "the exchange does not know this order",
    -2014: "the API key's format is invalid",
    -2015: "the API key was refused: check that it exists, futures trading is enabled and the "
    "server's IP is allowed",
    -2019: "insufficient margin",
    -2021: "the order would trigger immediately",
    -2022: "reduce-only order rejected: it would not reduce the position",
    -2025: "too many open orders on this symbol",
    -2027: "the position would exceed the maximum for this leverage",
    -4003: "quantity must be above zero",
    -4004: "quantity is below the symbol's minimum",
    -4005: "quantity is above the symbol's maximum",
    -4014: "price is not a multiple of the tick size",
    -4016: "limit price is too far above the mark price (PERCENT_PRICE)",
    -4023: "quantity is not a multiple of the step size",
    -4024: "limit price is too far below the mark price (PERCENT_PRICE)",
    -4028: "leverage is not valid for this symbol",
    -4047: "margin type cannot change while there are open orders",
    -4048: "margin type cannot change while there is a position",
    -4061: "position side does not match the account's position mode",
    -4116: "this client order id is already in use",
    -4131: "the best price on the other side is outside the allowed range (PERCENT_PRICE)",
    -4164: "order value (price x quantity) is below the symbol's minimum notional",
    -5021: "fill-or-kill order could not be filled completely: not placed",
    -5022: "post-only order would have taken liquidity: not placed",
    -1015: "too many orders: the account's order rate limit was reached",
}


def error_text(code: int | None, msg: str) -> str:
    """Return a clear sentence for a Binance error (its own message when we have none)."""
    if code in ERROR_TEXT:
        return ERROR_TEXT[code]
    return f"the exchange refused: {msg}" if msg else "the exchange refused the request"


def place_params(order: Order) -> dict[str, str]:
    """Return the POST /fapi/v1/order parameters of ``order`` (one-way mode)."""
    params = {
        "symbol": order.symbol,
        "side": order.side,
        "type": order.order_type,
        "quantity": order.quantity,
        "newClientOrderId": order.client_order_id,
    }
    if order.order_type == "LIMIT":
        params["price"] = order.price
        params["timeInForce"] = order.time_in_force or "GTC"
    if order.reduce_only:
        params["reduceOnly"] = "true"
    return params


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return Decimal(0)


def _accept(order: Order, update_ms: int, executed: Decimal) -> bool:
    if order.status in ("PENDING", "SENDING", "UNKNOWN"):
        return True  # the exchange's first word on the order
    if order.final:
        return False  # a final status is never left
    return update_ms >= order.update_ms and executed >= _dec(order.executed_qty)


def _apply(
    order: Order,
    status: str,
    update_ms: int,
    executed: Decimal,
    avg: Any,
    order_id: Any,
    quantity: Any,
) -> bool:
    if not status or not _accept(order, update_ms, executed):
        return False
    before = (order.status, order.executed_qty, order.avg_price, order.order_id, order.quantity)
    order.status = status
    order.update_ms = max(update_ms, order.update_ms)
    order.executed_qty = _norm(executed)
    order.avg_price = _norm(avg) if avg is not None else order.avg_price
    order.order_id = int(order_id or order.order_id)
    order.quantity = _norm(quantity) if quantity is not None else order.quantity  # may shrink
    return before != (
        order.status,
        order.executed_qty,
        order.avg_price,
        order.order_id,
        order.quantity,
    )


def apply_rest(order: Order, body: dict[str, Any]) -> bool:
    """Apply an order object of the REST API (place, query, cancel); return whether it changed."""
    return _apply(
        order,
        str(body.get("status", "")),
        int(body.get("updateTime") or body.get("time") or 0),
        _dec(body.get("executedQty", "0")),
        body.get("avgPrice"),
        body.get("orderId"),
        body.get("origQty"),
    )


def apply_event(order: Order, o: dict[str, Any]) -> bool:
    """Apply the ``o`` object of an ORDER_TRADE_UPDATE; return whether it changed."""
    return _apply(
        order,
        str(o.get("X", "")),
        int(o.get("T") or 0),
        _dec(o.get("z", "0")),
        o.get("ap"),
        o.get("i"),
        o.get("q"),
    )


def external_from_event(o: dict[str, Any]) -> Order:
    """Return the record of an order we did not place (seen on the stream)."""
    order = Order(
        client_order_id=str(o.get("c", "")),
        symbol=str(o.get("s", "")),
        side=str(o.get("S", "")),
        order_type=str(o.get("o", "")),
        quantity=str(o.get("q", "0")),
        status="NEW",
        time_in_force=str(o.get("f", "")),
        price=str(o.get("p", "0")),
        reduce_only=bool(o.get("R", False)),
        external=not is_ours(str(o.get("c", ""))),
    )
    apply_event(order, o)
    return order


def external_from_rest(body: dict[str, Any]) -> Order:
    """Return the record of an open order found by reconciliation that we have no record of."""
    cid = str(body.get("clientOrderId", ""))
    order = Order(
        client_order_id=cid,
        symbol=str(body.get("symbol", "")),
        side=str(body.get("side", "")),
        order_type=str(body.get("type", "")),
        quantity=str(body.get("origQty", "0")),
        status="NEW",
        time_in_force=str(body.get("timeInForce", "")),
        price=str(body.get("price", "0")),
        reduce_only=bool(body.get("reduceOnly", False)),
        external=not is_ours(cid),
    )
    apply_rest(order, body)
    return order


def _norm(value: Any) -> str:
    number = _dec(value)
    return format(number.normalize(), "f") if number else "0"


def fill_from_event(o: dict[str, Any]) -> dict[str, Any]:
    """Return our fill record from an ORDER_TRADE_UPDATE of execution type TRADE."""
    return {
        "symbol": str(o.get("s")),
        "trade_id": int(o.get("t") or 0),
        "order_id": int(o.get("i") or 0),
        "client_order_id": str(o.get("c", "")),
        "side": str(o.get("S", "")),
        "price": _norm(o.get("L")),
        "qty": _norm(o.get("l")),
        "commission": _norm(o.get("n", "0")),
        "commission_asset": str(o.get("N") or "USDT"),
        "realized_pnl": _norm(o.get("rp", "0")),
        "maker": bool(o.get("m", False)),
        "time": int(o.get("T") or 0),
    }


def fill_from_trade(row: dict[str, Any], cid: str = "") -> dict[str, Any]:
    """Return our fill record from a GET /fapi/v1/userTrades row."""
    return {
        "symbol": str(row.get("symbol")),
        "trade_id": int(row.get("id") or 0),
        "order_id": int(row.get("orderId") or 0),
        "client_order_id": cid,
        "side": str(row.get("side", "")),
        "price": _norm(row.get("price")),
        "qty": _norm(row.get("qty")),
        "commission": _norm(row.get("commission", "0")),
        "commission_asset": str(row.get("commissionAsset") or "USDT"),
        "realized_pnl": _norm(row.get("realizedPnl", "0")),
        "maker": bool(row.get("maker", False)),
        "time": int(row.get("time") or 0),
    }


def positions_view(rows: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Return ``{symbol: position}`` from positionRisk v2 rows, non-flat ones only."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        amount = _dec(row.get("positionAmt", "0"))
        if not amount:
            continue
        out[str(row.get("symbol"))] = {
            "amount": _norm(amount),
            "entry_price": _norm(row.get("entryPrice")),
            "mark_price": _norm(row.get("markPrice")),
            "unrealized_pnl": _norm(row.get("unRealizedProfit")),
            "liquidation_price": _norm(row.get("liquidationPrice")),
            "leverage": str(row.get("leverage", "")),
            "margin_type": str(row.get("marginType", "")),
            "notional": _norm(row.get("notional")),
        }
    return out


def balances_view(account: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Return ``{asset: balance}`` from GET /fapi/v2/account."""
    out: dict[str, dict[str, str]] = {}
    for asset in account.get("assets", []):
        wallet = _dec(asset.get("walletBalance"))
        if not wallet and not _dec(asset.get("marginBalance")):
            continue
        out[str(asset.get("asset"))] = {
            "wallet": _norm(wallet),
            "available": _norm(asset.get("availableBalance")),
            "unrealized_pnl": _norm(asset.get("unrealizedProfit")),
            "margin_balance": _norm(asset.get("marginBalance")),
        }
    return out


def applier(body: dict[str, Any]) -> Any:
    """Return a function applying the REST order object ``body`` to an order."""

    def apply(order: Order) -> bool:
        return apply_rest(order, body)

    return apply


def apply_account_update(
    a: dict[str, Any], balances: dict[str, dict[str, str]], positions: dict[str, dict[str, str]]
) -> None:
    """Apply the ``a`` object of an ACCOUNT_UPDATE to our balances and positions, in place.

    ``B[]``: ``a`` asset, ``wb`` wallet balance; ``P[]``: ``s`` symbol, ``pa`` amount, ``ep``
    entry price, ``up`` unrealized PnL, ``mt`` margin type (only changed ones are pushed).
    """
    for b in a.get("B", []):
        if isinstance(b, dict) and b.get("a"):
            row = balances.setdefault(str(b["a"]), {})
            row["wallet"] = _norm(b.get("wb"))
    for p in a.get("P", []):
        if not isinstance(p, dict) or not p.get("s") or p.get("ps", "BOTH") != "BOTH":
            continue
        amount = _dec(p.get("pa", "0"))
        if not amount:
            positions.pop(str(p["s"]), None)
            continue
        row = positions.setdefault(str(p["s"]), {})
        row.update(amount=_norm(amount), entry_price=_norm(p.get("ep")),
                   unrealized_pnl=_norm(p.get("up")))  # fmt: skip
        if p.get("mt"):
            row["margin_type"] = str(p["mt"])
