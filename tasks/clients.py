"""The Redis client of each actor module, one per worker process (Dramatiq middleware).

An actor module declares the client it needs when it is imported (``clients.declare("candles",
max_connections=16)``) and takes it with ``clients.get("candles")`` (the control Redis) or
``clients.market("candles")`` (market data: the same client unless ``TP_MARKET_REDIS_URL`` names
a Redis of its own, or a cluster). The clients are made when
Dramatiq boots a worker (``before_worker_boot``, in the worker process, after the actor modules
were imported there), so no actor module keeps a lazy global of its own. A process that calls
an actor's code without a worker (a benchmark) gets the client on first use.
"""

from __future__ import annotations

import threading

import dramatiq
import redis
from dramatiq.middleware import Middleware

from core.config import MarketRedis
from core.redis_clients import market_client, sync_client


class ActorClients(Middleware):
    """Named per-process Redis clients, made at worker boot or on first use."""

    def __init__(self, url: str, market: MarketRedis | None = None) -> None:
        self.url = url
        self.market_redis = market or MarketRedis((url,), cluster=False, shared=True)
        self._wanted: dict[str, int] = {}  # name -> max connections
        self._made: dict[str, redis.Redis] = {}
        self._markets: dict[str, redis.Redis] = {}
        self._lock = threading.Lock()

    def declare(self, name: str, *, max_connections: int) -> None:
        """Ask for a client called ``name`` (its CLIENT SETNAME) in every worker process."""
        self._wanted[name] = max_connections

    def get(self, name: str) -> redis.Redis:
        """Return this process's client ``name``; raise KeyError if it was never declared."""
        with self._lock:
            client = self._made.get(name)
            if client is None:
                client = self._made[name] = sync_client(
                    self.url, max_connections=self._wanted[name], client_name=name
                )
            return client

    def market(self, name: str) -> redis.Redis:
        """Return this process's market-data client ``name`` (see the module docstring)."""
        control = self.get(name)
        with self._lock:
            client = self._markets.get(name)
            if client is None:
                client = self._markets[name] = market_client(
                    self.market_redis, control, max_connections=self._wanted[name],
                    client_name=name,
                )  # fmt: skip
            return client

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for name in list(self._wanted):
            self.market(name)
