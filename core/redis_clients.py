"""The one factory for Redis clients: sync, asyncio, and gevent-patched.

redis-py 8 changed defaults that break a streaming pipeline (docs/stack.md, "redis-py 8
defaults"): a 5 s socket timeout (so an ``XREADGROUP BLOCK 10000`` raises TimeoutError), a
100-connection pool cap that raises instead of waiting, and RESP3 on the wire. Every client here
states its choice instead:

* ``socket_timeout`` = :data:`SOCKET_TIMEOUT_S`, longer than any server-side block we issue
  (:data:`MAX_BLOCK_MS`); a blocking read must use ``block=`` at most ``MAX_BLOCK_MS``;
* a connect timeout, TCP keepalive and a health check on connections idle for 30 s;
* a bounded retry with jittered exponential backoff on connection and timeout errors;
* an explicit pool size; gevent and asyncio clients *wait* for a free connection (blocking
  pool) rather than fail, because hundreds of greenlets may share one pool;
* RESP2 (``protocol=2``): the shape Dramatiq's Lua replies and Flask-SocketIO's pub/sub are
  written and tested against, and it works through proxies without ``HELLO``.

hiredis is installed (``redis[hiredis]``) and picked up automatically for reply parsing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff

from core.errors import RedisSetupError
from core.logs import QuietWait

MAX_BLOCK_MS = 2_000  # the longest BLOCK any of our XREAD/XREADGROUP calls may ask for
SOCKET_TIMEOUT_S = 10.0  # > MAX_BLOCK_MS, with room for a slow reply
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30
RETRIES = 3  # then the error reaches the caller, which counts and reports it
POOL_WAIT_S = 10.0  # how long a greenlet or task waits for a free pooled connection


def _options(client_name: str | None, *, asyncio: bool = False) -> dict[str, Any]:
    retry_cls = redis.asyncio.retry.Retry if asyncio else redis.retry.Retry
    return {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": retry_cls(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
        "protocol": 2,
        "client_name": client_name,
    }


def sync_client(
    url: str, *, max_connections: int = 16, client_name: str | None = None
) -> redis.Redis:
    """Return a thread-safe sync client (threads wait up to POOL_WAIT_S for a connection)."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT_S, **_options(client_name)
    )
    return redis.Redis(connection_pool=pool)


def gevent_client(
    url: str, *, max_connections: int = 64, client_name: str | None = None
) -> redis.Redis:
    """Return a sync client for a gevent process; raise RedisSetupError if sockets are unpatched.

    Without monkey-patching, one blocking read would freeze every greenlet of the process.
    """
    import gevent.monkey  # imported here: only gevent processes may pay for it

    if not gevent.monkey.is_module_patched("socket"):
        raise RedisSetupError("gevent_client() needs gevent.monkey.patch_all() before any import")
    return sync_client(url, max_connections=max_connections, client_name=client_name)


def async_client(
    url: str, *, max_connections: int = 16, client_name: str | None = None
) -> redis.asyncio.Redis:
    """Return an asyncio client whose tasks wait up to POOL_WAIT_S for a pooled connection."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        **_options(client_name, asyncio=True),
    )
    return redis.asyncio.Redis(connection_pool=pool)


def redacted(url: str) -> str:
    """Return ``scheme://host:port/db`` of a Redis URL, for logs and messages: never a password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def wait_for_redis(url: str, stop: threading.Event | None = None) -> bool:
    """Return True once Redis at ``url`` answers PING; False if ``stop`` is set first.

    Start-up only, so that a process started before its Redis (a deploy, a Redis restart) waits
    quietly instead of dying with a traceback: one line, then a warning naming the host and what
    to set if it lasts (:class:`core.logs.QuietWait`). Retries after 0.5 s, doubling up to 5 s.
    """
    stopped = stop if stop is not None else threading.Event()
    probe = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                 socket_timeout=CONNECT_TIMEOUT_S, protocol=2)  # fmt: skip
    hint = "check REDIS_URL" + (
        " (a self-signed certificate: TP_REDIS_TLS=no-verify or TP_REDIS_CA_FILE)"
        if url.startswith("rediss://")
        else ""
    )
    waiting = QuietWait(logging.getLogger(__name__), "Redis", redacted(url), hint)
    delay = 0.5
    try:
        while not stopped.is_set():
            try:
                probe.ping()
            except (redis.RedisError, OSError) as exc:
                waiting.failed(exc)
                stopped.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            waiting.answered()
            return True
        return False
    finally:
        probe.close()


def group_lag(group: dict[Any, Any], last_generated_id: Any) -> int | None:
    """Return a consumer group's lag: 0 once it was delivered the stream's last entry, else what
    XINFO GROUPS says (None when Redis cannot tell). After a reload Redis 7.0 reports a lag for a
    group that is caught up (docs/stack.md, "A consumer group's lag")."""
    last_delivered = group.get("last-delivered-id")
    if last_delivered is not None and last_delivered == last_generated_id:
        return 0
    lag = group.get("lag")
    return None if lag is None else int(lag)
