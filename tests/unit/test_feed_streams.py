"""Stream routing and the spreading of streams over connections."""

from __future__ import annotations

import pytest

from binance.streams import (
    MAX_STREAMS_PER_CONNECTION,
    control_messages,
    plan_connections,
    route_of,
    split_stream,
    stream_name,
)


@pytest.mark.parametrize(
    ("stream", "route"),
    [
        ("btcusdt@aggTrade", "market"),
        ("btcusdt@kline_1m", "market"),
        ("btcusdt@markPrice@1s", "market"),
        ("btcusdt@bookTicker", "public"),
        ("btcusdt@trade", "public"),
        ("btcusdt@depth@100ms", "public"),
    ],
)
def test_each_stream_goes_to_binances_2026_route(stream: str, route: str) -> None:
    assert route_of(stream) == route


def test_names_round_trip() -> None:
    assert stream_name("BTCUSDT", "kline_1m") == "btcusdt@kline_1m"
    assert split_stream("btcusdt@kline_1m") == ("BTCUSDT", "kline_1m")
    assert split_stream("btcusdt_210924@aggTrade") == ("BTCUSDT_210924", "aggTrade")
    with pytest.raises(ValueError, match="no known route"):
        route_of("btcusdt@forceOrder")


def test_hundreds_of_symbols_fit_in_few_connections_within_the_limit() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(700)]
    plans = plan_connections(symbols, ["aggTrade", "kline_1m", "bookTicker"])
    market = [p for p in plans if p.route == "market"]
    public = [p for p in plans if p.route == "public"]
    assert len(market) == 2  # 1400 streams over 1024-stream connections
    assert len(public) == 1
    assert all(len(p.streams) <= MAX_STREAMS_PER_CONNECTION for p in plans)
    every = [s for p in plans for s in p.streams]
    assert len(every) == len(set(every)) == 2100
    # A symbol's aggTrade and kline stay on one connection.
    owner = {s.split("@")[0]: i for i, p in enumerate(market) for s in p.streams}
    for i, p in enumerate(market):
        assert all(owner[s.split("@")[0]] == i for s in p.streams)


def test_subscriptions_are_batched_into_few_control_messages() -> None:
    streams = [f"s{i}usdt@aggTrade" for i in range(450)]
    msgs = control_messages("SUBSCRIBE", streams, first_id=10)
    assert [m["id"] for m in msgs] == [10, 11, 12]
    assert [len(m["params"]) for m in msgs] == [200, 200, 50]
    assert [s for m in msgs for s in m["params"]] == streams
