"""Forced listen-key expiry (the ``listenkey_expire`` fault) and its idempotence."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from simulator.trading.userstream import ListenKeys, UserStreamClosedError


def keys() -> ListenKeys:
    return ListenKeys(ttl_secs=3600, max_queue=10, clock_secs=lambda: 0.0, now_ms=lambda: 42)


def test_expiring_one_account_ends_its_streams_with_the_event() -> None:
    book = keys()
    mine, other = book.start("alice"), book.start("bob")
    stream = book.open(mine, None)
    untouched = book.open(other, None)
    assert stream is not None
    assert untouched is not None
    assert book.expire_now("alice") == 1
    assert book.expire_now("alice") == 0  # twice in a row: nothing more happens

    async def read() -> list[bytes]:
        events = [await stream.get()]
        with pytest.raises(UserStreamClosedError):
            await stream.get()
        return events

    events = asyncio.run(read())
    assert [orjson.loads(e) for e in events] == [
        {"e": "listenKeyExpired", "E": 42, "listenKey": mine}
    ]
    book.publish("alice", {"e": "ORDER_TRADE_UPDATE"})  # nothing reaches the ended stream
    assert stream.queue_size == 0
    assert book.keepalive("alice") is None  # PUT answers -1125
    assert book.open(mine, None) is None
    assert book.start("alice") != mine  # POST creates a new key
    assert untouched.closed_reason is None
    assert book.keepalive("bob") == other


def test_expiring_every_account() -> None:
    book = keys()
    book.start("alice")
    book.start("bob")
    assert book.expire_now() == 2
    assert book.expire_now() == 0
    assert book.keepalive("alice") is None
    assert book.keepalive("bob") is None
