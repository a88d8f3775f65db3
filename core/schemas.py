"""Records that cross process boundaries, and their wire encoding.

Wire format: a JSON array (written by msgspec, read by orjson), ``[kind, version, field1,
field2, ...]`` in the order the dataclass declares its fields. Arrays keep stream entries about
half the size of objects, and the ``version`` lets a reader reject (rather than misread) a layout
it does not know. Encoding rules:

* times are int UTC milliseconds, named ``*_ms``;
* prices and sizes are ``Decimal`` in memory and fixed-point strings on the wire, never floats;
* booleans are JSON booleans; indicator values (``Signal.value``) are finite JSON numbers.

Example, a Trade from an aggTrade::

    ["trade",1,"BTCUSDT",5933014,100,105,"27785.00","0.014",false,1679851564486,1679851564490,
     1679851564493]

:func:`decode` checks kind, version, length and the type of every field, and raises
:class:`~core.errors.SchemaError` naming the record, the field and what was wrong.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, TypeVar, get_type_hints

import msgspec
import orjson

from core.errors import SchemaError
from core.timeframes import SUPPORTED as SUPPORTED_TIMEFRAMES

_DECIMAL = re.compile(r"^-?\d{1,30}(\.\d{1,30})?$")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_]{1,29}$")  # delivery contracts: BTCUSDT_210924
SIGNAL_STATES = ("long", "short", "flat")
GAP_REASONS = ("id_jump", "shed", "outage")
# Where a candle's numbers come from. "exchange" (a closed kline of the exchange, from its stream or
# REST) is final: a candle built from trades never replaces it. "partial" is ours but known to miss
# trades (we started, or lost trades, inside its period): the exchange's kline will replace it.
CANDLE_SOURCES = ("trades", "partial", "exchange")


@dataclass(frozen=True, slots=True)
class Trade:
    """One exchange trade (raw ``trade``) or aggregate trade (``aggTrade``)."""

    KIND: ClassVar[str] = "trade"
    VERSION: ClassVar[int] = 1

    symbol: str
    trade_id: int  # aggTrade `a` (aggregate id) or trade `t`; increases by 1 per event
    first_id: int  # first raw trade id covered (aggTrade `f`; `t` for a raw trade)
    last_id: int  # last raw trade id covered (aggTrade `l`; `t` for a raw trade)
    price: Decimal
    quantity: Decimal
    buyer_is_maker: bool  # `m`: true means the taker sold
    trade_time_ms: int  # `T`
    event_time_ms: int  # `E`
    recv_time_ms: int  # when our feeder received the frame

    def _check(self) -> str | None:
        if self.first_id > self.last_id:
            return "first_id is greater than last_id"
        if self.price <= 0 or self.quantity <= 0:
            return "price and quantity must be positive"
        return None


@dataclass(frozen=True, slots=True)
class Candle:
    """An OHLCV candle: one of ours, or the exchange's kline (then ``closed`` is its ``x``)."""

    KIND: ClassVar[str] = "candle"
    VERSION: ClassVar[int] = 2

    symbol: str
    timeframe: str
    open_time_ms: int
    close_time_ms: int  # last millisecond of the period, as Binance reports it
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal  # base asset
    quote_volume: Decimal
    trades: int  # number of raw trades
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal
    first_trade_id: int  # -1 when the period had no trade
    last_trade_id: int
    closed: bool
    source: str  # one of CANDLE_SOURCES

    def _check(self) -> str | None:
        if self.source not in CANDLE_SOURCES:
            return f"source must be one of {CANDLE_SOURCES}"
        if self.timeframe not in SUPPORTED_TIMEFRAMES:
            return f"unsupported timeframe {self.timeframe!r}"
        if self.close_time_ms < self.open_time_ms:
            return "close_time_ms is before open_time_ms"
        if self.trades and not (self.low <= min(self.open, self.close) <= self.high):
            return "open/close outside [low, high]"
        return None


@dataclass(frozen=True, slots=True)
class Kline(Candle):
    """The exchange's kline event (``kline_<interval>``): a Candle, plus when sent and seen."""

    KIND: ClassVar[str] = "kline"
    VERSION: ClassVar[int] = 2

    event_time_ms: int  # `E`
    recv_time_ms: int

    def candle(self) -> Candle:
        """Return the candle this kline reports."""
        return Candle(*(getattr(self, f.name) for f in dataclasses.fields(Candle)))


@dataclass(frozen=True, slots=True)
class BookTicker:
    """Best bid and ask of one symbol (``bookTicker``)."""

    KIND: ClassVar[str] = "book"
    VERSION: ClassVar[int] = 1

    symbol: str
    update_id: int  # `u`
    bid_price: Decimal
    bid_qty: Decimal
    ask_price: Decimal
    ask_qty: Decimal
    transaction_time_ms: int  # `T`
    event_time_ms: int  # `E`
    recv_time_ms: int


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """Mark price, index and funding of one symbol (``<symbol>@markPrice@1s``, every second)."""

    KIND: ClassVar[str] = "mark"
    VERSION: ClassVar[int] = 1

    symbol: str
    mark_price: Decimal  # `p`
    index_price: Decimal  # `i`
    funding_rate: Decimal  # `r`: the rate of the coming funding
    next_funding_time_ms: int  # `T`
    event_time_ms: int  # `E`
    recv_time_ms: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Raw trade ids the feeder knows it missed, or may have missed, for backfill to fill.

    ``id_jump`` and ``shed`` name the exact missing ids. ``outage`` (written when a connection
    comes back, for every symbol it carries) names a time window whose trades we may not have
    seen: its ids from ``from_trade_id`` on are unknown, so ``to_trade_id`` is -1.
    """

    KIND: ClassVar[str] = "gap"
    VERSION: ClassVar[int] = 1

    symbol: str
    from_trade_id: int  # first missing raw trade id (inclusive)
    to_trade_id: int  # last missing raw trade id (inclusive); -1 for an outage: unknown
    start_time_ms: int  # time window that contains the missing trades
    end_time_ms: int
    reason: str  # one of GAP_REASONS
    detected_at_ms: int

    def _check(self) -> str | None:
        if self.reason == "outage":
            if self.to_trade_id != -1:
                return "an outage gap has to_trade_id -1 (its last id is unknown)"
        elif self.from_trade_id > self.to_trade_id:
            return "from_trade_id is greater than to_trade_id"
        if self.start_time_ms > self.end_time_ms:
            return "start_time_ms is after end_time_ms"
        if self.reason not in GAP_REASONS:
            return f"reason must be one of {GAP_REASONS}"
        return None


@dataclass(frozen=True, slots=True)
class Signal:
    """The value and state of one formula on one candle of one symbol and timeframe."""

    KIND: ClassVar[str] = "signal"
    VERSION: ClassVar[int] = 1

    symbol: str
    timeframe: str
    formula: str
    open_time_ms: int  # the candle the value belongs to
    value: float  # indicator value: an approximation by nature, so a float
    state: str  # one of SIGNAL_STATES
    provisional: bool  # computed on the still-open candle: may change until it closes
    computed_at_ms: int

    def _check(self) -> str | None:
        if self.state not in SIGNAL_STATES:
            return f"state must be one of {SIGNAL_STATES}"
        if self.timeframe not in SUPPORTED_TIMEFRAMES:
            return f"unsupported timeframe {self.timeframe!r}"
        return None


# --- health reports ---------------------------------------------------------------------------

HEALTH_STALE_MS = 10_000  # a process that has not reported for this long is counted down


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One process's report: a JSON object in its role's health hash, one field per process
    (``feed:health``, ``consumer:health``, ``worker:health``, ``web:health``,
    ``execution:health``), written every 2 s.

    Every report carries the time it was written, ``at_ms``; the feeder's names it
    ``updated_ms`` (tests and the ops page read that name), and a reader accepts either. The rest
    is the process's own figures, passed on as they are. A report is stale once it is older than
    ``HEALTH_STALE_MS`` (or has no time): the one rule the health API, the ops page, ``/readyz``
    and ``/metrics`` apply.
    """

    name: str  # the process (the hash field)
    at_ms: int  # when it was written; 0 when the report has no time or is unreadable
    fields: dict[str, Any]  # the report as written, or {"unreadable": text}

    TIME_FIELDS: ClassVar[tuple[str, ...]] = ("at_ms", "updated_ms")
    # What readers add to a report (and is not one of the process's figures).
    ADDED: ClassVar[tuple[str, ...]] = ("age_ms", "stale")

    @classmethod
    def decode(cls, name: bytes | str, raw: bytes | str) -> HealthReport:
        """Return the report stored under ``name``; an unreadable one is kept as text."""
        text_name = name.decode(errors="replace") if isinstance(name, bytes) else name
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError:
            fields = None
        if not isinstance(fields, dict):
            text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
            return cls(text_name, 0, {"unreadable": text})
        at = next((fields[f] for f in cls.TIME_FIELDS if fields.get(f)), 0)
        return cls(text_name, at if type(at) is int else 0, fields)

    def encode(self) -> bytes:
        """Return the stored form: ``{"name", "at_ms", ...fields}``."""
        return orjson.dumps({"name": self.name, "at_ms": self.at_ms, **self.fields})

    def age_ms(self, now_ms: int) -> int | None:
        return now_ms - self.at_ms if self.at_ms else None

    def stale(self, now_ms: int, stale_after_ms: int = HEALTH_STALE_MS) -> bool:
        """Whether the process has not reported for longer than ``stale_after_ms``."""
        return not self.at_ms or now_ms - self.at_ms > stale_after_ms

    def view(
        self, now_ms: int, stale_after_ms: int = HEALTH_STALE_MS, *, age: bool = True
    ) -> dict[str, Any]:
        """Return the report's fields with ``stale`` (and ``age_ms``) added, for readers."""
        out = dict(self.fields)
        if age:
            out["age_ms"] = self.age_ms(now_ms)
        out["stale"] = self.stale(now_ms, stale_after_ms)
        return out


Record = Trade | Candle | Kline | BookTicker | MarkPrice | Gap | Signal
R = TypeVar("R", Trade, Candle, Kline, BookTicker, MarkPrice, Gap, Signal)


# --- wire layout -----------------------------------------------------------------------------


def positions(cls: type) -> dict[str, int]:
    """Return each field's index in the wire array of ``cls`` (after kind and version)."""
    return {f.name: i + 2 for i, f in enumerate(dataclasses.fields(cls))}


# Records are encoded with msgspec, not orjson: orjson (3.12 and later) returns bytes that keep its
# whole working buffer, 4 KiB whatever the record's length (its finish() sets the size and then
# skips the shrinking realloc: https://github.com/home-assistant/core/pull/181245), so a record
# held in a queue (the feeder's outbox, a web room's late candles) cost 4 KiB instead of ~150
# bytes and a bound counted in bytes held 25x that much memory (issue 19: 800 MiB of RSS behind a
# 20 MB outbox). msgspec's bytes are exactly as long as the record, and its output is byte for
# byte orjson's for what records hold (str, int, bool, None; tests/unit/test_schemas.py).
dumps = msgspec.json.Encoder().encode


def wire_length(cls: type) -> int:
    """Return the length of the wire array of ``cls``: kind, version and every field."""
    return len(dataclasses.fields(cls)) + 2


# A candle's last two fields are ``closed`` and ``source``, in that order, and must stay there:
# the candle scripts (tasks/candle_store.py) tell a final candle, a partial one and one built
# from trades by the member's last bytes, and the signals actor tells an open one the same way,
# without decoding (tests/unit/test_candle_layout.py pins this).
CANDLE_AT = positions(Candle)


def candle_ending(source: str, *, closed: bool | None = None) -> bytes:
    """Return the last bytes of every encoded candle with ``source`` (and ``closed``)."""
    tail = dumps(source) + b"]"
    return tail if closed is None else dumps(closed) + b"," + tail


CANDLE_OPEN_ENDINGS = tuple(candle_ending(s, closed=False) for s in CANDLE_SOURCES)


# --- codec -----------------------------------------------------------------------------------


def encode(record: Record) -> bytes:
    """Return the wire form of ``record``."""
    if type(record) is Candle:
        return _encode_candle(record)
    out: list[Any] = [record.KIND, record.VERSION]
    for name, kind in _SPECS[type(record)]:
        value = getattr(record, name)
        out.append(format(value, "f") if kind is Decimal else value)
    return dumps(out)


def decode(data: bytes | str, cls: type[R]) -> R:
    """Return the ``cls`` record in ``data``; raise SchemaError if it is not exactly that."""
    where = f"{cls.KIND} v{cls.VERSION}"
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"{where}: not JSON ({exc})") from exc
    if cls is Trade:
        trade = _decode_trade(raw)
        if trade is not None:
            return trade  # type: ignore[return-value]  # cls is Trade
    if not isinstance(raw, list) or len(raw) < 2:
        raise SchemaError(f"{where}: expected a [kind, version, ...] array")
    if raw[0] != cls.KIND:
        raise SchemaError(f"{where}: got a record of kind {raw[0]!r}")
    if raw[1] != cls.VERSION:
        raise SchemaError(f"{where}: unsupported version {raw[1]!r}")
    spec = _SPECS[cls]
    if len(raw) != len(spec) + 2:
        raise SchemaError(f"{where}: expected {len(spec)} fields, got {len(raw) - 2}")
    values = [_field(where, name, kind, v) for (name, kind), v in zip(spec, raw[2:], strict=True)]
    record = cls(*values)
    check = getattr(record, "_check", None)
    problem = check() if check else None
    if problem:
        raise SchemaError(f"{where}: {problem}")
    return record


# The candle actor encodes every candle it writes and decodes every trade it reads: these two
# spell out the generic loops for their layouts (about 2x faster; tests/unit/test_schemas.py
# checks they agree). A trade the fast path does not accept goes through the generic checks,
# which accept or explain it.


def _encode_candle(c: Candle) -> bytes:
    return dumps([
        "candle", 2, c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, format(c.open, "f"),
        format(c.high, "f"), format(c.low, "f"), format(c.close, "f"), format(c.volume, "f"),
        format(c.quote_volume, "f"), c.trades, format(c.taker_buy_volume, "f"),
        format(c.taker_buy_quote_volume, "f"), c.first_trade_id, c.last_trade_id, c.closed,
        c.source,
    ])  # fmt: skip


def _decode_trade(raw: Any) -> Trade | None:
    if type(raw) is not list or len(raw) != 12 or raw[0] != "trade" or raw[1] != 1:
        return None
    _, _, symbol, trade_id, first_id, last_id, price, qty, maker, trade_ms, event_ms, recv_ms = raw
    if not (
        type(trade_id) is int and type(first_id) is int and type(last_id) is int
        and type(trade_ms) is int and type(event_ms) is int and type(recv_ms) is int
        and type(maker) is bool and type(symbol) is str and type(price) is str
        and type(qty) is str and _SYMBOL.match(symbol) and _DECIMAL.match(price)
        and _DECIMAL.match(qty)
    ):  # fmt: skip
        return None
    trade = Trade(symbol, trade_id, first_id, last_id, Decimal(price), Decimal(qty), maker,
                  trade_ms, event_ms, recv_ms)  # fmt: skip
    return None if trade._check() else trade


def _valid(name: str, kind: type, value: Any) -> bool:
    if kind is int:
        return type(value) is int  # bool is a subclass of int: refuse it here
    if kind is Decimal:
        return isinstance(value, str) and _DECIMAL.match(value) is not None
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    if not isinstance(value, str) or value == "":
        return False
    return name != "symbol" or _SYMBOL.match(value) is not None


def _field(where: str, name: str, kind: type, value: Any) -> Any:
    if _valid(name, kind, value):
        return Decimal(value) if kind is Decimal else float(value) if kind is float else value
    want = {int: "an integer", Decimal: "a decimal string", bool: "a boolean",
            float: "a finite number", str: "a non-empty string"}[kind]  # fmt: skip
    if name == "symbol":
        want = "an uppercase symbol such as BTCUSDT"
    raise SchemaError(f"{where}: field {name!r} must be {want}, got {value!r:.60}")


def _spec(cls: type) -> tuple[tuple[str, type], ...]:
    hints = get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


_SPECS: dict[type, tuple[tuple[str, type], ...]] = {
    cls: _spec(cls) for cls in (Trade, Candle, Kline, BookTicker, MarkPrice, Gap, Signal)
}
