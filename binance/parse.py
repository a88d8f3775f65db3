"""Binance USD-M websocket frames -> our records. Pure: no I/O, no clock (the caller passes it).

A combined-stream frame, trimmed from real traffic (tests/fixtures/ws-combined-2021-07-22.txt)::

    {"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,
     "s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}

Exchange field names stay here (and in the fast path's structs, binance/frames.py) and nowhere
else; :func:`parse_frame` converts them once into :mod:`core.schemas` records. Fields Binance adds
later are tolerated and reported in ``Parsed.unknown_fields`` so that the caller can count and log
them once.

The feeder calls :func:`parse_feed_frame`: binance/frames.py decodes, checks and encodes the
frames it sees all day in one msgspec pass, several times cheaper than building records; a frame
that path does not take comes here, to :func:`parse_frame`, which accepts, ignores or explains it
as before, and its record is handed on in the fast path's form.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson

from binance.frames import (
    AggTradeEvent,
    BookTickerEvent,
    FastEvent,
    FastPathMiss,
    KlineBody,
    KlineEvent,
    MarkPriceEvent,
    decode_frame,
)
from core.errors import FrameError
from core.schemas import BookTicker, Kline, MarkPrice, Trade

# Every field Binance documents (docs/binance.md, "Stream payloads"), per event type.
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "aggTrade": frozenset("e E s a p q nq f l T m".split()),
    "trade": frozenset("e E T s t p q X m".split()),
    "kline": frozenset("e E s k".split()),
    "bookTicker": frozenset("e u E T s b B a A".split()),
    "markPriceUpdate": frozenset("e E s p ap i P r T".split()),
}
KLINE_FIELDS = frozenset("t T s i f L o c h l v n x q V Q B".split())


class ControlReply(NamedTuple):
    """The answer to SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS: a result, or an error code."""

    id: int | None
    result: Any
    error_code: int | None
    error_msg: str | None


class Ignored(NamedTuple):
    """A well-formed event of a type the pipeline does not ingest (depthUpdate, ticker...)."""

    event_type: str


Event = Trade | Kline | BookTicker | MarkPrice | ControlReply | Ignored


class Parsed(NamedTuple):
    stream: str | None  # the combined-stream name, None for raw /ws frames and replies
    event: Event
    unknown_fields: frozenset[str]


class FeedParsed(NamedTuple):
    """A frame as the feeder takes it: events in the fast path's form (binance/frames.py)."""

    stream: str | None
    event: FastEvent | ControlReply | Ignored
    unknown_fields: frozenset[str]


_NO_FIELDS: frozenset[str] = frozenset()


def parse_feed_frame(frame: bytes | str, recv_time_ms: int) -> FeedParsed:
    """Parse one frame for the feeder; raise FrameError saying what is wrong with it."""
    try:
        msg = decode_frame(frame, recv_time_ms)
    except FastPathMiss:
        parsed = parse_frame(frame, recv_time_ms)
        return FeedParsed(parsed.stream, as_fast_event(parsed.event), parsed.unknown_fields)
    return FeedParsed(msg.stream, msg.data, _NO_FIELDS)


def as_fast_event(event: Event) -> FastEvent | ControlReply | Ignored:
    """Return a record of :func:`parse_frame` in the fast path's form (same wire encoding)."""
    if isinstance(event, Trade):  # a raw trade is an aggregate of one
        return AggTradeEvent(event.event_time_ms, event.symbol, event.trade_id,
                             format(event.price, "f"), format(event.quantity, "f"),
                             event.first_id, event.last_id, event.trade_time_ms,
                             event.buyer_is_maker, recv_time_ms=event.recv_time_ms)  # fmt: skip
    if isinstance(event, BookTicker):
        return BookTickerEvent(event.update_id, event.symbol, format(event.bid_price, "f"),
                               format(event.bid_qty, "f"), format(event.ask_price, "f"),
                               format(event.ask_qty, "f"), event.transaction_time_ms,
                               event.event_time_ms, event.recv_time_ms)  # fmt: skip
    if isinstance(event, MarkPrice):
        return MarkPriceEvent(event.event_time_ms, event.symbol, format(event.mark_price, "f"),
                              format(event.index_price, "f"), format(event.funding_rate, "f"),
                              event.next_funding_time_ms,
                              recv_time_ms=event.recv_time_ms)  # fmt: skip
    if isinstance(event, Kline):
        body = KlineBody(event.open_time_ms, event.close_time_ms, event.symbol, event.timeframe,
                         event.first_trade_id, event.last_trade_id, format(event.open, "f"),
                         format(event.close, "f"), format(event.high, "f"),
                         format(event.low, "f"), format(event.volume, "f"), event.trades,
                         event.closed, format(event.quote_volume, "f"),
                         format(event.taker_buy_volume, "f"),
                         format(event.taker_buy_quote_volume, "f"))  # fmt: skip
        return KlineEvent(event.event_time_ms, body, recv_time_ms=event.recv_time_ms)
    return event


def parse_frame(frame: bytes | str, recv_time_ms: int) -> Parsed:
    """Parse one websocket text frame; raise FrameError saying what is wrong with it."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise FrameError(f"expected a JSON object, got {type(msg).__name__}")
    stream = None
    if "stream" in msg and "data" in msg:
        stream, msg = msg["stream"], msg["data"]
        if not isinstance(stream, str) or not isinstance(msg, dict):
            raise FrameError("combined frame with a non-string stream or non-object data")
    event_type = msg.get("e")
    if event_type is None:
        if "result" in msg or "code" in msg or "error" in msg:
            return Parsed(None, _control(msg), frozenset())
        raise FrameError("object without an event type `e`")
    try:
        if event_type == "aggTrade":
            event: Event = _agg_trade(msg, recv_time_ms)
        elif event_type == "trade":
            event = _trade(msg, recv_time_ms)
        elif event_type == "kline":
            event = _kline(msg, recv_time_ms)
        elif event_type == "bookTicker":
            event = _book_ticker(msg, recv_time_ms)
        elif event_type == "markPriceUpdate":
            event = _mark_price(msg, recv_time_ms)
        else:
            return Parsed(stream, Ignored(str(event_type)), frozenset())
    except KeyError as exc:
        raise FrameError(f"{event_type}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise FrameError(f"{event_type}: bad value ({exc})") from None
    # What the record's readers check (core.schemas decode), checked before it is written.
    check = getattr(event, "_check", None)
    problem = check() if check else None
    if problem:
        raise FrameError(f"{event_type}: {problem}")
    unknown = msg.keys() - KNOWN_FIELDS[event_type]
    if event_type == "kline":
        unknown |= {f"k.{f}" for f in msg["k"].keys() - KLINE_FIELDS}
    return Parsed(stream, event, frozenset(unknown))


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r:.40}")
    return value


def _dec(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise TypeError(f"expected a decimal string, got {value!r:.40}")
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"not a finite decimal: {value!r:.40}")
    return d


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {value!r:.40}")
    return value


def _symbol(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a symbol, got {value!r:.40}")
    return value


def _agg_trade(m: dict[str, Any], recv_time_ms: int) -> Trade:
    return Trade(
        symbol=_symbol(m["s"]),
        trade_id=_int(m["a"]),
        first_id=_int(m["f"]),
        last_id=_int(m["l"]),
        price=_dec(m["p"]),
        quantity=_dec(m["q"]),  # `q` includes RPI fills, as the kline volume does
        buyer_is_maker=_bool(m["m"]),
        trade_time_ms=_int(m["T"]),
        event_time_ms=_int(m["E"]),
        recv_time_ms=recv_time_ms,
    )


def _trade(m: dict[str, Any], recv_time_ms: int) -> Trade:
    trade_id = _int(m["t"])
    return Trade(
        symbol=_symbol(m["s"]),
        trade_id=trade_id,
        first_id=trade_id,
        last_id=trade_id,
        price=_dec(m["p"]),
        quantity=_dec(m["q"]),
        buyer_is_maker=_bool(m["m"]),
        trade_time_ms=_int(m["T"]),
        event_time_ms=_int(m["E"]),
        recv_time_ms=recv_time_ms,
    )


def _kline(m: dict[str, Any], recv_time_ms: int) -> Kline:
    k = m["k"]
    if not isinstance(k, dict):
        raise TypeError("`k` is not an object")
    return Kline(
        symbol=_symbol(k["s"]),
        timeframe=str(k["i"]),
        open_time_ms=_int(k["t"]),
        close_time_ms=_int(k["T"]),
        open=_dec(k["o"]),
        high=_dec(k["h"]),
        low=_dec(k["l"]),
        close=_dec(k["c"]),
        volume=_dec(k["v"]),
        quote_volume=_dec(k["q"]),
        trades=_int(k["n"]),
        taker_buy_volume=_dec(k["V"]),
        taker_buy_quote_volume=_dec(k["Q"]),
        first_trade_id=_int(k["f"]),
        last_trade_id=_int(k["L"]),
        closed=_bool(k["x"]),
        source="exchange",
        event_time_ms=_int(m["E"]),
        recv_time_ms=recv_time_ms,
    )


def _book_ticker(m: dict[str, Any], recv_time_ms: int) -> BookTicker:
    return BookTicker(
        symbol=_symbol(m["s"]),
        update_id=_int(m["u"]),
        bid_price=_dec(m["b"]),
        bid_qty=_dec(m["B"]),
        ask_price=_dec(m["a"]),
        ask_qty=_dec(m["A"]),
        transaction_time_ms=_int(m["T"]),
        event_time_ms=_int(m["E"]),
        recv_time_ms=recv_time_ms,
    )


def _mark_price(m: dict[str, Any], recv_time_ms: int) -> MarkPrice:
    return MarkPrice(
        symbol=_symbol(m["s"]),
        mark_price=_dec(m["p"]),
        index_price=_dec(m["i"]),
        funding_rate=_dec(m["r"]),
        next_funding_time_ms=_int(m["T"]),
        event_time_ms=_int(m["E"]),
        recv_time_ms=recv_time_ms,
    )


def _control(m: dict[str, Any]) -> ControlReply:
    """Docs show ``{"code": 2, "msg": ...}``; clients also read ``{"error": {...}, "id": N}``."""
    reply_id = m.get("id")
    if isinstance(m.get("error"), dict):
        m = {**m["error"], "id": reply_id}
    if "code" in m:
        return ControlReply(reply_id, None, m.get("code"), str(m.get("msg", "")))
    return ControlReply(reply_id, m["result"], None, None)
