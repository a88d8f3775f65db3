"""Market data as browsers get it: the JSON shapes, and the reads shared by REST and snapshots.

Records arrive in their wire form (core.schemas: ``[kind, version, fields...]`` with decimal
strings); they are mapped to named JSON objects here without a Decimal round trip, since the web
tier only passes values on. docs/architecture.md "Web" lists the shapes.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from core.config import Settings
from core.keys import ENTRY_FIELD, Keys
from core.schemas import BookTicker, Candle, MarkPrice, Signal, Trade

JSON = dict[str, Any]
MAX_PAGE = 1000
UNIVERSE_REFRESH_S = 10.0


def candle_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire candle, or None if it is not a v2 candle."""
    if len(w) != 19 or w[0] != Candle.KIND or w[1] != Candle.VERSION:
        return None
    return {
        "open_time": w[4], "close_time": w[5], "open": w[6], "high": w[7], "low": w[8],
        "close": w[9], "volume": w[10], "quote_volume": w[11], "trades": w[12],
        "taker_buy_volume": w[13], "taker_buy_quote_volume": w[14], "closed": w[17],
        "source": w[18],
    }  # fmt: skip


def signal_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire signal, or None if it is not a v1 signal."""
    if len(w) != 10 or w[0] != Signal.KIND or w[1] != Signal.VERSION:
        return None
    return {"signal": w[4], "open_time": w[5], "value": w[6], "state": w[7],
            "provisional": w[8], "computed_at": w[9]}  # fmt: skip


def book_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire book ticker, or None if it is not a v1 book ticker."""
    if len(w) != 11 or w[0] != BookTicker.KIND or w[1] != BookTicker.VERSION:
        return None
    return {"symbol": w[2], "update_id": w[3], "bid": w[4], "bid_qty": w[5], "ask": w[6],
            "ask_qty": w[7], "time": w[8]}  # fmt: skip


def mark_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire mark price, or None if it is not a v1 mark price."""
    if len(w) != 9 or w[0] != MarkPrice.KIND or w[1] != MarkPrice.VERSION:
        return None
    return {"symbol": w[2], "mark": w[3], "index": w[4], "funding_rate": w[5],
            "next_funding_time": w[6], "time": w[7]}  # fmt: skip


def trade_json(w: list[Any]) -> JSON | None:
    """Return the tape's form of a wire trade (the taker's side), or None if not a v1 trade."""
    if len(w) != 12 or w[0] != Trade.KIND or w[1] != Trade.VERSION:
        return None
    return {"id": w[3], "price": w[6], "qty": w[7], "side": "sell" if w[8] else "buy",
            "time": w[9]}  # fmt: skip


TRADE_PREFIX = b'["trade",1,"'
TAPE_SCAN = 2000  # newest entries of the shard's trade stream searched for a tape snapshot


class Market:
    """Reads of one deployment's candles, signals and universe."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.keys = Keys(settings.namespace, settings.stream_shards)
        self.timeframes = tuple(tf.name for tf in settings.timeframes)
        self.signal_names = tuple(spec.name for spec in settings.signals.specs)
        self._symbols: frozenset[str] = frozenset()
        self._symbol_list: list[str] = []
        self._symbols_at = -UNIVERSE_REFRESH_S

    def symbols(self) -> list[str]:
        """Return the universe the consumer published (cached UNIVERSE_REFRESH_S); [] if none."""
        now = time.monotonic()
        if now - self._symbols_at >= UNIVERSE_REFRESH_S or not self._symbol_list:
            raw = self.client.get(self.keys.universe())
            if raw is not None:
                self._symbol_list = [str(s) for s in orjson.loads(raw)]
                self._symbols = frozenset(self._symbol_list)
            self._symbols_at = now
        return self._symbol_list

    def check(self, symbol: Any, timeframe: Any = None, *, need_tf: bool = True) -> str | None:
        """Return an error code for a bad (symbol, timeframe), or None when both are served."""
        if not isinstance(symbol, str) or symbol not in self._known():
            return "unknown_symbol"
        if need_tf and (not isinstance(timeframe, str) or timeframe not in self.timeframes):
            return "unknown_timeframe"
        return None

    def _known(self) -> frozenset[str]:
        self.symbols()
        return self._symbols

    def candles(self, symbol: str, timeframe: str, *, limit: int, before: int | None = None
                ) -> tuple[list[JSON], int | None]:  # fmt: skip
        """Return up to ``limit`` candles opening before ``before`` (ascending) and the cursor
        for the page before them (None when this page reaches the oldest stored candle)."""
        high = "+inf" if before is None else f"({before}"
        raw: list[bytes] = self.client.zrevrangebyscore(  # type: ignore[assignment]
            self.keys.candles(symbol, timeframe), high, "-inf", start=0, num=limit + 1
        )
        more = len(raw) > limit
        out = [c for c in (candle_json(orjson.loads(m)) for m in raw[:limit]) if c is not None]
        out.reverse()
        return out, (out[0]["open_time"] if more and out else None)

    def signals(self, symbol: str, timeframe: str) -> dict[str, JSON]:
        """Return the latest value of every signal of a series."""
        raw = self.client.hgetall(self.keys.signals(symbol, timeframe))
        out = {}
        for name, value in raw.items():
            sig = signal_json(orjson.loads(value))
            if sig is not None:
                out[name.decode() if isinstance(name, bytes) else name] = sig
        return out

    def signal_changes(self, symbol: str, timeframe: str) -> dict[str, list[JSON]]:
        """Return, per signal, the closed values whose state differs from the closed value
        before (the first kept value counts as a change): where the chart puts its markers."""
        names = self.signal_names
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zrange(self.keys.signal_history(symbol, timeframe, name), 0, -1)
            histories = pipe.execute()
        out: dict[str, list[JSON]] = {}
        for name, members in zip(names, histories, strict=True):
            changes: list[JSON] = []
            state = None
            for member in members:
                sig = signal_json(orjson.loads(member))
                if sig is None or sig["state"] == state:
                    continue
                state = sig["state"]
                changes.append(sig)
            out[name] = changes
        return out

    def signal_needs(self, symbol: str, timeframe: str) -> dict[str, int | None]:
        """Return, per signal planned for the series, how many more closed candles its window
        needs (0: enough), None for a signal not computed on this series, from the plan the
        signals process publishes; {} before it has."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.signal_plan())
            pipe.zcard(self.keys.candles(symbol, timeframe))
            plan, stored = pipe.execute()
        closed = max(0, int(stored) - 1)  # the newest candle may still be open
        out: dict[str, int | None] = {}
        for name, raw in plan.items():
            p = orjson.loads(raw)
            planned = timeframe in p.get("timeframes", ()) and (
                p.get("symbols") is None or symbol in p["symbols"]
            )
            out[name.decode()] = max(0, int(p["window"]) - closed) if planned else None
        return out

    def recent_trades(self, symbol: str, limit: int) -> list[JSON]:
        """Return up to ``limit`` of the symbol's newest trades (ascending), from the newest
        TAPE_SCAN entries of its shard's trade stream (a quiet symbol may have none there)."""
        prefix = TRADE_PREFIX + symbol.encode() + b'"'
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.client.xrevrange(  # type: ignore[assignment]
            self.keys.trades(self.keys.shard_of(symbol)), count=TAPE_SCAN
        )
        out: list[JSON] = []
        for _, fields in entries:
            data = fields.get(ENTRY_FIELD, b"")
            if data.startswith(prefix):
                trade = trade_json(orjson.loads(data))
                if trade is not None:
                    out.append(trade)
                    if len(out) >= limit:
                        break
        out.reverse()
        return out
