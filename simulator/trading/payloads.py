"""Binance-shaped JSON payloads: REST order objects, account views and user-stream events (pure).

Decimals go out as strings. REST order objects use the symbol's precisions like the real exchange
(``"price":"110001.00","origQty":"0.200","cumQuote":"0.00000"``); user-stream events use plain
strings (``"q":"0.001","p":"0"``); balances use 8 decimals (``"walletBalance":"100.00000000"``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from simulator.trading.accounts import Account, MarkFn, Position
from simulator.trading.filters import SymbolRules
from simulator.trading.orders import Order

ZERO = Decimal(0)
MAX_PLACES = 8


def fixed(value: Decimal, places: int) -> str:
    """Format with at least ``places`` decimals, more (up to 8) only when the value needs them."""
    exact = value.quantize(Decimal(1).scaleb(-MAX_PLACES), ROUND_HALF_EVEN).normalize()
    exponent = exact.as_tuple().exponent
    needed = max(0, -exponent) if isinstance(exponent, int) else 0
    return f"{exact:.{max(places, needed)}f}"


def plain(value: Decimal) -> str:
    """Format without exponent or trailing zeros (``"0"``, ``"0.001"``, ``"7103.04"``)."""
    return fixed(value, 0)


def money(value: Decimal) -> str:
    """Format a USDT amount with 8 decimals."""
    return fixed(value, MAX_PLACES)


def order_object(order: Order, rules: SymbolRules, *, with_time: bool = False) -> dict[str, Any]:
    """Return the REST order object (POST/DELETE/GET /fapi/v1/order, openOrders)."""
    pp, qp = rules.price_precision, rules.quantity_precision
    body: dict[str, Any] = {
        "orderId": order.order_id,
        "symbol": order.symbol,
        "status": order.status,
        "clientOrderId": order.client_order_id,
        "price": fixed(order.price, pp),
        "avgPrice": fixed(order.avg_price, pp),
        "origQty": fixed(order.orig_qty, qp),
        "executedQty": fixed(order.executed_qty, qp),
        "cumQty": fixed(order.executed_qty, qp),
        "cumQuote": fixed(order.cum_quote, pp + qp),
        "timeInForce": order.time_in_force,
        "type": order.type,
        "reduceOnly": order.reduce_only,
        "closePosition": False,
        "side": order.side,
        "positionSide": "BOTH",
        "stopPrice": fixed(ZERO, pp),
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": order.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": order.self_trade_prevention_mode,
        "goodTillDate": 0,
        "updateTime": order.update_time_ms,
    }
    if with_time:
        body["time"] = order.time_ms
    return body


def order_trade_update(
    order: Order,
    account: Account,
    *,
    event_ms: int,
    trans_ms: int,
    execution: str,
    last_qty: Decimal = ZERO,
    last_price: Decimal = ZERO,
    commission: Decimal = ZERO,
    trade_id: int = 0,
    maker: bool = False,
    realized: Decimal = ZERO,
) -> dict[str, Any]:
    """Return an ORDER_TRADE_UPDATE event (reference section 4, every documented field)."""
    bids, asks = account.open_order_notional(order.symbol)
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": event_ms,
        "T": trans_ms,
        "o": {
            "s": order.symbol,
            "c": order.client_order_id,
            "S": order.side,
            "o": order.type,
            "f": order.time_in_force,
            "q": plain(order.orig_qty),
            "p": plain(order.price),
            "ap": plain(order.avg_price),
            "sp": "0",
            "x": execution,
            "X": order.status,
            "i": order.order_id,
            "l": plain(last_qty),
            "z": plain(order.executed_qty),
            "L": plain(last_price),
            "N": "USDT",
            "n": plain(commission),
            "T": trans_ms,
            "t": trade_id,
            "b": plain(bids),
            "a": plain(asks),
            "m": maker,
            "R": order.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": order.type,
            "ps": "BOTH",
            "cp": False,
            "AP": "0",
            "cr": "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "rp": plain(realized),
            "V": order.self_trade_prevention_mode,
            "pm": "NONE",
            "gtd": 0,
            "er": str(order.expiry_reason),
        },
    }


def account_update(
    account: Account, position: Position, mark: Decimal | None, *, event_ms: int, trans_ms: int
) -> dict[str, Any]:
    """Return an ACCOUNT_UPDATE event (reason ORDER) for one changed position."""
    return {
        "e": "ACCOUNT_UPDATE",
        "E": event_ms,
        "T": trans_ms,
        "a": {
            "m": "ORDER",
            "B": [
                {
                    "a": "USDT",
                    "wb": plain(account.wallet_balance),
                    "cw": plain(account.wallet_balance),
                    "bc": "0",
                }
            ],
            "P": [
                {
                    "s": position.symbol,
                    "pa": plain(position.amount),
                    "ep": plain(position.entry_price),
                    "bep": plain(position.break_even_price),
                    "cr": plain(position.realized_pnl),
                    "up": plain(position.unrealized(mark)),
                    "mt": margin_type_name(account, position.symbol),
                    "iw": "0",
                    "ps": "BOTH",
                }
            ],
        },
    }


def margin_type_name(account: Account, symbol: str) -> str:
    """Return the margin type as positions report it: ``cross`` or ``isolated``."""
    return "isolated" if symbol in account.isolated else "cross"


def listen_key_expired(listen_key: str, event_ms: int) -> dict[str, Any]:
    """Return the listenKeyExpired event."""
    return {"e": "listenKeyExpired", "E": event_ms, "listenKey": listen_key}


def _totals(account: Account, marks: MarkFn) -> dict[str, str]:
    position_im, order_im = account.margins(marks)
    unrealized = account.unrealized(marks)
    available = account.available_balance(marks)
    return {
        "walletBalance": money(account.wallet_balance),
        "unrealizedProfit": money(unrealized),
        "marginBalance": money(account.wallet_balance + unrealized),
        "maintMargin": money(ZERO),
        "initialMargin": money(position_im + order_im),
        "positionInitialMargin": money(position_im),
        "openOrderInitialMargin": money(order_im),
        "crossWalletBalance": money(account.wallet_balance),
        "crossUnPnl": money(unrealized),
        "availableBalance": money(available),
        "maxWithdrawAmount": money(max(min(available, account.wallet_balance), ZERO)),
    }


def account_info(
    account: Account, marks: MarkFn, rules: dict[str, SymbolRules], *, v3: bool
) -> dict[str, Any]:
    """Return GET /fapi/v2/account or /fapi/v3/account (one USDT asset, cross margin)."""
    t = _totals(account, marks)
    positions = []
    for symbol, pos in sorted(account.positions.items()):
        if v3 and pos.amount == 0:
            continue  # v3 lists only symbols with a position or open orders
        mark = marks(symbol)
        im = account.position_margin(symbol, mark)
        positions.append(
            {
                "symbol": symbol,
                "positionSide": "BOTH",
                "positionAmt": fixed(pos.amount, rules[symbol].quantity_precision),
                "unrealizedProfit": money(pos.unrealized(mark)),
                "isolatedMargin": "0",
                "notional": money(pos.amount * (mark or pos.entry_price)),
                "isolatedWallet": "0",
                "initialMargin": money(im + account.open_order_margin(symbol)),
                "maintMargin": money(ZERO),
                "updateTime": pos.update_time_ms,
            }
        )
    head: dict[str, Any] = {}
    if not v3:
        head = {
            "feeTier": 0,
            "canTrade": account.can_trade,
            "canDeposit": True,
            "canWithdraw": True,
            "multiAssetsMargin": False,
            "tradeGroupId": -1,
            "updateTime": 0,
        }
    asset = {"asset": "USDT", **t, "marginAvailable": True, "updateTime": account.update_time_ms}
    return {
        **head,
        "totalInitialMargin": t["initialMargin"],
        "totalMaintMargin": t["maintMargin"],
        "totalWalletBalance": t["walletBalance"],
        "totalUnrealizedProfit": t["unrealizedProfit"],
        "totalMarginBalance": t["marginBalance"],
        "totalPositionInitialMargin": t["positionInitialMargin"],
        "totalOpenOrderInitialMargin": t["openOrderInitialMargin"],
        "totalCrossWalletBalance": t["crossWalletBalance"],
        "totalCrossUnPnl": t["crossUnPnl"],
        "availableBalance": t["availableBalance"],
        "maxWithdrawAmount": t["maxWithdrawAmount"],
        "assets": [asset],
        "positions": positions,
    }


def balances(account: Account, marks: MarkFn) -> list[dict[str, Any]]:
    """Return GET /fapi/v2/balance (USDT only)."""
    t = _totals(account, marks)
    return [
        {
            "accountAlias": "SgsR",
            "asset": "USDT",
            "balance": t["walletBalance"],
            "crossWalletBalance": t["crossWalletBalance"],
            "crossUnPnl": t["crossUnPnl"],
            "availableBalance": t["availableBalance"],
            "maxWithdrawAmount": t["maxWithdrawAmount"],
            "marginAvailable": True,
            "updateTime": account.update_time_ms,
        }
    ]


def position_risk(
    account: Account, symbol: str, mark: Decimal | None, rules: SymbolRules, *, v3: bool
) -> dict[str, Any]:
    """Return one GET /fapi/v2|v3/positionRisk row (no liquidation: liquidationPrice is 0)."""
    pos = account.position(symbol)
    pp = rules.price_precision
    mark_out = fixed(mark, pp) if mark is not None else fixed(ZERO, pp)
    common = {
        "symbol": symbol,
        "positionSide": "BOTH",
        "positionAmt": fixed(pos.amount, rules.quantity_precision),
        "entryPrice": plain(pos.entry_price),
        "breakEvenPrice": plain(pos.break_even_price),
        "markPrice": mark_out,
        "unRealizedProfit": money(pos.unrealized(mark)),
        "liquidationPrice": "0",
        "isolatedMargin": "0",
        "notional": money(pos.amount * (mark or pos.entry_price)),
        "isolatedWallet": "0",
    }
    if v3:
        bids, asks = account.open_order_notional(symbol)
        im = account.position_margin(symbol, mark)
        om = account.open_order_margin(symbol)
        return {
            **common,
            "marginAsset": "USDT",
            "initialMargin": money(im + om),
            "maintMargin": money(ZERO),
            "positionInitialMargin": money(im),
            "openOrderInitialMargin": money(om),
            "adl": 0,
            "bidNotional": plain(bids),
            "askNotional": plain(asks),
            "updateTime": pos.update_time_ms,
        }
    return {
        **common,
        "marginType": margin_type_name(account, symbol),
        "isAutoAddMargin": "false",
        "leverage": str(account.leverage_of(symbol)),
        "maxNotionalValue": "1000000",
        "updateTime": pos.update_time_ms,
    }
