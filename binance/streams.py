"""Stream names, their routed paths, and how streams are spread over connections. Pure.

Since 2026-04-23 Binance serves each stream only on its route (docs/binance.md, "Stream routes"):
``/market`` for aggTrade, kline and markPrice, ``/public`` for bookTicker, trade and depth. A
stream subscribed on the wrong route is acknowledged and then silent, so routing is decided here,
in one table, and tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Route = Literal["public", "market"]
MAX_STREAMS_PER_CONNECTION = 1024  # Binance's limit since 2025-07-02
PARAMS_PER_SUBSCRIBE = 200  # keeps each control message small; they are paced separately

_ROUTES: dict[str, Route] = {
    "aggTrade": "market",
    "markPrice": "market",
    "kline": "market",
    "bookTicker": "public",
    "trade": "public",
    "depth": "public",
}
_STREAM = re.compile(r"^([a-z0-9_]+)@([A-Za-z]+)(?:_(\w+))?(?:@.*)?$")


def stream_name(symbol: str, kind: str) -> str:
    """Return Binance's stream name, e.g. ``btcusdt@aggTrade`` for (BTCUSDT, aggTrade)."""
    return f"{symbol.lower()}@{kind}"


def split_stream(stream: str) -> tuple[str, str]:
    """Return ``(SYMBOL, kind)`` of a stream name; raise ValueError for an unknown form."""
    m = _STREAM.match(stream)
    if m is None:
        raise ValueError(f"not a symbol stream: {stream!r}")
    kind = m.group(2) + (f"_{m.group(3)}" if m.group(3) else "")
    return m.group(1).upper(), kind


def route_of(stream: str) -> Route:
    """Return the route a stream is served on; raise ValueError for a stream we do not know."""
    _, kind = split_stream(stream)
    base = kind.split("_", 1)[0]
    if base not in _ROUTES:
        raise ValueError(f"no known route for stream {stream!r}")
    return _ROUTES[base]


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """The streams one websocket connection carries, all on one route."""

    route: Route
    streams: tuple[str, ...]


def plan_connections(
    symbols: Sequence[str], kinds: Iterable[str], *, max_streams: int = MAX_STREAMS_PER_CONNECTION
) -> list[ConnectionPlan]:
    """Spread every (symbol, kind) stream over as few connections as the limit allows.

    Streams are grouped by route; a symbol's streams on one route stay on one connection, so a
    connection fault affects whole symbols, which is what silence detection reasons about.
    """
    by_route: dict[Route, list[list[str]]] = {}
    for symbol in symbols:
        per_route: dict[Route, list[str]] = {}
        for kind in kinds:
            name = stream_name(symbol, kind)
            per_route.setdefault(route_of(name), []).append(name)
        for route, names in per_route.items():
            if len(names) > max_streams:
                raise ValueError(f"{symbol} alone needs more than {max_streams} streams")
            by_route.setdefault(route, []).append(names)
    plans: list[ConnectionPlan] = []
    for route in sorted(by_route):
        current: list[str] = []
        for names in by_route[route]:
            if len(current) + len(names) > max_streams:
                plans.append(ConnectionPlan(route, tuple(current)))
                current = []
            current.extend(names)
        if current:
            plans.append(ConnectionPlan(route, tuple(current)))
    return plans


def control_messages(
    method: Literal["SUBSCRIBE", "UNSUBSCRIBE"], streams: Sequence[str], first_id: int
) -> list[dict[str, Any]]:
    """Return the control messages for ``streams``, PARAMS_PER_SUBSCRIBE per message."""
    return [
        {
            "method": method,
            "params": list(streams[i : i + PARAMS_PER_SUBSCRIBE]),
            "id": first_id + n,
        }
        for n, i in enumerate(range(0, len(streams), PARAMS_PER_SUBSCRIBE))
    ]
