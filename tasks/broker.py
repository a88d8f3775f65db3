"""The Dramatiq broker of every actor, configured for market data rather than Dramatiq's defaults.

Importing this module reads the settings and sets the global broker, as Dramatiq requires before
any ``@dramatiq.actor`` runs; the worker (``dramatiq tasks.candles tasks.backfill``, Procfile
``worker``) and every process that sends messages import it through the actor modules.

What differs from the defaults, and why (docs/stack.md, "Dramatiq's defaults we change"):

* Retries: 5 at most, from 250 ms up to 10 s (Dramatiq's 20 retries from 15 s add up to about
  30 days). Our actors are idempotent, so a retry is always safe; when they are exhausted the
  message goes to the dead-letter set, kept 3 days (not 7: tracebacks add up in a small Redis).
* Time limit: 60 s per message (not 10 min); our Redis and HTTP calls carry their own timeouts,
  since the limit cannot interrupt a blocked system call.
* Heartbeat timeout 30 s: a dead worker's messages are requeued sooner. Our recovery does not
  wait for it anyway: the stream consumer re-triggers builds of entries left pending.
* Namespaced keys under ``<ns>:dramatiq``, a blocking pool of known size, RESP2.
* Dead letters carry their last attempt's traceback, and there are at most 10,000 per queue
  (:class:`FinalTraceback`).
* Bounded trigger queues (:func:`send_bounded`): a message that only says "shard N has work" is
  not sent when its queue already holds a bound of waiting messages.
* Health: :class:`tasks.health.WorkerHealth` reports each worker process in
  ``<ns>:worker:health`` like the other process types do in theirs.
* One stop signal is enough (:class:`tasks.shutdown.OneStopSignal`): Dramatiq's worker process
  would kill its tasks on a second SIGTERM, which a stop of the whole process group delivers.
* Each actor module's Redis client is made at worker boot (:class:`tasks.clients.ActorClients`).
* ``CurrentMessage`` for log context. The worker runs one process (``-p 1``, scale by adding
  processes) with ``--worker-shutdown-timeout 25000``, inside Heroku's 30 s.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from core.config import Settings, load_settings
from core.keys import Keys
from core.redis_clients import sync_client
from tasks.clients import ActorClients
from tasks.health import WorkerHealth
from tasks.shutdown import OneStopSignal

MAX_RETRIES = 5
MIN_BACKOFF_MS = 250
MAX_BACKOFF_MS = 10_000
TIME_LIMIT_MS = 60_000
HEARTBEAT_TIMEOUT_MS = 30_000
DEAD_MESSAGE_TTL_MS = 3 * 86_400_000
DEAD_LETTERS_MAX = 10_000  # per queue: past it the oldest dead letters go (FinalTraceback)
TRIGGER_QUEUE_PER_SHARD = 4  # waiting build_candles / evaluate_signals messages, per shard
BACKFILL_QUEUE_MAX = 2_000  # waiting backfill_klines messages


class FinalTraceback(Middleware):
    """Dead-letter a message with the traceback of its last attempt, and at most ``max_dead``
    dead letters per queue.

    Retries writes each failure's traceback into the message's options, but the Redis broker's
    nack moves the payload as it was last *enqueued* into ``<queue>.XQ.msgs``: the ops page
    would show the previous attempt's error, or none when the actor has no retries. After the
    nack, this overwrites that payload with the message as it failed.

    The broker keeps dead letters for a time (3 days), not a number: a failure storm (an
    exchange down for a day, each message failing with a ~3 KB traceback) could fill Redis.
    Past ``max_dead`` the oldest go, counted per queue in ``trimmed_key``.
    """

    def __init__(self, max_dead: int, keys: Keys) -> None:
        self.max_dead = max_dead
        self.keys = keys
        self.trimmed_key = keys.dead_letters_trimmed()

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        rid = message.options.get("redis_message_id")
        if not isinstance(broker, RedisBroker) or rid is None:
            return
        queue = message.queue_name.removesuffix(".DQ")  # delayed retries dead-letter here too
        xq, xq_msgs = self.keys.dramatiq_failed(queue), self.keys.dramatiq_failed_messages(queue)
        with broker.client.pipeline(transaction=False) as pipe:
            pipe.hset(xq_msgs, rid, message.encode())
            pipe.zcard(xq)
            count = pipe.execute()[1]
        if count <= self.max_dead:
            return
        popped: Any = broker.client.zpopmin(xq, count - self.max_dead)  # [(id, score)]
        oldest = [m for m, _ in popped]
        if oldest:
            with broker.client.pipeline(transaction=False) as pipe:
                pipe.hdel(xq_msgs, *oldest)
                pipe.hincrby(self.trimmed_key, queue, len(oldest))
                pipe.execute()
            logging.getLogger("tasks.broker").warning(
                "queue %s: %d dead letters dropped, oldest first (bound %d)",
                queue, len(oldest), self.max_dead,
            )  # fmt: skip


def make_broker(
    settings: Settings,
    *,
    dead_letters_max: int = DEAD_LETTERS_MAX,
    actor_clients: ActorClients | None = None,
) -> RedisBroker:
    """Return a Redis broker on REDIS_URL under this deployment's namespace."""
    keys = Keys.of(settings)
    url = settings.require_redis_url()
    client = sync_client(url, max_connections=32, client_name="dramatiq")
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS),
        CurrentMessage(),
        FinalTraceback(dead_letters_max, keys),
        WorkerHealth(keys.worker_health()),  # the worker and signals processes' health
        OneStopSignal(),  # a stop of the whole process group is graceful too
        actor_clients or ActorClients(url),  # the actor modules' Redis clients
    ]
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        middleware=middleware,
        namespace=keys.dramatiq_namespace(),
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
    )


logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise here
settings = load_settings()
keys = Keys.of(settings)
clients = ActorClients(settings.require_redis_url(), settings.market_redis())
broker = make_broker(settings, actor_clients=clients)
dramatiq.set_broker(broker)


def queue_depth(queue_name: str) -> int:
    """Return how many messages wait in ``queue_name`` (fetched or delayed ones not counted)."""
    return int(broker.client.llen(keys.dramatiq_queue(queue_name)))


class Sendable(Protocol):
    """An actor, or a reference to one by name (``tasks.actors``)."""

    @property
    def queue_name(self) -> str: ...

    def send(self, *args: Any) -> Any: ...


def send_bounded(actor: Sendable, *args: Any, bound: int) -> bool:
    """Send ``actor(*args)`` unless its queue already holds ``bound`` waiting messages.

    Our trigger messages are sent again while no worker takes them (their flag expires after a
    couple of seconds, in case a message was lost), so during a worker outage a queue would grow
    by one message per shard every few seconds for as long as the outage lasts, and the workers
    would come back to hours of redundant messages. One waiting message per shard does all of a
    shard's work, so the surplus carries nothing: the caller counts the refusal and tries again
    on its next trigger. Return whether the message was sent.
    """
    if queue_depth(actor.queue_name) >= bound:
        return False
    actor.send(*args)
    return True


def trigger_bound() -> int:
    return TRIGGER_QUEUE_PER_SHARD * settings.stream_shards
