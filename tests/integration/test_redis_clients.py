"""The production client factory against a real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from core.errors import RedisSetupError
from core.keys import ENTRY_FIELD, Keys
from core.redis_clients import MAX_BLOCK_MS, async_client, gevent_client, sync_client
from core.schemas import Trade, decode, encode
from demo.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
TRADE = Trade("BTCUSDT", 7, 70, 72, Decimal("27785.00"), Decimal("0.014"), True, 1, 2, 3)


def test_stream_entry_round_trip_through_the_sync_client(redis_url: str, keys: Keys) -> None:
    r = sync_client(redis_url, client_name="test")
    stream = keys.trades(keys.shard_of("BTCUSDT"))
    entry_id = r.xadd(stream, {ENTRY_FIELD: encode(TRADE)}, maxlen=1000)
    [(read_id, fields)] = r.xrange(stream)
    assert read_id == entry_id
    assert decode(fields[ENTRY_FIELD], Trade) == TRADE


def test_blocking_read_at_the_longest_block_does_not_time_out(redis_url: str, keys: Keys) -> None:
    # redis-py 8 defaults to a 5 s socket timeout; ours must outlast any BLOCK we issue.
    r = sync_client(redis_url)
    assert r.xread({keys.trades(0): "$"}, block=MAX_BLOCK_MS) == []


def test_async_client_reads_what_the_sync_client_wrote(redis_url: str, keys: Keys) -> None:
    stream = keys.trades(0)
    sync_client(redis_url).xadd(stream, {ENTRY_FIELD: encode(TRADE)})

    async def read() -> list[Trade]:
        r = async_client(redis_url)
        try:
            entries = await r.xrange(stream)
            return [decode(f[ENTRY_FIELD], Trade) for _, f in entries]
        finally:
            await r.aclose()

    assert asyncio.run(read()) == [TRADE]


def test_gevent_client_refuses_an_unpatched_process(redis_url: str) -> None:
    with pytest.raises(RedisSetupError, match=r"monkey\.patch_all"):
        gevent_client(redis_url)


def test_gevent_client_serves_many_greenlets_on_a_small_pool(redis_url: str) -> None:
    # 200 greenlets share 8 connections: they wait for one instead of failing.
    code = f"""
from gevent import monkey; monkey.patch_all()
import gevent
from core.redis_clients import gevent_client
r = gevent_client({redis_url!r}, max_connections=8)
jobs = [gevent.spawn(r.incr, "gevent-test-counter") for _ in range(200)]
gevent.joinall(jobs, raise_error=True)
print(int(r.getdel("gevent-test-counter")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "200"


def test_client_survives_a_redis_restart(redis_control: RedisServer, keys: Keys) -> None:
    r = sync_client(redis_control.url)
    r.set(keys.feed_health(), "before")
    redis_control.restart()  # stop saves the data; the next command reconnects by itself
    assert r.get(keys.feed_health()) == b"before"


def test_commands_fail_clearly_while_redis_is_down_and_work_after(
    redis_control: RedisServer, keys: Keys
) -> None:
    import redis

    r = sync_client(redis_control.url)
    r.ping()
    redis_control.stop()
    with pytest.raises(redis.ConnectionError):  # after bounded retries (pytest-timeout: no hang)
        r.ping()
    redis_control.start()
    assert r.ping()
