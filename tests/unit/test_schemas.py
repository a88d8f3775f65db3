"""Records: exact round trips, and a clear error for every kind of malformed input."""

from __future__ import annotations

import dataclasses
import tracemalloc
from decimal import Decimal

import orjson
import pytest

from core.errors import SchemaError
from core.schemas import BookTicker, Candle, Gap, Kline, Signal, Trade, decode, encode

D = Decimal
TRADE = Trade("CTKUSDT", 16599292, 23961322, 23961322, D("1.01100"), D("10"), False,
              1626992741421, 1626992741575, 1626992741580)  # fmt: skip
CANDLE = Candle("SUSHIUSDT", "1m", 1626992700000, 1626992759999, D("7.6080"), D("7.6180"),
                D("7.6070"), D("7.6170"), D("3005"), D("22875.8590"), 113, D("1900"),
                D("14464.6960"), 126902874, 126902986, True, "exchange")  # fmt: skip
KLINE = Kline(*dataclasses.astuple(CANDLE), 1626992760203, 1626992760210)
BOOK = BookTicker("SUSHIUSDT", 600859600576, D("7.6110"), D("2"), D("7.6120"), D("297"),
                  1626992741012, 1626992741017, 1626992741062)  # fmt: skip
GAP = Gap("BTCUSDT", 101, 180, 1626992700000, 1626992760000, "id_jump", 1626992761000)
SIGNAL = Signal("BTCUSDT", "5m", "rsi", 1626992700000, 71.25, "short", False, 1626993000100)


@pytest.mark.parametrize("record", [TRADE, CANDLE, KLINE, BOOK, GAP, SIGNAL], ids=lambda r: r.KIND)
def test_round_trip_is_exact(record: object) -> None:
    assert decode(encode(record), type(record)) == record  # type: ignore[arg-type]


def test_decimals_travel_as_the_exchange_wrote_them() -> None:
    wire = orjson.loads(encode(CANDLE))
    assert wire[:4] == ["candle", 2, "SUSHIUSDT", "1m"]
    assert wire[6] == "7.6080"  # trailing zero kept: exact, not float-rounded
    tiny = Trade("XUSDT", 1, 1, 1, D("0.00000010"), D("1E+3"), True, 1, 1, 1)
    assert orjson.loads(encode(tiny))[6:8] == ["0.00000010", "1000"]  # never exponent notation


def test_the_candle_fast_path_writes_every_field_in_declared_order() -> None:
    values = [format(v, "f") if isinstance(v, Decimal) else v for v in dataclasses.astuple(CANDLE)]
    assert orjson.loads(encode(CANDLE)) == ["candle", 2, *values]
    tiny = dataclasses.replace(CANDLE, volume=D("1E+3"), low=D("1E-7"), source="partial")
    assert decode(encode(tiny), Candle) == tiny


def wire(**changes: object) -> bytes:
    fields = orjson.loads(encode(TRADE))
    names = ["kind", "version", "symbol", "trade_id", "first_id", "last_id", "price", "quantity",
             "buyer_is_maker", "trade_time_ms", "event_time_ms", "recv_time_ms"]  # fmt: skip
    for name, value in changes.items():
        fields[names.index(name)] = value
    return orjson.dumps(fields)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "trade v1: not JSON"),
        (b'{"symbol": "BTCUSDT"}', "expected a [kind, version, ...] array"),
        (encode(CANDLE), "got a record of kind 'candle'"),
        (wire(version=2), "unsupported version 2"),
        (orjson.dumps(orjson.loads(encode(TRADE))[:-1]), "expected 10 fields, got 9"),
        (wire(price=1.011), "field 'price' must be a decimal string, got 1.011"),
        (wire(price="1,5"), "field 'price' must be a decimal string"),
        (wire(price="NaN"), "field 'price' must be a decimal string"),
        (wire(trade_id="16599292"), "field 'trade_id' must be an integer"),
        (wire(trade_id=True), "field 'trade_id' must be an integer"),
        (wire(buyer_is_maker=0), "field 'buyer_is_maker' must be a boolean"),
        (wire(symbol="btcusdt"), "field 'symbol' must be an uppercase symbol"),
        (wire(first_id=5, last_id=4), "first_id is greater than last_id"),
        (wire(quantity="0"), "price and quantity must be positive"),
    ],
)
def test_malformed_input_is_rejected_with_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("(", r"\(")):
        decode(data, Trade)


def test_a_kline_reports_its_candle() -> None:
    assert KLINE.candle() == CANDLE
    assert decode(encode(KLINE), Kline).event_time_ms == 1626992760203


def test_invariants_of_other_records_are_checked() -> None:
    bad_gap = orjson.loads(encode(GAP))
    bad_gap[7] = "cosmic_ray"
    with pytest.raises(SchemaError, match="reason must be one of"):
        decode(orjson.dumps(bad_gap), Gap)
    outage = Gap("BTCUSDT", 181, -1, 1626992760000, 1626992790000, "outage", 1626992790001)
    assert decode(encode(outage), Gap) == outage  # an outage's last missing id is unknown
    bad_outage = orjson.loads(encode(outage))
    bad_outage[4] = 200
    with pytest.raises(SchemaError, match="to_trade_id -1"):
        decode(orjson.dumps(bad_outage), Gap)
    bad_signal = orjson.loads(encode(SIGNAL))
    bad_signal[7] = "up"
    with pytest.raises(SchemaError, match="state must be one of"):
        decode(orjson.dumps(bad_signal), Signal)
    bad_candle = orjson.loads(encode(CANDLE))
    bad_candle[8] = "9.9999"  # low above the open
    with pytest.raises(SchemaError, match="outside"):
        decode(orjson.dumps(bad_candle), Candle)


@pytest.mark.parametrize("record", [TRADE, CANDLE, KLINE, BOOK, GAP, SIGNAL], ids=lambda r: r.KIND)
def test_a_held_record_costs_its_length_not_an_encoders_buffer(record: object) -> None:
    # The feeder's outbox and the web's late candles bound what they hold by len(record): that
    # bound is memory only if the bytes object is as big as its length (orjson's output keeps
    # a 4 KiB buffer each; issue 19 saw 800 MiB behind a 20 MB outbox).
    held = [encode(record) for _ in range(2_000)]  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        held = [encode(record) for _ in range(2_000)]  # type: ignore[arg-type]
        per_record = tracemalloc.get_traced_memory()[0] / len(held)
    finally:
        tracemalloc.stop()
    assert per_record < 2 * len(held[0]) + 100, (per_record, len(held[0]))


@pytest.mark.parametrize("record", [TRADE, CANDLE, KLINE, BOOK, GAP, SIGNAL], ids=lambda r: r.KIND)
def test_records_are_written_byte_for_byte_as_orjson_writes_them(record: object) -> None:
    weird = 'É"\\\n\t\u0001\u2028😀'  # escapes, control characters, non-ASCII, astral
    assert encode(record) == orjson.dumps(orjson.loads(encode(record)))  # type: ignore[arg-type]
    if dataclasses.is_dataclass(record) and hasattr(record, "symbol"):
        odd = dataclasses.replace(record, symbol=weird)  # type: ignore[type-var]
        assert encode(odd) == orjson.dumps(orjson.loads(encode(odd)))
