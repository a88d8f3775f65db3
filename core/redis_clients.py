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

Market data may live on a Redis of its own, a single server or a Redis Cluster
(``TP_MARKET_REDIS_URL``; docs/architecture.md, "Two Redis roles"): :func:`market_client` and
:func:`async_market_client` return the client for it, which is the control client itself when
market data shares the control Redis. A cluster client is redis-py's (it follows MOVED and ASK,
and re-reads the slot map after a failover) typed as :class:`redis.Redis`: our market-data code
uses only what both offer, scripts and transactions on one shard's keys (one hash tag, one slot).
:func:`read_streams` is the one place that differs: a cluster refuses an XREAD whose keys lie in
several slots.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff

from core.config import MarketRedis
from core.errors import RedisSetupError
from core.keys import Keys
from core.logs import QuietWait

MAX_BLOCK_MS = 2_000  # the longest BLOCK any of our XREAD/XREADGROUP calls may ask for
SOCKET_TIMEOUT_S = 10.0  # > MAX_BLOCK_MS, with room for a slow reply
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30
RETRIES = 3  # then the error reaches the caller, which counts and reports it
POOL_WAIT_S = 10.0  # how long a greenlet or task waits for a free pooled connection
# A cluster cannot BLOCK one XREAD over several slots: read_streams polls each shard this often.
CLUSTER_POLL_MS = 10


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


def market_client(
    market: MarketRedis,
    control: redis.Redis,
    *,
    max_connections: int = 16,
    client_name: str | None = None,
) -> redis.Redis:
    """Return the client for market data: ``control`` itself when market data shares the control
    Redis, else a client of its own (a cluster client for a cluster). Threads and greenlets wait
    for a free connection, as with :func:`sync_client`."""
    if market.shared:
        return control
    if not market.cluster:
        return sync_client(market.urls[0], max_connections=max_connections, client_name=client_name)
    options = _options(client_name)
    options.pop("health_check_interval")  # not a cluster option: its nodes' pools refuse it
    client = redis.cluster.RedisCluster(
        startup_nodes=[
            redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
            for h, p in _hosts(market.urls)
        ],
        connection_pool_class=redis.BlockingConnectionPool,
        max_connections=max_connections,  # per node; a caller waits up to 20 s for one
        **options,
        **_auth(market.urls[0]),
    )
    return cast(redis.Redis, client)  # the same commands, scripts and pipelines (module doc)


def async_market_client(
    market: MarketRedis,
    control: redis.asyncio.Redis,
    *,
    max_connections: int = 16,
    client_name: str | None = None,
) -> redis.asyncio.Redis:
    """The asyncio counterpart of :func:`market_client`."""
    if market.shared:
        return control
    if not market.cluster:
        return async_client(market.urls[0], max_connections=max_connections,
                            client_name=client_name)  # fmt: skip
    options = _options(client_name, asyncio=True)
    options.pop("health_check_interval")
    client = redis.asyncio.cluster.RedisCluster(
        startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in _hosts(market.urls)],
        max_connections=max_connections,
        **options,
        **_auth(market.urls[0]),
    )
    return cast(redis.asyncio.Redis, client)


def is_cluster(client: object) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def read_streams(
    client: redis.Redis,
    streams: Mapping[Any, Any],
    *,
    count: int,
    block: int | None = None,
    group: tuple[str, str] | None = None,
) -> list[Any]:
    """XREAD (or XREADGROUP as ``group`` = (group, consumer)) ``streams`` (key -> id) of any
    shards; return the reply's ``[[key, entries], ...]`` (empty when nothing came).

    On one server: one command, blocking up to ``block`` ms. On a cluster a command's keys must
    share a slot, so one command per shard, pipelined (redis-py sends each node its share), and
    a pipeline cannot block: when nothing came it reads again every :data:`CLUSTER_POLL_MS` ms
    until ``block`` ms have passed.
    """
    r: Any = client  # redis-py's stream types are narrower than what it accepts
    if not is_cluster(client):
        if group is None:
            reply = r.xread(streams, count=count, block=block)
        else:
            reply = r.xreadgroup(group[0], group[1], streams, count=count, block=block)
        return cast(list[Any], reply or [])
    by_shard: dict[int, dict[Any, Any]] = {}
    for key, at in streams.items():
        by_shard.setdefault(Keys.shard_in(key), {})[key] = at
    deadline = time.monotonic() + (block or 0) / 1000
    while True:
        out = _read_by_node(cast(redis.cluster.RedisCluster, client), by_shard, count, group)
        left = deadline - time.monotonic()
        if out or left <= 0:
            return out
        time.sleep(min(CLUSTER_POLL_MS / 1000, left))


def _read_by_node(
    cluster: redis.cluster.RedisCluster,
    by_shard: dict[int, dict[Any, Any]],
    count: int,
    group: tuple[str, str] | None,
) -> list[Any]:
    """One plain pipeline per primary, its shards' reads in it: redis-py's cluster pipeline costs
    ~10x the CPU of a plain one (bench/RESULTS.md, scale-out). A slot that moved (MOVED, a
    failover) makes the client re-read the slot map; the error reaches the caller, which retries.
    """
    by_node: dict[str, tuple[Any, list[dict[Any, Any]]]] = {}
    for part in by_shard.values():
        node = cluster.get_node_from_key(next(iter(part)))  # type: ignore[no-untyped-call]
        by_node.setdefault(node.name, (node, []))[1].append(part)
    out: list[Any] = []
    try:
        for node, parts in by_node.values():
            conn: Any = cluster.get_redis_connection(node)
            with conn.pipeline(transaction=False) as pipe:
                for part in parts:
                    if group is None:
                        pipe.xread(part, count=count)
                    else:
                        pipe.xreadgroup(group[0], group[1], part, count=count)
                for reply in pipe.execute():
                    out.extend(reply or ())
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.MovedError,
            redis.exceptions.AskError, redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError):  # fmt: skip
        with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
            cluster.nodes_manager.initialize()  # where the slots are now (if it can tell yet)
        raise
    return out


def in_pipeline(pipe: Any, script: Any, keys: list[Any], args: list[Any]) -> Any:
    """Queue a registered ``script`` in ``pipe``. redis-py refuses EVALSHA in a cluster's
    pipeline (it could not load a missing script there), so on a cluster the script's text goes
    with each call (EVAL); elsewhere the script object does (EVALSHA, loaded when missing)."""
    if isinstance(pipe, (redis.cluster.ClusterPipeline, redis.asyncio.cluster.ClusterPipeline)):
        return pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
    return script(keys=keys, args=args, client=pipe)


def _hosts(urls: tuple[str, ...]) -> list[tuple[str, int]]:
    return [(p.hostname or "127.0.0.1", p.port or 6379) for p in map(urlsplit, urls)]


def _auth(url: str) -> dict[str, Any]:
    """A cluster's credentials and TLS options, from its first seed's URL (every node shares
    them): ``redis://user:password@host:port``, ``rediss://...?ssl_cert_reqs=none``."""
    parts = urlsplit(url)
    out: dict[str, Any] = {}
    if parts.username:
        out["username"] = parts.username
    if parts.password:
        out["password"] = parts.password
    if parts.scheme == "rediss":
        out["ssl"] = True
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        for name in ("ssl_cert_reqs", "ssl_ca_certs"):
            if name in query:
                out[name] = query[name]
    return out


def redacted(url: str) -> str:
    """Return ``scheme://host:port/db`` of a Redis URL, for logs and messages: never a password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def wait_for_redis(
    url: str | tuple[str, ...], stop: threading.Event | None = None, *, setting: str = "REDIS_URL"
) -> bool:
    """Return True once Redis at ``url`` (or any of several: a cluster's seeds) answers PING;
    False if ``stop`` is set first.

    Start-up only, so that a process started before its Redis (a deploy, a Redis restart) waits
    quietly instead of dying with a traceback: one line, then a warning naming the host and what
    to set if it lasts (:class:`core.logs.QuietWait`). Retries after 0.5 s, doubling up to 5 s.
    """
    urls = (url,) if isinstance(url, str) else url
    stopped = stop if stop is not None else threading.Event()
    probes = [redis.Redis.from_url(u, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                   socket_timeout=CONNECT_TIMEOUT_S, protocol=2)
              for u in urls]  # fmt: skip
    hint = f"check {setting}" + (
        " (a self-signed certificate: TP_REDIS_TLS=no-verify or TP_REDIS_CA_FILE)"
        if urls[0].startswith("rediss://")
        else ""
    )
    waiting = QuietWait(logging.getLogger(__name__), "Redis", redacted(urls[0]), hint)
    delay = 0.5
    try:
        while not stopped.is_set():
            error: Exception = ConnectionError("no URL")
            for probe in probes:
                try:
                    probe.ping()
                except (redis.RedisError, OSError) as exc:
                    error = exc
                    continue
                waiting.answered()
                return True
            waiting.failed(error)
            stopped.wait(delay)
            delay = min(delay * 2, 5.0)
        return False
    finally:
        for probe in probes:
            probe.close()


def wait_for_market_redis(market: MarketRedis, stop: threading.Event | None = None) -> bool:
    """:func:`wait_for_redis` for the market-data Redis (True at once when it is the control
    Redis); for a cluster, any of its seeds answering will do."""
    if market.shared:
        return True
    return wait_for_redis(market.urls, stop, setting="TP_MARKET_REDIS_URL")


def group_lag(group: dict[Any, Any], last_generated_id: Any) -> int | None:
    """Return a consumer group's lag: 0 once it was delivered the stream's last entry, else what
    XINFO GROUPS says (None when Redis cannot tell). After a reload Redis 7.0 reports a lag for a
    group that is caught up (docs/stack.md, "A consumer group's lag")."""
    last_delivered = group.get("last-delivered-id")
    if last_delivered is not None and last_delivered == last_generated_id:
        return 0
    lag = group.get("lag")
    return None if lag is None else int(lag)
