"""The feeder's fast path (binance/frames.py) against the diagnosing parser (binance/parse.py):
what the fast path accepts it encodes byte for byte as the record parse_frame makes; what it does
not take, parse_frame still accepts, ignores or explains."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance.frames import FastPathMiss, decode_frame
from binance.parse import KNOWN_FIELDS, ControlReply, Ignored, parse_feed_frame, parse_frame
from core.errors import FrameError
from core.schemas import BookTicker, Kline, MarkPrice, Trade, encode
from tests.unit.test_feed_parse import recorded_frames

RECORDS = (Trade, Kline, BookTicker, MarkPrice)


def slow_wire(frame: bytes | str, recv_ms: int) -> bytes | None:
    event = parse_frame(frame, recv_ms).event
    return encode(event) if isinstance(event, RECORDS) else None


def test_every_recorded_frame_takes_the_fast_path_and_encodes_as_the_record() -> None:
    taken = 0
    for recv_ms, frame in recorded_frames():
        if '"depthUpdate"' in frame:  # not a type the feeder ingests
            with pytest.raises(FastPathMiss):
                decode_frame(frame, recv_ms)
            continue
        msg = decode_frame(frame, recv_ms)
        assert msg.data.wire() == slow_wire(frame, recv_ms)
        assert msg.stream == parse_frame(frame, recv_ms).stream
        taken += 1
    assert taken == 91 + 67 + 613


MARK = ('{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,'
        '"s":"BTCUSDT","p":"11794.15000000","ap":"11794.15000000","i":"11784.62659091",'
        '"P":"11784.25641265","r":"0.00038167","T":1562306400000}}')  # fmt: skip
RAW = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1679851564490,"T":1679851564486,'
       '"s":"BTCUSDT","t":3493102749,"p":"27785.00","q":"0.014","X":"MARKET",'
       '"m":true}}')  # fmt: skip


@pytest.mark.parametrize("frame", [MARK, RAW])
def test_mark_price_and_raw_trades_take_the_fast_path(frame: str) -> None:
    assert decode_frame(frame, 9).data.wire() == slow_wire(frame, 9)


AGG = ('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":5,'
       '"p":"1.0","q":"2","f":7,"l":8,"T":1,"m":true}}')  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "unknown"),
    [
        (AGG.replace('"m":true', '"m":true,"zz":1'), {"zz"}),  # a field Binance added
        (AGG.replace('"p":"1.0"', '"p":"1e2"'), set()),  # a decimal in another spelling
        (AGG.replace('"p":"1.0"', '"p":"01.0"'), set()),  # a leading zero
        (AGG.replace('{"stream":"btcusdt@aggTrade","data":', "")[:-1], set()),  # a raw /ws frame
    ],
)
def test_what_the_fast_path_leaves_is_parsed_as_before(frame: str, unknown: set[str]) -> None:
    with pytest.raises(FastPathMiss):
        decode_frame(frame, 3)
    parsed = parse_feed_frame(frame, 3)
    assert parsed.unknown_fields == unknown
    assert parsed.event.wire() == slow_wire(frame, 3)  # type: ignore[union-attr]


def test_replies_other_events_and_malformed_frames_go_to_the_diagnosing_parser() -> None:
    assert parse_feed_frame('{"result":null,"id":1}', 0).event == ControlReply(1, None, None, None)
    assert parse_feed_frame('{"e":"24hrTicker","E":1}', 0).event == Ignored("24hrTicker")
    with pytest.raises(FrameError, match="not a finite decimal"):
        parse_feed_frame(AGG.replace('"p":"1.0"', '"p":"NaN"'), 0)
    with pytest.raises(FrameError, match="expected an integer"):
        parse_feed_frame(AGG.replace('"a":5', '"a":5.0'), 0)
    with pytest.raises(FrameError, match="bad value"):  # beyond what orjson reads as an int
        parse_feed_frame(AGG.replace('"a":5', f'"a":{2**64}'), 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["1", "0.5", "-0", "NaN", "1e5", "01", " 1", "1_0", "", "1.", ".5"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(KNOWN_FIELDS)), st.data())
def test_random_events_the_fast_path_accepts_parse_the_same_slowly(kind: str, data: Any) -> None:
    fields = sorted(KNOWN_FIELDS[kind] - {"e"})
    msg = {"e": kind, **{f: data.draw(json_values, label=f) for f in fields
                         if data.draw(st.booleans(), label=f"has {f}")}}  # fmt: skip
    if kind == "kline":
        msg["k"] = data.draw(
            st.dictionaries(st.sampled_from(list("tTsifLochlvnxqVQB")), json_values)
        )
    frame = orjson.dumps({"stream": "x@y", "data": msg})
    with contextlib.suppress(FastPathMiss):
        fast = decode_frame(frame, 4).data.wire()
        assert fast == slow_wire(frame, 4)
    with contextlib.suppress(FrameError):
        parse_feed_frame(frame, 4)


KLINE = orjson.dumps({"stream": "btcusdt@kline_1m", "data": {
    "e": "kline", "E": 2, "s": "BTCUSDT", "k": {
        "t": 60000, "T": 119999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 3, "o": "10", "c": "11",
        "h": "12", "l": "9", "v": "1", "n": 3, "x": False, "q": "10.5", "V": "0.5", "Q": "5",
        "B": "0"}}}).decode()  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (AGG.replace('"q":"2"', '"q":"0.000"'), "positive"),
        (AGG.replace('"p":"1.0"', '"p":"-1.0"'), "positive"),
        (AGG.replace('"f":7,', '"f":9,'), "first_id"),
        (KLINE.replace('"l":"9"', '"l":"10.5"'), "outside"),
        (KLINE.replace('"T":119999', '"T":1'), "before"),
        (KLINE.replace('"i":"1m"', '"i":"7m"'), "timeframe"),
    ],
)
def test_a_frame_whose_record_would_be_refused_is_not_written_by_the_fast_path(
    frame: str, reason: str
) -> None:
    """The fast path checked syntax only: a zero quantity went to the stream, and the candle
    builder refused the record there (bench/feeder_rate.py's frames found it). The fast path now
    leaves such a frame to the diagnosing parser, which refuses it with its reason (the feeder
    counts it malformed); the unchanged frame still takes the fast path."""
    base = AGG if '"aggTrade"' in frame else KLINE
    assert decode_frame(base, 0).data.wire() == slow_wire(base, 0)
    with pytest.raises(FastPathMiss):
        decode_frame(frame, 0)
    with pytest.raises(FrameError, match=reason):
        parse_feed_frame(frame, 0)
