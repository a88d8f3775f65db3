"""Payload shapes and the Publisher's cadences, on a virtual clock with a recording sink."""

from __future__ import annotations

import itertools

import orjson

from simulator.instruments import load_instruments
from simulator.ledger import AggTrade, Bar
from simulator.model import MarketModel, VirtualClock
from simulator.payloads import (
    Publisher,
    agg_trade_payload,
    book_ticker_payload,
    kline_payload,
    kline_row,
    mark_price_json,
)

START = 1_699_999_980_000  # a whole minute


class RecordingSink:
    def __init__(self, streams: set[str]) -> None:
        self.streams = streams
        self.frames: list[tuple[str, dict]] = []

    def has(self, stream: str) -> bool:
        return stream in self.streams

    def publish(self, stream: str, payload: bytes) -> None:
        self.frames.append((stream, orjson.loads(payload)))


def test_payloads_carry_every_field_in_the_real_wire_order() -> None:
    sushi = next(i for i in load_instruments() if i.symbol == "SUSHIUSDT")
    agg = AggTrade(a=1, p=76080, q=10, f=5, l=6, T=START, m=False)
    assert list(orjson.loads(agg_trade_payload(sushi, agg, START + 5))) == [
        "e", "E", "a", "s", "p", "q", "nq", "f", "l", "T", "m"
    ]  # fmt: skip
    book = orjson.loads(book_ticker_payload(sushi, 9, 76110, 2, 76120, 297, START, START + 5))
    assert list(book) == ["e", "u", "s", "b", "B", "a", "A", "T", "E"]
    assert (book["b"], book["B"], book["a"], book["A"]) == ("7.6110", "2", "7.6120", "297")
    bar = Bar(START, 76080, 76180, 76070, 76170, 3005, 228758590, 113, 1900, 144646960, 1, 113)
    k = orjson.loads(kline_payload(sushi, "1m", bar, True, START + 60_203))["k"]
    assert k == {
        "t": START, "T": START + 59_999, "s": "SUSHIUSDT", "i": "1m", "f": 1, "L": 113,
        "o": "7.6080", "c": "7.6170", "h": "7.6180", "l": "7.6070", "v": "3005", "n": 113,
        "x": True, "q": "22875.8590", "V": "1900", "Q": "14464.6960", "B": "0",
    }  # fmt: skip
    assert kline_row(sushi, "1m", bar) == [
        START, "7.6080", "7.6180", "7.6070", "7.6170", "3005", START + 59_999, "22875.8590", 113,
        "1900", "14464.6960", "0",
    ]  # fmt: skip
    mark = orjson.loads(mark_price_json(sushi, 761_150_000, 761_100_000, 10_000, START))
    assert list(mark) == ["e", "E", "s", "p", "ap", "i", "P", "r", "T"]
    assert (mark["p"], mark["ap"], mark["r"]) == ("7.61150000", "7.61100000", "0.00010000")
    assert mark["T"] % (8 * 3_600_000) == 0
    assert mark["T"] > START


def test_kline_updates_every_250ms_close_after_the_lag_then_the_new_bar() -> None:
    clock = VirtualClock(START - 30_000)
    model = MarketModel(load_instruments(count=3), clock, seed=5, rate=300.0)
    sink = RecordingSink({"btcusdt@kline_1m", "btcusdt@kline_5m", "btcusdt@aggTrade"})
    pub = Publisher(model, sink, seed=5, kline_lag_ms=(300, 900))
    for _ in range(9_000):  # 90 virtual seconds in 10 ms ticks
        now = clock.advance(10)
        pub.on_step(model.step(now), now)
        pub.on_tick(now)
    klines = [d for s, d in sink.frames if s == "btcusdt@kline_1m"]
    updates = [d for d in klines if not d["k"]["x"]]
    assert all(b["E"] - a["E"] >= 250 for a, b in itertools.pairwise(updates))
    closes = [d for d in klines if d["k"]["x"]]
    assert len(closes) == 1  # the bar [START-60s, START) closed once
    close = closes[0]
    lag = close["E"] - (close["k"]["T"] + 1)
    assert 300 <= lag <= 910
    first_new = next(i for i, d in enumerate(klines) if d["k"]["t"] == START)
    assert klines.index(close) < first_new  # the next bar appears only after the x:true
    ledger_bar = model.ledgers[0].klines("1m")[0]
    assert close["k"]["n"] == ledger_bar.n
    assert close["k"]["L"] == ledger_bar.L
    trades = [d for s, d in sink.frames if s == "btcusdt@aggTrade" and d["T"] < START]
    assert close["k"]["n"] == sum(t["l"] - t["f"] + 1 for t in trades)


def test_nothing_is_built_for_streams_without_subscribers() -> None:
    clock = VirtualClock(START)
    model = MarketModel(load_instruments(count=3), clock, seed=5, rate=300.0)
    sink = RecordingSink(set())
    pub = Publisher(model, sink)
    for _ in range(300):
        now = clock.advance(10)
        pub.on_step(model.step(now), now)
        pub.on_tick(now)
    assert sink.frames == []
