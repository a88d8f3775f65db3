"""Trade records that cross process boundaries: commands, events, orders. Their one owner.

Wire form: a JSON object (orjson) with ``"k"`` (kind) and ``"v"`` (version); decimals are
fixed-point strings, times int UTC ms. A command varies by action (a cancel has no price), so
objects with absent fields are clearer here than the market-data arrays of ``core.schemas``.
:func:`decode_command` checks every field and raises :class:`~core.errors.SchemaError` naming it.

Example, a LIMIT order the web tier queued::

    {"k":"cmd","v":1,"request_id":"r-17","address":"0xAb..","action":"place","symbol":"BTCUSDT",
     "client_order_id":"tp1QW5...","side":"BUY","order_type":"LIMIT","time_in_force":"GTC",
     "quantity":"0.010","price":"64000.0","reduce_only":false,"created_ms":1733500000000}

Order statuses are Binance's (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED,
EXPIRED_IN_MATCH, REJECTED) plus ours before the exchange has spoken: PENDING (stored, not yet
sent), SENDING (handed to the exchange, no answer yet) and UNKNOWN (the answer was lost: a
timeout, -1006, -1007, 408 or 5xx; resolved by looking the order up, never by resending).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from core.errors import SchemaError

ACTIONS = ("place", "cancel", "cancel_all", "close", "leverage", "margin_type", "link", "unlink")
SIDES = ("BUY", "SELL")
ORDER_TYPES = ("MARKET", "LIMIT")
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "GTX")
MARGIN_TYPES = ("ISOLATED", "CROSSED")
FINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"})
OURS = ("PENDING", "SENDING", "UNKNOWN")
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# Binance: ^[\.A-Z\:/a-z0-9_-]{1,36}$, unique among open orders only (docs/execution.md).
CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
CID_PREFIX = "tp"  # ours; an order whose id lacks it was placed outside the system
_DECIMAL = re.compile(r"^\d{1,20}(\.\d{1,20})?$")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_]{1,29}$")


def new_client_order_id() -> str:
    """Return a fresh client order id: never reused, since Binance only dedupes open orders."""
    return CID_PREFIX + secrets.token_urlsafe(24)[:30].replace("-", "_")  # 32 chars


def is_ours(client_order_id: str) -> bool:
    return client_order_id.startswith(CID_PREFIX) and len(client_order_id) == 32


@dataclass(frozen=True, slots=True)
class OrderCommand:
    """One trade command of a user, as the web tier queued it for execution."""

    request_id: str  # chosen by the client; one request id gives at most one order
    address: str  # EIP-55 owner (the JWT subject)
    action: str  # one of ACTIONS
    created_ms: int
    symbol: str | None = None
    client_order_id: str | None = None  # place/close: the id the order will carry; cancel: target
    side: str | None = None
    order_type: str | None = None
    time_in_force: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    reduce_only: bool = False
    leverage: int | None = None
    margin_type: str | None = None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """Something the owner's sockets should hear: a command's outcome, an order, the account."""

    address: str
    kind: str  # "result" (a command's outcome), "order", "fill", "account", "link"
    time_ms: int
    request_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # JSON for the browser, decimals as str


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def encode_command(cmd: OrderCommand) -> bytes:
    out: dict[str, Any] = {"k": "cmd", "v": 1}
    for f in fields(cmd):
        value = getattr(cmd, f.name)
        if value is None:
            continue
        out[f.name] = _dec(value) if isinstance(value, Decimal) else value
    return orjson.dumps(out)


def _want(where: str, name: str, what: str, value: Any) -> SchemaError:
    return SchemaError(f"{where}: field {name!r} must be {what}, got {value!r:.60}")


def decode_command(data: bytes | str) -> OrderCommand:
    """Return the command in ``data``; raise SchemaError if any field is wrong."""
    where = "cmd v1"
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("k") != "cmd" or raw.get("v") != 1:
        raise SchemaError(f"{where}: not a version-1 command object")
    known = {f.name for f in fields(OrderCommand)} | {"k", "v"}
    extra = set(raw) - known
    if extra:
        raise SchemaError(f"{where}: unknown fields {sorted(extra)}")
    kw: dict[str, Any] = {}
    for name, check, what in _COMMAND_FIELDS:
        if name not in raw:
            continue
        value = raw[name]
        if not check(value):
            raise _want(where, name, what, value)
        kw[name] = Decimal(value) if name in ("quantity", "price") else value
    for name in ("request_id", "address", "action", "created_ms"):
        if name not in kw:
            raise SchemaError(f"{where}: field {name!r} is missing")
    return OrderCommand(**kw)


def _str_in(choices: tuple[str, ...]) -> Any:
    return lambda v: isinstance(v, str) and v in choices


_COMMAND_FIELDS: tuple[tuple[str, Any, str], ...] = (
    ("request_id", lambda v: isinstance(v, str) and REQUEST_ID.match(v), "a request id"),
    ("address", lambda v: isinstance(v, str) and ADDRESS.match(v), "an 0x address"),
    ("action", _str_in(ACTIONS), f"one of {ACTIONS}"),
    ("created_ms", lambda v: type(v) is int and v >= 0, "a time in ms"),
    ("symbol", lambda v: isinstance(v, str) and _SYMBOL.match(v), "a symbol"),
    (
        "client_order_id",
        lambda v: isinstance(v, str) and CLIENT_ORDER_ID.match(v),
        "a client order id",
    ),
    ("side", _str_in(SIDES), f"one of {SIDES}"),
    ("order_type", _str_in(ORDER_TYPES), f"one of {ORDER_TYPES}"),
    ("time_in_force", _str_in(TIME_IN_FORCE), f"one of {TIME_IN_FORCE}"),
    ("quantity", lambda v: isinstance(v, str) and _DECIMAL.match(v), "a decimal string"),
    ("price", lambda v: isinstance(v, str) and _DECIMAL.match(v), "a decimal string"),
    ("reduce_only", lambda v: isinstance(v, bool), "a boolean"),
    ("leverage", lambda v: type(v) is int and 1 <= v <= 125, "an integer 1-125"),
    ("margin_type", _str_in(MARGIN_TYPES), f"one of {MARGIN_TYPES}"),
)


def encode_event(event: OrderEvent) -> bytes:
    # Not asdict(): it deep-copies ``data``, which is only read here.
    return orjson.dumps({"k": "evt", "v": 1, "address": event.address, "kind": event.kind,
                         "time_ms": event.time_ms, "request_id": event.request_id,
                         "data": event.data}, default=_default)  # fmt: skip


def decode_event(data: bytes | str) -> OrderEvent:
    """Return the event in ``data``; raise SchemaError if it is not one."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"evt v1: not JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("k") != "evt" or raw.get("v") != 1:
        raise SchemaError("evt v1: not a version-1 event object")
    address, kind, time_ms = raw.get("address"), raw.get("kind"), raw.get("time_ms")
    request_id, payload = raw.get("request_id"), raw.get("data")
    if not (isinstance(address, str) and ADDRESS.match(address)):
        raise SchemaError("evt v1: field 'address' must be an 0x address")
    if not isinstance(kind, str) or type(time_ms) is not int or not isinstance(payload, dict):
        raise SchemaError("evt v1: fields 'kind', 'time_ms' and 'data' are required")
    if request_id is not None and not isinstance(request_id, str):
        raise SchemaError("evt v1: field 'request_id' must be a string")
    return OrderEvent(address, kind, time_ms, request_id, payload)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@dataclass(slots=True)
class Order:
    """Our record of one order: what was asked, and what the exchange says happened.

    Quantities and status come from the exchange (its responses and user-stream events),
    never from the request; ``update_ms`` (the exchange's time of the latest update applied)
    keeps a late REST answer from undoing a newer stream event.
    """

    client_order_id: str
    symbol: str
    side: str
    order_type: str
    quantity: str
    status: str  # see the module docstring
    request_id: str = ""
    time_in_force: str = ""
    price: str = "0"
    reduce_only: bool = False
    order_id: int = 0
    executed_qty: str = "0"
    avg_price: str = "0"
    update_ms: int = 0
    created_ms: int = 0
    sent_ms: int = 0  # the request's timestamp: with recvWindow, the latest it can go live
    external: bool = False  # placed outside the system (found by reconciliation)
    error_code: int = 0
    error: str = ""

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # a dataclass: its fields in order, as asdict() would give

    @classmethod
    def from_json(cls, data: bytes | str) -> Order:
        raw = orjson.loads(data)
        return cls(**{k: v for k, v in raw.items() if k in _ORDER_NAMES})

    def view(self) -> dict[str, Any]:
        """Return the browser's shape of the order (every field is a scalar: nothing to copy)."""
        return {name: getattr(self, name) for name in _ORDER_FIELDS}


_ORDER_FIELDS = tuple(f.name for f in fields(Order))
_ORDER_NAMES = frozenset(_ORDER_FIELDS)


def parse_decimal(value: Any) -> Decimal | None:
    """Return ``value`` as a finite Decimal, or None (floats are refused: money is exact)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


@dataclass(frozen=True, slots=True)
class Instrument:
    """A symbol's trading filters from exchangeInfo (docs/binance.md, "Filters")."""

    symbol: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    multiplier_up: Decimal  # PERCENT_PRICE: BUY price <= mark * up
    multiplier_down: Decimal  # SELL price >= mark * down

    def to_dict(self) -> dict[str, str]:
        return {
            f.name: format(getattr(self, f.name), "f") if f.name != "symbol" else self.symbol
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, raw: dict[str, str]) -> Instrument:
        return cls(raw["symbol"], *(Decimal(raw[f.name]) for f in fields(cls)[1:]))

    @classmethod
    def from_exchange(cls, entry: dict[str, Any]) -> Instrument:
        """Return the filters of one exchangeInfo ``symbols[]`` entry (0 disables a bound)."""
        by_type = {f.get("filterType"): f for f in entry.get("filters", [])}

        def d(filter_type: str, key: str, default: str = "0") -> Decimal:
            return Decimal(str(by_type.get(filter_type, {}).get(key, default)))

        return cls(
            symbol=str(entry["symbol"]),
            tick_size=d("PRICE_FILTER", "tickSize"),
            min_price=d("PRICE_FILTER", "minPrice"),
            max_price=d("PRICE_FILTER", "maxPrice"),
            step_size=d("LOT_SIZE", "stepSize"),
            min_qty=d("LOT_SIZE", "minQty"),
            max_qty=d("LOT_SIZE", "maxQty"),
            market_step_size=d("MARKET_LOT_SIZE", "stepSize") or d("LOT_SIZE", "stepSize"),
            market_min_qty=d("MARKET_LOT_SIZE", "minQty") or d("LOT_SIZE", "minQty"),
            market_max_qty=d("MARKET_LOT_SIZE", "maxQty") or d("LOT_SIZE", "maxQty"),
            min_notional=d("MIN_NOTIONAL", "notional"),
            multiplier_up=d("PERCENT_PRICE", "multiplierUp"),
            multiplier_down=d("PERCENT_PRICE", "multiplierDown"),
        )


def encode_instruments(items: list[Instrument]) -> bytes:
    return orjson.dumps({i.symbol: i.to_dict() for i in items})


def decode_instruments(data: bytes | str) -> dict[str, Instrument]:
    """Return ``{symbol: Instrument}``; raise SchemaError if ``data`` is not that record."""
    try:
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        return {str(symbol): Instrument.from_dict(v) for symbol, v in raw.items()}
    except (orjson.JSONDecodeError, TypeError, KeyError, ArithmeticError, ValueError) as exc:
        raise SchemaError(f"instruments: not a {{symbol: filters}} object ({exc})") from None
