"""What one web process shares: the Socket.IO extension and the services behind ``web()``.

Kept apart from the factory (web/app.py), as Flask's tutorial keeps its ``db`` apart: the
blueprints and socket events import these, and ``create_app`` imports the blueprints, so nothing
imports the factory back. ``socketio`` is created unbound and attached in ``create_app``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from flask_socketio import SocketIO
from redis import Redis

from core.config import Settings
from core.keys import Keys
from web.commands import Trading
from web.fanout import Pump
from web.market import Market
from web.rooms import Registry
from web.sessions import Sessions
from web.tokens import Keyring
from web.trade_events import OrderEvents

socketio = SocketIO()  # attached in create_app; web/sockets.py registers the events on it


@dataclass
class Web:
    """What the handlers of one process share."""

    settings: Settings
    keys: Keys
    redis: redis.Redis  # the control Redis
    market_redis: Redis  # market data (the same client unless TP_MARKET_REDIS_URL is set)
    market: Market
    sessions: Sessions
    keyring: Keyring
    registry: Registry
    pump: Pump
    trading: Trading
    order_events: OrderEvents


def web() -> Web:
    """Return the current app's services."""
    services: Web = current_app.extensions["tp"]
    return services
