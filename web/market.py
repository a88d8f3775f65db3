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
from core.schemas import BookTicker, Candle, MarkPrice, Signal, Trade, positions, wire_length

JSON = dict[str, Any]
MAX_PAGE = 1000
# Candles at most in a snapshot asked ``since`` an open time (a resubscription): one REST page.
MAX_SINCE = MAX_PAGE
UNIVERSE_REFRESH_S = 10.0


def _at(cls: Any, *names: str) -> tuple[int, ...]:
    """Return the wire positions of ``cls``'s fields ``names`` (core.schemas owns the layout)."""
    at = positions(cls)
    return tuple(at[n] for n in names)


# Positions as plain constants: these run for every record sent to browsers.
_CANDLE_LEN, _SIGNAL_LEN, _BOOK_LEN, _MARK_LEN, _TRADE_LEN = map(
    wire_length, (Candle, Signal, BookTicker, MarkPrice, Trade))  # fmt: skip
_C_OPEN_TIME, _C_CLOSE_TIME, _C_OPEN, _C_HIGH, _C_LOW, _C_CLOSE, _C_VOLUME, _C_QUOTE_VOLUME = _at(
    Candle, "open_time_ms", "close_time_ms", "open", "high", "low", "close", "volume",
    "quote_volume")  # fmt: skip
_C_TRADES, _C_TAKER_BUY, _C_TAKER_BUY_QUOTE, _C_CLOSED, _C_SOURCE = _at(
    Candle, "trades", "taker_buy_volume", "taker_buy_quote_volume", "closed", "source"
)
_S_FORMULA, _S_OPEN_TIME, _S_VALUE, _S_STATE, _S_PROVISIONAL, _S_COMPUTED_AT = _at(
    Signal, "formula", "open_time_ms", "value", "state", "provisional", "computed_at_ms"
)
_B_SYMBOL, _B_UPDATE_ID, _B_BID, _B_BID_QTY, _B_ASK, _B_ASK_QTY, _B_TIME = _at(
    BookTicker, "symbol", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty",
    "transaction_time_ms")  # fmt: skip
_M_SYMBOL, _M_MARK, _M_INDEX, _M_FUNDING_RATE, _M_NEXT_FUNDING, _M_TIME = _at(
    MarkPrice, "symbol", "mark_price", "index_price", "funding_rate", "next_funding_time_ms",
    "event_time_ms")  # fmt: skip
_T_ID, _T_PRICE, _T_QTY, _T_MAKER, _T_TIME = _at(
    Trade, "trade_id", "price", "quantity", "buyer_is_maker", "trade_time_ms"
)


def candle_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire candle, or None if it is not a v2 candle."""
    if len(w) != _CANDLE_LEN or w[0] != Candle.KIND or w[1] != Candle.VERSION:
        return None
    return {
        "open_time": w[_C_OPEN_TIME], "close_time": w[_C_CLOSE_TIME], "open": w[_C_OPEN],
        "high": w[_C_HIGH], "low": w[_C_LOW], "close": w[_C_CLOSE], "volume": w[_C_VOLUME],
        "quote_volume": w[_C_QUOTE_VOLUME], "trades": w[_C_TRADES],
        "taker_buy_volume": w[_C_TAKER_BUY], "taker_buy_quote_volume": w[_C_TAKER_BUY_QUOTE],
        "closed": w[_C_CLOSED], "source": w[_C_SOURCE],
    }  # fmt: skip


def signal_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire signal, or None if it is not a v1 signal."""
    if len(w) != _SIGNAL_LEN or w[0] != Signal.KIND or w[1] != Signal.VERSION:
        return None
    return {"signal": w[_S_FORMULA], "open_time": w[_S_OPEN_TIME], "value": w[_S_VALUE],
            "state": w[_S_STATE], "provisional": w[_S_PROVISIONAL],
            "computed_at": w[_S_COMPUTED_AT]}  # fmt: skip


def book_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire book ticker, or None if it is not a v1 book ticker."""
    if len(w) != _BOOK_LEN or w[0] != BookTicker.KIND or w[1] != BookTicker.VERSION:
        return None
    return {"symbol": w[_B_SYMBOL], "update_id": w[_B_UPDATE_ID], "bid": w[_B_BID],
            "bid_qty": w[_B_BID_QTY], "ask": w[_B_ASK], "ask_qty": w[_B_ASK_QTY],
            "time": w[_B_TIME]}  # fmt: skip


def mark_json(w: list[Any]) -> JSON | None:
    """Return the browser form of a wire mark price, or None if it is not a v1 mark price."""
    if len(w) != _MARK_LEN or w[0] != MarkPrice.KIND or w[1] != MarkPrice.VERSION:
        return None
    return {"symbol": w[_M_SYMBOL], "mark": w[_M_MARK], "index": w[_M_INDEX],
            "funding_rate": w[_M_FUNDING_RATE], "next_funding_time": w[_M_NEXT_FUNDING],
            "time": w[_M_TIME]}  # fmt: skip


def trade_json(w: list[Any]) -> JSON | None:
    """Return the tape's form of a wire trade (the taker's side), or None if not a v1 trade."""
    if len(w) != _TRADE_LEN or w[0] != Trade.KIND or w[1] != Trade.VERSION:
        return None
    return {"id": w[_T_ID], "price": w[_T_PRICE], "qty": w[_T_QTY],
            "side": "sell" if w[_T_MAKER] else "buy", "time": w[_T_TIME]}  # fmt: skip


TRADE_PREFIX = b'["trade",1,"'
TAPE_SCAN = 2000  # newest entries of the shard's trade stream searched for a tape snapshot


class Market:
    """Reads of one deployment's candles, signals and universe."""

    def __init__(
        self, client: redis.Redis, settings: Settings, *, control: redis.Redis | None = None
    ) -> None:
        self.client = client  # market data
        self.control = client if control is None else control  # universe, signal plan
        self.keys = Keys.of(settings)
        self.timeframes = tuple(tf.name for tf in settings.timeframes)
        self.signal_names = tuple(spec.name for spec in settings.signals.specs)
        self._symbols: frozenset[str] = frozenset()
        self._symbol_list: list[str] = []
        self._symbols_at = -UNIVERSE_REFRESH_S

    def symbols(self) -> list[str]:
        """Return the universe the consumer published (cached UNIVERSE_REFRESH_S); [] if none."""
        now = time.monotonic()
        if now - self._symbols_at >= UNIVERSE_REFRESH_S or not self._symbol_list:
            raw = self.control.get(self.keys.universe())
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

    def candles(self, symbol: str, timeframe: str, *, limit: int, before: int | None = None,
                since: int | None = None) -> tuple[list[JSON], int | None]:  # fmt: skip
        """Return the newest ``limit`` candles opening before ``before`` and at or after ``since``
        (ascending), and the cursor for the page before them (None when this page reaches the
        oldest stored candle, or ``since``)."""
        high = "+inf" if before is None else f"({before}"
        low = "-inf" if since is None else since
        raw: list[bytes] = self.client.zrevrangebyscore(  # type: ignore[assignment]
            self.keys.candles(symbol, timeframe), high, low, start=0, num=limit + 1
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
        plan: dict[bytes, bytes] = self.control.hgetall(self.keys.signal_plan())  # type: ignore[assignment]
        stored = self.client.zcard(self.keys.candles(symbol, timeframe))
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
