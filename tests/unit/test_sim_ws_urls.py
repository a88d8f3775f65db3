"""Stream names, URL forms and routing of the simulator's websocket server."""

from __future__ import annotations

import pytest

from simulator.ws_server import delivers, parse_path, stream_route, ws_text_frame


@pytest.mark.parametrize(
    ("stream", "route"),
    [
        ("btcusdt@bookTicker", "public"),
        ("btcusdt@trade", "public"),
        ("btcusdt@depth@100ms", "public"),
        ("btcusdt@depth20", "public"),
        ("!bookTicker", "public"),
        ("btcusdt@aggTrade", "market"),
        ("btcusdt@kline_1M", "market"),
        ("btcusdt@kline_3d", "market"),
        ("btcusdt@markPrice@1s", "market"),
        ("!markPrice@arr", "market"),
        ("BTCUSDT@aggTrade", None),  # symbols are lowercase in stream names
        ("btcusdt@kline_2m", None),
        ("btcusdt@aggtrade", None),
        ("btcusdt", None),
    ],
)
def test_stream_routes(stream: str, route: str | None) -> None:
    assert stream_route(stream) == route


def test_unrouted_urls_deliver_public_streams_only() -> None:
    assert delivers(None, "btcusdt@bookTicker")
    assert not delivers(None, "btcusdt@aggTrade")
    assert delivers("market", "btcusdt@kline_1m")
    assert not delivers("public", "btcusdt@kline_1m")
    assert not delivers("private", "btcusdt@aggTrade")


def test_url_forms() -> None:
    p = parse_path("/market/ws/btcusdt@aggTrade/ethusdt@kline_1m")
    assert p is not None
    assert (p.route, p.combined, p.streams) == (
        "market",
        False,
        ["btcusdt@aggTrade", "ethusdt@kline_1m"],
    )
    p = parse_path("/public/stream?streams=btcusdt@bookTicker/btcusdt@trade")
    assert p is not None
    assert (p.route, p.combined, p.streams) == (
        "public",
        True,
        ["btcusdt@bookTicker", "btcusdt@trade"],
    )
    p = parse_path("/ws")
    assert p is not None
    assert (p.route, p.streams) == (None, [])
    p = parse_path("/private/ws/abc123")
    assert p is not None
    assert p.listen_keys == [("abc123", None)]
    p = parse_path("/private/stream?listenKey=k1&events=ORDER_TRADE_UPDATE&listenKey=k2")
    assert p is not None
    assert p.combined
    assert p.listen_keys == [("k1", frozenset({"ORDER_TRADE_UPDATE"})), ("k2", None)]


@pytest.mark.parametrize(
    "path",
    [
        "/ws?btcusdt@depth",  # documented as unsupported
        "/foo/ws/btcusdt@aggTrade",  # extra segment before /ws
        "/market/ws/btcusdt@nonsense",
        "/stream?streams=btcusdt@aggTrade&x=1",
        "/private/ws",  # no listenKey
        "/",
    ],
)
def test_invalid_urls(path: str) -> None:
    assert parse_path(path) is None


def test_frames_are_unmasked_text_frames_with_the_right_length_encoding() -> None:
    assert ws_text_frame(b"hi") == b"\x81\x02hi"
    assert ws_text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_text_frame(b"x" * 70_000)[:10] == b"\x81\x7f" + (70_000).to_bytes(8, "big")
