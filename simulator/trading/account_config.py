"""Per-symbol account settings: ``POST /fapi/v1/leverage`` and ``POST /fapi/v1/marginType`` (pure).

Margin type is recorded and reported (positionRisk v2 ``marginType``, ACCOUNT_UPDATE ``mt``), but
margin is still computed the cross way for every symbol: no isolated wallet, no per-position
margin (docs/simulator-trading.md, "Account model").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from simulator.trading.accounts import Account
from simulator.trading.errors import ApiError, mandatory
from simulator.trading.filters import SymbolRules
from simulator.trading.order_params import required, symbol_rules

MARGIN_TYPES = frozenset({"ISOLATED", "CROSSED"})
MAX_LEVERAGE = 125

RulesFor = Callable[[str], SymbolRules | None]


def set_leverage(
    account: Account, params: Mapping[str, str], rules_for: RulesFor
) -> dict[str, Any]:
    """Set the symbol's leverage (1 to 125); return Binance's answer.

    Raises ApiError -1102 for a missing or malformed value, -4028 outside 1..125.
    """
    rules = symbol_rules(params, rules_for)
    raw = params.get("leverage", "")
    if not raw.isdigit():
        raise mandatory("leverage")
    if not 1 <= int(raw) <= MAX_LEVERAGE:
        raise ApiError(-4028, f"Leverage {raw} is not valid")
    account.leverage[rules.symbol] = int(raw)
    return {"leverage": int(raw), "maxNotionalValue": "1000000", "symbol": rules.symbol}


def set_margin_type(
    account: Account, params: Mapping[str, str], rules_for: RulesFor
) -> dict[str, Any]:
    """Switch the symbol between ISOLATED and CROSSED; return ``{"code":200,"msg":"success"}``.

    Raises ApiError -1102 for a missing or unknown type, -4046 when it is already set, -4047
    with open orders on the symbol, -4048 with a position.
    """
    rules = symbol_rules(params, rules_for)
    wanted = required(params, "marginType")
    if wanted not in MARGIN_TYPES:
        raise mandatory("marginType")
    symbol = rules.symbol
    if account.margin_type(symbol) == wanted:
        raise ApiError(-4046, "No need to change margin type.")
    if any(True for _ in account.open_orders(symbol)):
        raise ApiError(-4047, "Margin type cannot be changed if there exists open orders.")
    if account.position(symbol).amount != 0:
        raise ApiError(-4048, "Margin type cannot be changed if there exists position.")
    if wanted == "ISOLATED":
        account.isolated.add(symbol)
    else:
        account.isolated.discard(symbol)
    return {"code": 200, "msg": "success"}
