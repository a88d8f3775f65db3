"""Every parser of outside input, fuzzed (Hypothesis): a bad input gets its clear error type, never
another exception, and what a parser accepts is what a later reader decodes again.

Outside input here: exchange frames (binance/parse.py), stream records (core/schemas.py), trade
commands and order events (core/trading.py), SIWE messages and signatures (web/siwe.py), trade
command bodies (web/trade_checks.py), signal TOML files (core/config.py). The web tier's REST and
Socket.IO payloads are fuzzed against a served app in tests/integration/test_fuzz_web.py.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance.parse import KNOWN_FIELDS, parse_frame
from core.config import Settings
from core.errors import ConfigError, FrameError, SchemaError
from core.schemas import BookTicker, Candle, Gap, Kline, MarkPrice, Signal, Trade, decode, encode
from core.trading import (
    Instrument,
    Order,
    decode_command,
    decode_event,
    decode_instruments,
    encode_command,
    encode_event,
)
from web import siwe
from web.trade_checks import Refusal, place


def attempt(fn: Callable[[], Any], *errors: type[Exception]) -> tuple[Any, Exception | None]:
    """Run ``fn``: (its value, None), or (None, the error) for one of ``errors``; anything else
    escapes and fails the test."""
    try:
        return fn(), None
    except errors as exc:
        return None, exc


CODES = get_args(siwe.SiweErrorCode)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-like values, nested, with the shapes an attacker reaches for: odd numbers, unicode, deep.
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    | st.sampled_from(["NaN", "Infinity", "-0", "1e999", "0x10", " 1 ", "1_000", "", "\u0000"])
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-(10**9),
                       max_value=10**9)  # fmt: skip
positive = st.decimals(min_value=Decimal("0.00000001"), max_value=10**9, places=8)
symbols = st.from_regex(r"[A-Z0-9][A-Z0-9_]{1,29}", fullmatch=True)
ints = st.integers(min_value=0, max_value=2**53)


# --- exchange frames ------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_frame_parses_or_is_a_frame_error(frame: bytes | str) -> None:
    with contextlib.suppress(FrameError):
        parse_frame(frame, 0)


@FAST
@given(st.sampled_from(sorted(KNOWN_FIELDS)), st.data())
def test_an_event_with_random_field_values_parses_or_is_a_frame_error(kind: str, data: Any) -> None:
    fields = sorted(KNOWN_FIELDS[kind] - {"e"})
    msg = {"e": kind, **{f: data.draw(json_values, label=f) for f in fields
                         if data.draw(st.booleans(), label=f"has {f}")}}  # fmt: skip
    if kind == "kline":
        msg["k"] = data.draw(
            st.dictionaries(st.sampled_from(list("tTsifLochlvnxqVQB")), json_values)
        )
    stream = data.draw(st.none() | st.text(max_size=20))
    frame = orjson.dumps({"stream": stream, "data": msg} if stream is not None else msg)
    try:
        parsed = parse_frame(frame, 0)
    except FrameError:
        return
    event = parsed.event
    if isinstance(event, Trade | Kline | BookTicker | MarkPrice):
        # Accepted: every decimal is finite, and the record round-trips through its stream form.
        assert decode(encode(event), type(event)) == event


# --- stream records ---------------------------------------------------------------------------

RECORDS = (Trade, Candle, Kline, BookTicker, MarkPrice, Gap, Signal)


@FAST
@given(st.sampled_from(RECORDS), st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_decode_to_a_record_or_a_schema_error(cls: type, data: bytes | str) -> None:
    with contextlib.suppress(SchemaError):
        decode(data, cls)


@FAST
@given(st.sampled_from(RECORDS), st.data())
def test_a_wire_list_of_random_values_decodes_or_is_a_schema_error(cls: type, data: Any) -> None:
    items = data.draw(st.lists(json_values, max_size=20))
    wire = [cls.KIND, cls.VERSION, *items] if data.draw(st.booleans()) else items
    try:
        record = decode(orjson.dumps(wire), cls)
    except SchemaError:
        return
    assert decode(encode(record), cls) == record  # what is accepted is written back the same


@FAST
@given(symbols, ints, ints, st.integers(0, 1000), positive, positive, st.booleans(), ints, ints)
def test_trades_round_trip_exactly(sym: str, tid: int, first: int, more: int, price: Decimal,
                                   qty: Decimal, maker: bool, t: int, e: int) -> None:  # fmt: skip
    trade = Trade(sym, tid, first, first + more, price, qty, maker, t, e, e)
    assert decode(encode(trade), Trade) == trade


# --- trade commands and order events ------------------------------------------------------------


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200) | json_values.map(orjson.dumps))
def test_commands_events_and_instruments_decode_or_are_schema_errors(data: bytes | str) -> None:
    for reader in (decode_command, decode_event, decode_instruments):
        with contextlib.suppress(SchemaError):
            reader(data)


@FAST
@given(st.dictionaries(st.sampled_from(["k", "v", "request_id", "address", "action", "created_ms",
                                        "symbol", "quantity", "price", "side", "kind", "time_ms",
                                        "data", "leverage", "reduce_only"]),
                       json_values, max_size=12))  # fmt: skip
def test_a_command_or_event_accepted_is_encoded_back_the_same(raw: dict[str, Any]) -> None:
    for k, v in (("cmd", decode_command), ("evt", decode_event)):
        try:
            value = v(orjson.dumps({**raw, "k": k, "v": 1}))
        except SchemaError:
            continue
        again = (encode_command if k == "cmd" else encode_event)(value)  # type: ignore[arg-type]
        assert v(again) == value


@FAST
@given(json_values)
def test_an_order_record_that_is_not_one_is_refused_plainly(raw: Any) -> None:
    # The stores only read what the execution process wrote (Order.to_json); anything else is
    # one of these plain errors, never a half-built order.
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        Order.from_json(orjson.dumps(raw))


# --- trade command bodies ---------------------------------------------------------------------

BTC = Instrument("BTCUSDT", Decimal("0.10"), Decimal("556.80"), Decimal("4529764"),
                 Decimal("0.001"), Decimal("0.001"), Decimal("1000"), Decimal("0.001"),
                 Decimal("0.001"), Decimal("120"), Decimal("100"), Decimal("1.0500"),
                 Decimal("0.9500"))  # fmt: skip
place_bodies = st.fixed_dictionaries(
    {},
    optional={
        "side": st.sampled_from(["BUY", "SELL", "buy", ""]) | json_values,
        "type": st.sampled_from(["LIMIT", "MARKET", "STOP"]) | json_values,
        "quantity": positive.map(str) | json_values,
        "price": positive.map(lambda d: str(d.quantize(Decimal("0.1")))) | json_values,
        "time_in_force": st.sampled_from(["GTC", "IOC", "FOK", "GTX", "GTD"]) | json_values,
        "reduce_only": st.booleans() | json_values,
    },
)


@FAST
@given(place_bodies, st.none() | positive)
def test_a_place_body_is_an_order_within_the_filters_or_a_named_refusal(
    body: dict[str, Any], ref: Decimal | None
) -> None:
    order, refusal = attempt(lambda: place(body, BTC, ref), Refusal)
    if isinstance(refusal, Refusal):
        assert refusal.code
        assert refusal.message
        assert refusal.status in (400, 404, 409)
        return
    assert order.quantity > 0
    assert (order.quantity - BTC.min_qty) % BTC.step_size == 0
    if order.price is not None:
        assert (order.price - BTC.min_price) % BTC.tick_size == 0
        assert BTC.min_price <= order.price <= BTC.max_price
        if not order.reduce_only:
            assert order.price * order.quantity >= BTC.min_notional


# --- SIWE ---------------------------------------------------------------------------------------

siwe_lines = st.lists(st.text(alphabet=string.printable, max_size=60), max_size=16).map("\n".join)


@FAST
@given(siwe_lines | st.text(max_size=400))
def test_any_text_is_a_siwe_message_or_a_siwe_error(text: str) -> None:
    _, error = attempt(lambda: siwe.parse_message(text), siwe.SiweError)
    assert error is None or (isinstance(error, siwe.SiweError) and error.code in CODES)


@FAST
@given(
    st.text(max_size=200), st.text(max_size=140) | st.from_regex(r"0x[0-9a-f]{130}", fullmatch=True)
)
def test_any_signature_verifies_or_is_a_siwe_error(text: str, signature: str) -> None:
    _, error = attempt(
        lambda: siwe.verify(text, signature, domain="example.com", uri=None, chain_id=1, now_ms=0),
        siwe.SiweError,
    )
    assert error is None or (isinstance(error, siwe.SiweError) and error.code in CODES)


@FAST
@given(
    st.from_regex(r"[a-z]{1,10}(\.[a-z]{2,5})?(:[0-9]{2,5})?", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9]{8,30}", fullmatch=True),
    st.integers(min_value=1, max_value=2**53),
    st.none() | st.text(alphabet=string.ascii_letters + " .,", max_size=40),
)
def test_a_formatted_message_parses_back_to_its_fields(domain: str, nonce: str, chain: int,
                                                        statement: str | None) -> None:  # fmt: skip
    text = siwe.format_message(domain=domain, address="0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
                               uri=f"https://{domain}/",
                               chain_id=chain, nonce=nonce, issued_at="2026-12-06T12:00:00Z",
                               statement=statement or None)  # fmt: skip
    msg = siwe.parse_message(text)
    assert (msg.domain, msg.nonce, msg.chain_id) == (domain, nonce, chain)


# --- signal TOML files --------------------------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300) | st.lists(st.sampled_from([
    "[[signal]]", 'name = "a"', 'formula = "rsi"', "params = { period = 5 }", 'timeframes = ["1m"]',
    'symbols = ["BTCUSDT"]', "params = { period = -1 }", 'formula = "nope"', "name = 1",
    "timeframes = 7", "[signal]", 'extra = "x"']), max_size=10).map("\n".join))  # fmt: skip
def test_a_signals_file_loads_or_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "signals.toml"
    path.write_text(text, encoding="utf-8")
    _, error = attempt(
        lambda: Settings.from_env({"TP_DEMO": "1", "TP_SIGNALS_FILE": str(path)}), ConfigError
    )
    assert error is None or "TP_SIGNALS_FILE" in str(error)
