"""IP request weights of the trading routes (Binance docs, reference sections 3.3 to 4).

Orders weigh 0 on the IP limit and 1 on the account's order count (``order_limits.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

ROUTE_WEIGHTS: Mapping[tuple[str, str], int] = {
    ("POST", "/fapi/v1/order"): 0,
    ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): 1,  # 40 without symbol: see request_weight()
    ("DELETE", "/fapi/v1/allOpenOrders"): 1,
    ("GET", "/fapi/v1/allOrders"): 5,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
    ("POST", "/sim/accounts"): 0,
}


def request_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """Return a request's IP weight, including the parameter-dependent cases (0 if unknown)."""
    if (method, path) == ("GET", "/fapi/v1/openOrders") and not params.get("symbol"):
        return 40
    return ROUTE_WEIGHTS.get((method, path), 0)
