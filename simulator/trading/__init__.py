"""Paper trading for the Binance USD-M futures simulator: accounts, orders, user data streams.

``TradingEngine(market).add_routes(app)`` serves the trading REST API on an aiohttp app; the
market loop calls ``engine.on_book(symbol)``; the websocket server pumps
``engine.open_user_stream(listen_key, events).get()``. See docs/simulator-trading.md.
"""

from __future__ import annotations

from simulator.trading.accounts import Account
from simulator.trading.ed25519 import sign_ed25519
from simulator.trading.engine import TradingEngine
from simulator.trading.errors import ApiError
from simulator.trading.market_view import MarketView
from simulator.trading.signing import sign
from simulator.trading.userstream import UserStream, UserStreamClosedError
from simulator.trading.weights import ROUTE_WEIGHTS, request_weight

__all__ = [
    "ROUTE_WEIGHTS",
    "Account",
    "ApiError",
    "MarketView",
    "TradingEngine",
    "UserStream",
    "UserStreamClosedError",
    "request_weight",
    "sign",
    "sign_ed25519",
]
