"""The Dramatiq processes' health report: ``<ns>:worker:health``, one field per process.

The feeder, consumer, web and execution processes each write a JSON report every 2 s into a hash
of their role (docs/architecture.md, "Keys"); the ops page, ``/readyz`` and ``/metrics`` read
them. :class:`WorkerHealth` does the same for the ``worker`` and ``signals`` process types, from
inside Dramatiq (middleware, house style 8): a process consuming only the ``signals`` queue is
the ``signals`` role, any other the ``worker`` role. Example field value::

    {"name": "host-4242", "role": "worker", "at_ms": 1700000000000, "queues": ["backfill",
     "candles"], "threads": 8, "processed": 912, "failed": 1, "skipped": 0, "in_flight": 2,
     "actors": {"build_candles": {"processed": 900, "failed": 1, "ms_max": 41,
                                  "wait_ms": [3, 18, 25], "run_ms": [6, 30, 41]}}}

Per actor, since the previous report: ``ms_max``, the longest message; ``wait_ms``, the time
messages waited from being sent to being started (p50, p99, max; first deliveries only: a retry
waits its back-off on purpose), which is the queue's share of the latency budget
(docs/architecture.md, "Latency budget"); ``run_ms``, how long they ran (p50, p99, max).
Percentiles are over the latest :data:`SAMPLES` messages of the period (``core/latency.py``).
The field is removed when the worker stops; a killed process leaves a report that turns stale.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from typing import Any

import dramatiq
import orjson
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from core.clock import now_ms
from core.latency import StageLatency

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 2.0  # as the other processes (a report older than 10 s is stale)
SAMPLES = 1024  # per actor and report: the latest messages' wait and run times
SIGNALS_QUEUES = frozenset({"signals"})
_boots = itertools.count(1)  # workers booted in this process (tests run several in one)


def role_of(queues: set[str]) -> str:
    """Return the process type a Dramatiq process consuming ``queues`` runs as."""
    own = {q.removesuffix(".DQ") for q in queues}
    return "signals" if own and own <= SIGNALS_QUEUES else "worker"


class _Actor:
    __slots__ = ("failed", "processed", "runs", "waits")

    def __init__(self) -> None:
        self.processed = self.failed = 0
        self.waits = StageLatency(SAMPLES)
        self.runs = StageLatency(SAMPLES)

    def report(self) -> dict[str, Any]:
        """Return this period's figures and start the next period."""
        runs = self.runs.report()
        out: dict[str, Any] = {"processed": self.processed, "failed": self.failed,
                               "ms_max": runs[2] if runs else 0}  # fmt: skip
        waits = self.waits.report()
        if waits:
            out["wait_ms"] = waits
        if runs:
            out["run_ms"] = runs
        return out


class WorkerHealth(Middleware):
    """Publish this Dramatiq process's health into ``key`` every HEALTH_EVERY_S while it runs."""

    def __init__(self, key: str, *, every_s: float = HEALTH_EVERY_S) -> None:
        self.key = key
        self.every_s = every_s
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._lock = threading.Lock()
        self._actors: dict[str, _Actor] = {}
        self._started: dict[str, float] = {}  # message id -> monotonic start
        self._skipped = 0
        self._stop = threading.Event()
        self._worker: dramatiq.Worker | None = None
        self._thread: threading.Thread | None = None

    # --- Dramatiq hooks (worker threads) -------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        waited = now_ms() - message.message_timestamp  # the sender's clock: same host or NTP
        with self._lock:
            self._started[message.message_id] = time.monotonic()
            if not message.options.get("retries"):
                self._actors.setdefault(message.actor_name, _Actor()).waits.add(waited)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            started = self._started.pop(message.message_id, None)
            actor = self._actors.setdefault(message.actor_name, _Actor())
            actor.processed += 1
            actor.failed += exception is not None
            if started is not None:
                actor.runs.add((time.monotonic() - started) * 1000)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        with self._lock:
            self._started.pop(message.message_id, None)
            self._skipped += 1

    # --- Dramatiq hooks (the worker's lifecycle) ------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if not isinstance(broker, RedisBroker):
            return
        # The forked process's own pid; a second worker in one process gets a suffix.
        n = next(_boots)
        self.name = f"{socket.gethostname()}-{os.getpid()}" + (f"-{n}" if n > 1 else "")
        self._worker = worker
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(broker.client,), name="worker-health", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if isinstance(broker, RedisBroker):
            try:
                broker.client.hdel(self.key, self.name)
            except redis.RedisError as exc:  # the report turns stale instead
                log.warning("health not removed: %s", type(exc).__name__)

    # --- the report ---------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Return this process's report; reset the per-report maxima."""
        worker = self._worker
        queues = sorted(
            q for q in (worker.consumers if worker is not None else {}) if not q.endswith(".DQ")
        )
        with self._lock:
            actors = {name: a.report() for name, a in sorted(self._actors.items())}
            in_flight, skipped = len(self._started), self._skipped
        return {
            "name": self.name,
            "role": role_of(set(queues)),
            "at_ms": now_ms(),
            "queues": queues,
            "threads": worker.worker_threads if worker is not None else 0,
            "processed": sum(a["processed"] for a in actors.values()),
            "failed": sum(a["failed"] for a in actors.values()),
            "skipped": skipped,
            "in_flight": in_flight,
            "actors": actors,
        }

    def _run(self, client: redis.Redis) -> None:
        while True:
            try:
                client.hset(self.key, self.name, orjson.dumps(self.report()))
            except redis.RedisError as exc:  # Redis down: the broker itself reports it louder
                log.debug("health not written: %s", type(exc).__name__)
            except Exception:  # a bug here must not go unnoticed, nor stop the reports
                log.exception("health report failed")
            if self._stop.wait(self.every_s):
                return
