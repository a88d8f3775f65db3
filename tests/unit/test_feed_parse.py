"""The Binance frame parser on every frame of real recorded traffic, and on malformed frames."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import orjson
import pytest

from binance.parse import ControlReply, Ignored, parse_frame
from core.errors import FrameError
from core.schemas import BookTicker, Kline, MarkPrice, Trade
from tests.conftest import FIXTURES


def recorded_frames() -> list[tuple[int, str]]:
    lines = (FIXTURES / "ws-combined-2021-07-22.txt").read_text().splitlines()[1:]
    out = []
    for line in lines:
        recv, frame = line.split(": ", 1)
        out.append((int(float(recv) * 1000), frame))
    return out


def test_every_recorded_frame_parses_into_the_right_record() -> None:
    kinds: Counter[str] = Counter()
    for recv_ms, frame in recorded_frames():
        parsed = parse_frame(frame, recv_ms)
        assert parsed.unknown_fields == frozenset()
        event = parsed.event
        kinds[type(event).__name__ if not isinstance(event, Ignored) else event.event_type] += 1
        assert parsed.stream is not None
        if isinstance(event, Trade | Kline | BookTicker):
            assert parsed.stream.startswith(event.symbol.lower() + "@")
            assert event.recv_time_ms == recv_ms
    assert kinds == {"Trade": 91, "Kline": 67, "BookTicker": 613, "depthUpdate": 764}


def test_fields_are_converted_exactly() -> None:
    frames = {f: r for r, f in recorded_frames()}
    agg = next(f for f in frames if '"a":16599292' in f)
    trade = parse_frame(agg, 5).event
    assert trade == Trade("CTKUSDT", 16599292, 23961322, 23961322, Decimal("1.01100"),
                          Decimal("10"), False, 1626992741421, 1626992741575, 5)  # fmt: skip
    closed = [parse_frame(f, 0).event for f in frames if '"x":true' in f]
    sushi = next(k for k in closed if isinstance(k, Kline) and k.symbol == "SUSHIUSDT")
    assert (sushi.open_time_ms, sushi.close_time_ms, sushi.trades) == (
        1626992700000,
        1626992759999,
        113,
    )
    assert (sushi.first_trade_id, sushi.last_trade_id) == (126902874, 126902986)
    assert sushi.quote_volume == Decimal("22875.8590")
    assert sushi.closed
    assert sushi.event_time_ms == 1626992760203


def test_fields_binance_added_later_are_accepted_and_reported() -> None:
    frame = ('{"e":"aggTrade","E":1,"s":"BTCUSDT","a":5,"p":"1.0","q":"2","nq":"2","f":7,"l":8,'
             '"T":1,"m":true,"zz":1}')  # fmt: skip
    parsed = parse_frame(frame, 0)
    assert isinstance(parsed.event, Trade)
    assert parsed.stream is None  # a raw /ws frame
    assert parsed.unknown_fields == {"zz"}


def test_raw_trade_stream() -> None:
    frame = ('{"e":"trade","E":1679851564490,"T":1679851564486,"s":"BTCUSDT","t":3493102749,'
             '"p":"27785.00","q":"0.014","X":"MARKET","m":true}')  # fmt: skip
    trade = parse_frame(frame, 0).event
    assert isinstance(trade, Trade)
    assert trade.trade_id == trade.first_id == trade.last_id == 3493102749


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        ('{"result":null,"id":1}', ControlReply(1, None, None, None)),
        ('{"result":["btcusdt@aggTrade"],"id":3}',
         ControlReply(3, ["btcusdt@aggTrade"], None, None)),
        ('{"code":2,"msg":"Invalid request: too many parameters","id":4}',
         ControlReply(4, None, 2, "Invalid request: too many parameters")),
        ('{"error":{"code":0,"msg":"Unknown property"},"id":5}',
         ControlReply(5, None, 0, "Unknown property")),
    ],
)  # fmt: skip
def test_control_replies(frame: str, reply: ControlReply) -> None:
    assert parse_frame(frame, 0).event == reply


GOOD = orjson.loads('{"e":"aggTrade","E":1,"s":"BTCUSDT","a":5,"p":"1.0","q":"2","f":7,"l":8,'
                    '"T":1,"m":true}')  # fmt: skip


def bad(**changes: object) -> bytes:
    msg = dict(GOOD, **changes)
    return orjson.dumps({k: v for k, v in msg.items() if v is not None})


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "expected a JSON object, got list"),
        (b'{"stream":"x","data":[1]}', "non-object data"),
        (b'{"foo":1}', "without an event type"),
        (bad(a=None), "aggTrade: missing field 'a'"),
        (bad(p=1.0), "aggTrade: bad value (expected a decimal string"),
        (bad(p="abc"), "aggTrade: bad value"),
        (bad(p="Infinity"), "not a finite decimal"),
        (bad(a="5"), "expected an integer"),
        (bad(m="true"), "expected a boolean"),
        (b'{"e":"kline","E":1,"s":"X","k":"oops"}', "kline: bad value"),
    ],
)
def test_malformed_frames_raise_a_clear_frame_error(frame: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message.replace("(", r"\(")):
        parse_frame(frame, 0)


def test_event_types_we_do_not_ingest_are_ignored_not_errors() -> None:
    parsed = parse_frame('{"e":"24hrTicker","E":1,"s":"BTCUSDT","c":"1"}', 0)
    assert parsed.event == Ignored("24hrTicker")


def test_mark_price_the_docs_example_and_what_is_wrong_with_a_bad_one() -> None:
    # docs/binance.md "Stream payloads", Binance's own example (with ``ap``, added 2026-03-16)
    frame = ('{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000",'
             '"ap":"11794.15000000","i":"11784.62659091","P":"11784.25641265",'
             '"r":"0.00038167","T":1562306400000}')  # fmt: skip
    parsed = parse_frame(frame, 7)
    assert parsed.event == MarkPrice("BTCUSDT", Decimal("11794.15000000"),
                                     Decimal("11784.62659091"), Decimal("0.00038167"),
                                     1562306400000, 1562305380000, 7)  # fmt: skip
    assert parsed.unknown_fields == frozenset()
    with pytest.raises(FrameError, match="markPriceUpdate: missing field 'r'"):
        parse_frame('{"e":"markPriceUpdate","E":1,"s":"BTCUSDT","p":"1","i":"1","T":2}', 0)
    with pytest.raises(FrameError, match="markPriceUpdate: bad value"):
        parse_frame(frame.replace('"r":"0.00038167"', '"r":"NaN"'), 0)
