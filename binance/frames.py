"""The feeder's fast path for Binance USD-M combined-stream frames: decode, check, encode. Pure.

One pass of msgspec turns a frame into a typed struct and checks every field's JSON type; one
regular expression then checks every decimal string of the event at once. What this path
accepts, it encodes straight into the stream record's wire form (``core.schemas``), byte for byte
what :func:`core.schemas.encode` writes for the record :func:`binance.parse.parse_frame` makes
of the same frame, without building that record (no ``Decimal`` and back, no dataclass):
tests/unit/test_feed_frames.py checks the two agree on every recorded frame.

It accepts only the frames the feeder sees all day: ``{"stream": ..., "data": {...}}`` with
one of the five event types below, every field of the type known (``forbid_unknown_fields``),
and plain decimal strings. Anything else (control replies, other event types, a field Binance
added, a malformed frame) raises :class:`FastPathMiss`; the caller then asks
:func:`binance.parse.parse_frame`, which explains it (unknown fields, ``Ignored``,
``FrameError``). A struct's attributes carry our names; the exchange's names are the
``name=`` of each field, in this one place (STYLE.md §2).

A frame, trimmed from real traffic::

    {"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,
     "s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct, field

from core.schemas import dumps
from core.timeframes import SUPPORTED as SUPPORTED_TIMEFRAMES

Symbol = Annotated[str, Meta(min_length=1)]
# Within what orjson reads as an int (and writes back); beyond, parse.py decides (its _int).
Int = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
# Not read here, but documented (binance/parse.py KNOWN_FIELDS): accepted with any value.
Unused = Any
# The wire form of a decimal (core.schemas._DECIMAL) with no leading zero: exactly the strings
# that ``format(Decimal(s), "f")`` returns unchanged, so passing them through is the same bytes.
_DEC = r"-?(?:0|[1-9][0-9]{0,29})(?:\.[0-9]{1,30})?"
_DECS = {n: re.compile(" ".join([_DEC] * n)).fullmatch for n in (2, 3, 4, 8)}
_dec2, _dec3, _dec4, _dec8 = _DECS[2], _DECS[3], _DECS[4], _DECS[8]
# What core.schemas' records check beyond syntax (their ``_check``), checked here too, so that the
# fast path never writes a record its readers would refuse: a frame that fails goes to
# binance/parse.py, which refuses it with the reason (the feeder counts it malformed).


def _positive(d: str) -> bool:
    """A decimal (already matched by _DEC) greater than zero."""
    return d[0] != "-" and d.strip("0.") != ""


def _ohlc(k: KlineBody) -> bool:
    if k.timeframe not in SUPPORTED_TIMEFRAMES or k.close_time_ms < k.open_time_ms:
        return False
    if not k.trades:
        return True
    low, high = Decimal(k.low), Decimal(k.high)
    return low <= min(Decimal(k.open), Decimal(k.close)) <= high


# Set after decoding (the frame does not carry it); the JSON name keeps frames from setting it.
_RECV = "~recv_time_ms"


class FastPathMiss(Exception):
    """The frame is not one the fast path takes; parse it with binance.parse.parse_frame."""


class AggTradeEvent(Struct, tag_field="e", tag="aggTrade", forbid_unknown_fields=True, gc=False):
    """``<symbol>@aggTrade``."""

    event_time_ms: Int = field(name="E")
    symbol: Symbol = field(name="s")
    trade_id: Int = field(name="a")  # aggregate trade id
    price: str = field(name="p")
    quantity: str = field(name="q")  # includes RPI fills, as the kline volume does
    first_id: Int = field(name="f")  # first raw trade id
    last_id: Int = field(name="l")  # last raw trade id
    trade_time_ms: Int = field(name="T")
    buyer_is_maker: bool = field(name="m")
    normal_quantity: Unused = field(default=None, name="nq")  # without RPI fills
    recv_time_ms: Int = field(default=0, name=_RECV)

    def wire(self) -> bytes:
        """Return the encoded :class:`core.schemas.Trade`."""
        return dumps(("trade", 1, self.symbol, self.trade_id, self.first_id, self.last_id,
                             self.price, self.quantity, self.buyer_is_maker, self.trade_time_ms,
                             self.event_time_ms, self.recv_time_ms))  # fmt: skip

    def valid(self) -> bool:
        return (
            _dec2(f"{self.price} {self.quantity}") is not None
            and self.first_id <= self.last_id
            and _positive(self.price)
            and _positive(self.quantity)
        )


class RawTradeEvent(Struct, tag_field="e", tag="trade", forbid_unknown_fields=True, gc=False):
    """``<symbol>@trade`` (``TP_TRADE_STREAM=trade``): one raw trade, so first = last = id."""

    event_time_ms: Int = field(name="E")
    trade_time_ms: Int = field(name="T")
    symbol: Symbol = field(name="s")
    trade_id: Int = field(name="t")
    price: str = field(name="p")
    quantity: str = field(name="q")
    buyer_is_maker: bool = field(name="m")
    order_type: Unused = field(default=None, name="X")
    recv_time_ms: Int = field(default=0, name=_RECV)

    @property
    def first_id(self) -> int:
        return self.trade_id

    @property
    def last_id(self) -> int:
        return self.trade_id

    def wire(self) -> bytes:
        """Return the encoded :class:`core.schemas.Trade`."""
        return dumps(("trade", 1, self.symbol, self.trade_id, self.trade_id, self.trade_id,
                             self.price, self.quantity, self.buyer_is_maker, self.trade_time_ms,
                             self.event_time_ms, self.recv_time_ms))  # fmt: skip

    def valid(self) -> bool:
        return (
            _dec2(f"{self.price} {self.quantity}") is not None
            and self.first_id <= self.last_id
            and _positive(self.price)
            and _positive(self.quantity)
        )


class BookTickerEvent(Struct, tag_field="e", tag="bookTicker", forbid_unknown_fields=True,
                      gc=False):  # fmt: skip
    """``<symbol>@bookTicker``."""

    update_id: Int = field(name="u")
    symbol: Symbol = field(name="s")
    bid_price: str = field(name="b")
    bid_qty: str = field(name="B")
    ask_price: str = field(name="a")
    ask_qty: str = field(name="A")
    transaction_time_ms: Int = field(name="T")
    event_time_ms: Int = field(name="E")
    recv_time_ms: Int = field(default=0, name=_RECV)

    def wire(self) -> bytes:
        """Return the encoded :class:`core.schemas.BookTicker`."""
        return dumps(("book", 1, self.symbol, self.update_id, self.bid_price, self.bid_qty,
                             self.ask_price, self.ask_qty, self.transaction_time_ms,
                             self.event_time_ms, self.recv_time_ms))  # fmt: skip

    def valid(self) -> bool:
        return _dec4(f"{self.bid_price} {self.bid_qty} {self.ask_price} {self.ask_qty}") is not None


class MarkPriceEvent(Struct, tag_field="e", tag="markPriceUpdate", forbid_unknown_fields=True,
                     gc=False):  # fmt: skip
    """``<symbol>@markPrice@1s``."""

    event_time_ms: Int = field(name="E")
    symbol: Symbol = field(name="s")
    mark_price: str = field(name="p")
    index_price: str = field(name="i")
    funding_rate: str = field(name="r")
    next_funding_time_ms: Int = field(name="T")
    estimated_settle_price: Unused = field(default=None, name="P")
    ap: Unused = field(default=None, name="ap")  # added 2026-03-16, undocumented meaning
    recv_time_ms: Int = field(default=0, name=_RECV)

    def wire(self) -> bytes:
        """Return the encoded :class:`core.schemas.MarkPrice`."""
        return dumps(("mark", 1, self.symbol, self.mark_price, self.index_price,
                             self.funding_rate, self.next_funding_time_ms, self.event_time_ms,
                             self.recv_time_ms))  # fmt: skip

    def valid(self) -> bool:
        return _dec3(f"{self.mark_price} {self.index_price} {self.funding_rate}") is not None


class KlineBody(Struct, forbid_unknown_fields=True, gc=False):
    """The ``k`` object of a kline event."""

    open_time_ms: Int = field(name="t")
    close_time_ms: Int = field(name="T")
    symbol: Symbol = field(name="s")
    timeframe: str = field(name="i")
    first_trade_id: Int = field(name="f")
    last_trade_id: Int = field(name="L")
    open: str = field(name="o")
    close: str = field(name="c")
    high: str = field(name="h")
    low: str = field(name="l")
    volume: str = field(name="v")
    trades: Int = field(name="n")
    closed: bool = field(name="x")
    quote_volume: str = field(name="q")
    taker_buy_volume: str = field(name="V")
    taker_buy_quote_volume: str = field(name="Q")
    ignore: Unused = field(default=None, name="B")


class KlineEvent(Struct, tag_field="e", tag="kline", forbid_unknown_fields=True, gc=False):
    """``<symbol>@kline_<interval>``; the symbol and interval that count are the ``k`` object's."""

    event_time_ms: Int = field(name="E")
    k: KlineBody = field(name="k")
    outer_symbol: Unused = field(default=None, name="s")
    recv_time_ms: Int = field(default=0, name=_RECV)

    @property
    def symbol(self) -> str:
        return self.k.symbol

    @property
    def timeframe(self) -> str:
        return self.k.timeframe

    @property
    def open_time_ms(self) -> int:
        return self.k.open_time_ms

    def wire(self) -> bytes:
        """Return the encoded :class:`core.schemas.Kline` (source ``exchange``)."""
        k = self.k
        return dumps(("kline", 2, k.symbol, k.timeframe, k.open_time_ms, k.close_time_ms,
                             k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades,
                             k.taker_buy_volume, k.taker_buy_quote_volume, k.first_trade_id,
                             k.last_trade_id, k.closed, "exchange", self.event_time_ms,
                             self.recv_time_ms))  # fmt: skip

    def valid(self) -> bool:
        k = self.k
        decimals = (f"{k.open} {k.high} {k.low} {k.close} {k.volume} {k.quote_volume} "
                    f"{k.taker_buy_volume} {k.taker_buy_quote_volume}")  # fmt: skip
        return _dec8(decimals) is not None and _ohlc(k)


TradeEvent = AggTradeEvent | RawTradeEvent
FastEvent = AggTradeEvent | RawTradeEvent | BookTickerEvent | MarkPriceEvent | KlineEvent


class Combined(Struct, forbid_unknown_fields=True, gc=False):
    """A combined-stream frame: ``{"stream": <name>, "data": <event>}``."""

    stream: str
    data: FastEvent


_decode = msgspec.json.Decoder(Combined).decode


def decode_frame(frame: bytes | str, recv_time_ms: int) -> Combined:
    """Return the frame decoded and checked; raise FastPathMiss if this path does not take it."""
    try:
        msg = _decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise FastPathMiss from None
    event = msg.data
    if not event.valid():
        raise FastPathMiss
    event.recv_time_ms = recv_time_ms
    return msg
