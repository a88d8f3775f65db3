"""The execution store on a real Redis: its bounds hold under a flood, writes are idempotent."""

from __future__ import annotations

import asyncio

import redis

from core.keys import Keys
from core.redis_clients import async_client
from core.trading import Order, OrderEvent
from execution import store as store_module
from execution.store import Store

A = "0x" + "a" * 40


def test_bounds_hold_under_a_flood_and_fills_are_recorded_once(
    redis_url: str, namespace: str
) -> None:
    keys = Keys(namespace, 4)

    async def flood() -> None:
        r = async_client(redis_url)
        s = Store(r, keys)
        for i in range(1_500):
            fill = {"symbol": "BTCUSDT", "trade_id": i, "qty": "0.001", "time": i}
            assert await s.add_fill(A, fill)
            assert not await s.add_fill(A, fill)  # the same trade again: nothing new
        for i in range(600):
            order = Order(f"tp{i:030d}", "BTCUSDT", "BUY", "MARKET", "1", "FILLED")
            await s.save(A, order)
        for i in range(3_000):
            await s.emit(OrderEvent(A, "order", i, f"r{i}", {"i": i}), reply=True)
            await s.audit(A, f"r{i}", "place", "placed")
        await r.aclose()

    old = store_module.EVENTS_MAXLEN, store_module.AUDIT_MAXLEN
    store_module.EVENTS_MAXLEN, store_module.AUDIT_MAXLEN = 1_000, 1_000
    try:
        asyncio.run(flood())
    finally:
        store_module.EVENTS_MAXLEN, store_module.AUDIT_MAXLEN = old
    r = redis.Redis.from_url(redis_url)
    assert r.hlen(keys.order_fills(A)) == store_module.FILLS_KEPT
    assert r.zcard(keys.order_fills(A) + ":index") == store_module.FILLS_KEPT
    newest = r.zrevrange(keys.order_fills(A) + ":index", 0, 0)
    assert newest == [b"BTCUSDT:1499"]  # the oldest went first
    assert r.llen(keys.orders_done(A)) == store_module.DONE_KEPT
    assert r.hlen(keys.orders_live(A)) == 0
    assert r.xlen(keys.order_events()) < 1_200  # MAXLEN ~: trimmed by whole nodes
    assert r.xlen(keys.order_audit()) < 1_200
    assert r.llen(keys.order_reply("r2999", A)) == 1  # one reply per request, expiring
    assert 0 < r.ttl(keys.order_reply("r2999", A)) <= store_module.REPLY_TTL_S
