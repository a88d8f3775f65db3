"""The Dramatiq broker of every actor, configured for market data rather than Dramatiq's defaults.

Importing this module reads the settings and sets the global broker, as Dramatiq requires before
any ``@dramatiq.actor`` runs; the worker (``dramatiq tasks.candles tasks.backfill``, Procfile
``worker``) and every process that sends messages import it through the actor modules.

What differs from the defaults, and why (stack-notes A):

* Retries: 5 at most, from 250 ms up to 10 s (Dramatiq's 20 retries from 15 s add up to about
  30 days). Our actors are idempotent, so a retry is always safe; when they are exhausted the
  message goes to the dead-letter set, kept 3 days (not 7: tracebacks add up in a small Redis).
* Time limit: 60 s per message (not 10 min); our Redis and HTTP calls carry their own timeouts,
  since the limit cannot interrupt a blocked system call.
* Heartbeat timeout 30 s: a dead worker's messages are requeued sooner. Our recovery does not
  wait for it anyway: the stream consumer re-triggers builds of entries left pending.
* Namespaced keys under ``<ns>:dramatiq``, a blocking pool of known size, RESP2.
* ``CurrentMessage`` for log context. The worker runs one process (``-p 1``, scale by adding
  processes) with ``--worker-shutdown-timeout 25000``, inside Heroku's 30 s.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from core.config import Settings, load_settings
from core.keys import Keys
from core.redis_clients import sync_client

MAX_RETRIES = 5
MIN_BACKOFF_MS = 250
MAX_BACKOFF_MS = 10_000
TIME_LIMIT_MS = 60_000
HEARTBEAT_TIMEOUT_MS = 30_000
DEAD_MESSAGE_TTL_MS = 3 * 86_400_000


def make_broker(settings: Settings) -> RedisBroker:
    """Return a Redis broker on REDIS_URL under this deployment's namespace."""
    client = sync_client(settings.require_redis_url(), max_connections=32, client_name="dramatiq")
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS),
        CurrentMessage(),
    ]
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        middleware=middleware,
        namespace=Keys(settings.namespace, settings.stream_shards).dramatiq_namespace(),
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
    )


logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise here
settings = load_settings()
keys = Keys(settings.namespace, settings.stream_shards)
broker = make_broker(settings)
dramatiq.set_broker(broker)
