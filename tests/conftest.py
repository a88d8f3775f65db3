"""Shared fixtures: a real redis-server for the whole session, a clean namespace per test.

Without REDIS_URL the session starts its own redis-server on a free port with its data in a
temporary folder; each test starts from an empty database and may stop, kill and restart the
server (``redis_control``). With REDIS_URL set, that server is used instead: each test then works
in a namespace of its own and deletes only the keys of that namespace afterwards, and tests that
need to stop the server are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from core.config import Settings
from core.keys import Keys
from demo.redis_server import RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
EXTERNAL_URL = os.environ.get("REDIS_URL")


def exchange_info() -> dict[str, Any]:
    """Return the recorded exchangeInfo response (line 1: `<url> -> <time>: <json>`)."""
    first_line = (FIXTURES / "exchange-info-2021-07-22.txt").read_text().splitlines()[0]
    return orjson.loads(first_line.split(": ", 1)[1])  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    if EXTERNAL_URL:
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop(save=False)


@pytest.fixture
def redis_url(_redis_session: RedisServer | None) -> str:
    if _redis_session is None:
        assert EXTERNAL_URL
        return EXTERNAL_URL
    if not _redis_session.running:  # a previous test stopped it and failed before restarting
        _redis_session.start()
    return _redis_session.url


@pytest.fixture
def namespace(redis_url: str, _redis_session: RedisServer | None) -> Iterator[str]:
    """Return a key namespace no other test uses; the database is clean for it."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    admin = redis.Redis.from_url(redis_url)
    if _redis_session is not None:
        admin.flushall()  # our own server: every test starts from an empty database
    yield ns
    if _redis_session is not None and not _redis_session.running:
        _redis_session.start()
    for key in admin.scan_iter(match=f"{ns}:*", count=1000):
        admin.delete(key)
    admin.close()


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace=namespace, shards=4)


@pytest.fixture
def make_settings(redis_url: str, namespace: str) -> Callable[..., Settings]:
    """Build Settings for this test: its Redis, its namespace, demo secrets, and overrides."""

    def make(**overrides: str) -> Settings:
        env = {"REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_DEMO": "1",
               "TP_STREAM_SHARDS": "4", **overrides}  # fmt: skip
        return Settings.from_env(env)

    return make


@pytest.fixture
def redis_control(_redis_session: RedisServer | None) -> RedisServer:
    """Return the session's redis-server to stop, kill or restart mid-test (owned server only)."""
    if _redis_session is None:
        pytest.skip("needs a redis-server this test run started (REDIS_URL is set)")
    return _redis_session
