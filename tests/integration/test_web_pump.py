"""The fan-out pump behind its streams (web/fanout.py): lag of the most-behind stream, skipping
ahead on one-value streams, against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import redis

from core.clock import now_ms
from core.config import Settings
from core.keys import ENTRY_FIELD, Keys
from core.redis_clients import read_streams
from core.schemas import BookTicker, Trade, encode
from web.fanout import XREAD_COUNT, Pump
from web.rooms import Client, Registry
from web.sessions import Sessions


def make_pump(redis_url: str, settings: Settings) -> Pump:
    client = redis.Redis.from_url(redis_url)
    return Pump(client, settings, Registry(max_subscriptions=10, backlog=4, slow_ms=3000),
                Sessions(client, Keys.of(settings), refresh_ttl_s=60), queued=lambda sid: 0,
                send=lambda c, b: True, notify=lambda c, e, r: None)  # fmt: skip


def test_a_book_stream_far_behind_is_reported_and_skipped_to_its_last_tick(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(TP_WEB_TICK_MS="150")
    pump = make_pump(redis_url, settings)
    client, keys = pump.market, pump.keys
    pump.start_positions()  # empty streams: from the start
    book, updates = keys.book(0), keys.candle_updates(0)
    old = now_ms() - 5_000  # 500 book tickers written 5 s ago, 1 ms apart; a fresh build
    for i in range(500):
        t = BookTicker("BTCUSDT", i, Decimal(1), Decimal(1), Decimal(2), Decimal(1), old + i,
                       old + i, old + i)  # fmt: skip
        client.xadd(book, {ENTRY_FIELD: encode(t)}, id=f"{old + i}-0")
    client.xadd(updates, {ENTRY_FIELD: b"[]"})

    pump._apply(read_streams(client, pump.ids, count=XREAD_COUNT))
    c = pump.counters
    assert c.entries == XREAD_COUNT + 1
    # The fresh build does not hide the book stream's 5 s.
    assert c.lag_ms >= 4_500
    assert c.lag_ms_max == c.lag_ms
    assert c.full_reads == 1
    # The book read moves on to the newest tick's worth: 150 ms before its newest entry.
    assert pump.ids[book.encode()] == b"%d-0" % (old + 499 - 150)
    assert (c.conflated, c.conflated_ms) == (1, 499 - 150 - (XREAD_COUNT - 1))

    pump._apply(read_streams(client, pump.ids, count=XREAD_COUNT))
    assert c.entries == XREAD_COUNT + 1 + 150  # the last 150 ms, read in full: no more skipping
    assert c.full_reads == 1
    assert c.conflated == 1
    assert pump.ids[book.encode()] == f"{old + 499}-0".encode()


def test_a_tape_far_behind_shows_the_newest_trades(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(TP_WEB_TICK_MS="100")
    pump = make_pump(redis_url, settings)
    client, keys, reg = pump.market, pump.keys, pump.registry
    pump.start_positions()
    reg.connect(Client("sid", "eio"))
    assert reg.hold("sid", "t:ETHUSDT") is not None
    pump._follow_trades()  # a tape room: its shard's trades are read (from the start: empty)
    trades = keys.trades(keys.shard_of("ETHUSDT"))
    old = now_ms() - 10_000
    for i in range(1_000):  # 1,000 trades 10 s ago, 1 ms apart
        t = Trade("ETHUSDT", i, i, i, Decimal(3), Decimal(1), False, old + i, old + i, old + i)
        client.xadd(trades, {ENTRY_FIELD: encode(t)}, id=f"{old + i}-0")
    while resp := read_streams(client, pump.ids, count=XREAD_COUNT):
        pump._apply(resp)
    c = pump.counters
    assert c.conflated == 1
    assert c.entries == XREAD_COUNT + 100  # the first read, then the newest 100 ms
    assert [v["id"] for v in reg.rooms["t:ETHUSDT"].snapshot()] == list(range(970, 1_000))
