"""Our own processes for end-to-end tests: feeder, consumer (which builds the candles) and the
Dramatiq workers (backfill, signals) on one simulator.

Each runs as a real process in its own process group (kill -9 takes its children too), with its
output in the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from core.keys import Keys
from core.schemas import Candle, decode
from demo.redis_cluster import RedisCluster as LocalCluster
from tests.e2e.conftest import RunningSim

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 4
TIMEFRAMES = "15s,1m,5m"
# As in the Procfile: backfill in `worker`, signals in a process type of their own.
WORKER = ["-m", "tasks", "worker", "tasks.backfill", "--queues", "backfill", "--processes", "1",
          "--threads", "4", "--worker-shutdown-timeout", "5000"]  # fmt: skip
SIGNALS = ["-m", "tasks", "signals", "tasks.signals", "--queues", "signals", "--processes", "1",
           "--threads", "2", "--worker-shutdown-timeout", "5000"]  # fmt: skip


class Service:
    """One of our processes, in its own process group (kill -9 takes its children too)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def name(self) -> str:
        return self.log_path.stem  # feeder, consumer, worker, signals

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args], cwd=ROOT, env=self.env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Pipeline:
    """Feeder, consumer, worker and signals worker on one simulator and one Redis.

    ``cluster``: market data on that Redis Cluster (``TP_MARKET_REDIS_URL``), the control Redis
    at ``redis_url``. ``per_role``: that many processes of each role (the feeders split the
    symbols with ``--shard K/N``; the consumers share every shard through the consumer groups).
    """

    def __init__(
        self,
        sim: RunningSim,
        redis_url: str,
        namespace: str,
        log_dir: Path,
        *,
        cluster: LocalCluster | None = None,
        per_role: int = 1,
        **env: str,
    ) -> None:
        self.sim = sim
        self.keys = Keys(namespace, SHARDS)
        self.control = redis.Redis.from_url(redis_url)
        # Market data (what every check reads): the cluster's when there is one.
        self.redis: redis.Redis = self.control
        if cluster is not None:
            env = {"TP_MARKET_REDIS_URL": ",".join(f"redis://{s}" for s in cluster.seeds),
                   "TP_MARKET_REDIS_CLUSTER": "1", **env}  # fmt: skip
            nodes = [ClusterNode("127.0.0.1", int(s.split(":")[1])) for s in cluster.seeds]
            self.redis = RedisCluster(startup_nodes=nodes, socket_timeout=5)  # type: ignore[assignment]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
            "REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_DEMO": "1",
            "TP_STREAM_SHARDS": str(SHARDS), "TP_REST_URL": sim.rest_url, "TP_WS_URL": sim.ws_url,
            "TP_TIMEFRAMES": TIMEFRAMES, "TP_CANDLE_HISTORY": "3", "TP_CLAIM_IDLE_MS": "3000",
            "TP_FEED_SILENCE_MS": "1500", "TP_FEED_REORDER_MS": "300", "TP_LOG_LEVEL": "INFO",
            "TP_SIGNALS_FILE": "none",  # candle tests: no signal asking for history
            "dramatiq_queue_prefetch": "4", **env,
        }  # fmt: skip
        self.feeder = Service(["-m", "feeds", "--shard", f"1/{per_role}"], self.env,
                              log_dir / "feeder.log")  # fmt: skip
        self.consumer = Service(["-m", "workers.consumer", "--name", "c1"], self.env,
                                log_dir / "consumer.log")  # fmt: skip
        self.worker = Service(WORKER, self.env, log_dir / "worker.log")
        self.signals = Service(SIGNALS, self.env, log_dir / "signals.log")
        self.peers: list[Service] = []  # the second, third... process of each role
        for n in range(2, per_role + 1):
            self.peers += [
                Service(["-m", "feeds", "--shard", f"{n}/{per_role}"], self.env,
                        log_dir / f"feeder{n}.log"),
                Service(["-m", "workers.consumer", "--name", f"c{n}"], self.env,
                        log_dir / f"consumer{n}.log"),
                Service(WORKER, self.env, log_dir / f"worker{n}.log"),
                Service(SIGNALS, self.env, log_dir / f"signals{n}.log"),
            ]  # fmt: skip

        self.retired: list[Service] = []

    def services(self) -> list[Service]:
        """The processes running (and expected to stay up)."""
        every = [self.feeder, self.consumer, self.worker, self.signals, *self.peers]
        return [s for s in every if s not in self.retired]

    def retire(self, service: Service) -> None:
        """Kill ``service`` with SIGKILL for good: its peers are to take over its share."""
        service.kill9()
        self.retired.append(service)

    def stop(self) -> None:
        """SIGTERM to every service at once (as a dyno stop does), then wait for each."""
        stop_all(self.services())

    def metrics(self) -> dict[str, int]:
        """The candle stage's counters, summed over the shards."""
        return hash_counters(self.redis, [self.keys.candle_metrics(s) for s in range(SHARDS)])

    def signal_metrics(self) -> dict[str, int]:
        """The signal stage's counters, summed over the shards."""
        return hash_counters(self.redis, [self.keys.signal_metrics(s) for s in range(SHARDS)])

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for s in self.services():
                assert s.alive(), f"{s.name} died while waiting for {what}:\n{s.tail()}"
            if check():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {s.name}\n{s.tail()}" for s in self.services())
        raise AssertionError(f"timed out waiting for {what} ({getattr(self, 'unsettled', '')}); "
                             f"metrics {self.metrics()}\n{logs}")  # fmt: skip

    def settled(self) -> bool:
        """Every entry applied (nothing pending), every repair due by now (or within 10 s) done.

        A repair due later belongs to a period still open (its candle is not compared).
        """
        self.unsettled = self._unsettled()
        return not self.unsettled

    def _unsettled(self) -> str:
        now = time.time_ns() // 1_000_000
        for s in range(SHARDS):
            for stream in (self.keys.trades(s), self.keys.klines(s)):
                # Not XINFO's `lag`: after Redis reloads its data, 7.0 reports a lag although the
                # group has delivered the last entry (seen in bench/chaos.py). What was delivered
                # against what the stream holds is the fact.
                groups = self.redis.xinfo_groups(stream)
                last = self.redis.xinfo_stream(stream)["last-generated-id"] if groups else None
                for g in groups:
                    if g["pending"] or g["last-delivered-id"] != last:
                        return (f"{stream}: pending {g['pending']}, delivered "
                                f"{g['last-delivered-id']!r} of {last!r}")  # fmt: skip
            due = self.redis.zrangebyscore(self.keys.repairs(s), "-inf", now + 10_000,
                                           withscores=True)  # fmt: skip
            if due:
                return f"shard {s} repairs due: {due[:5]} (now {now})"
        return ""

    def candles(self, symbol: str, tf: str) -> list[Candle]:
        return [decode(m, Candle) for m in self.redis.zrange(self.keys.candles(symbol, tf), 0, -1)]


def stop_all(services: list[Service]) -> None:
    """SIGTERM to every service at once (as a dyno stop does), then wait for each."""
    alive = [s for s in services if s.alive()]
    for s in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(s.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
    for s in alive:
        s.stop()  # already signalled: waits, then SIGKILL after its grace


def hash_counters(r: redis.Redis, keys: list[str]) -> dict[str, int]:
    """Sum the integer fields of several hashes (a counter per shard)."""
    total: dict[str, int] = {}
    for key in keys:
        for k, v in r.hgetall(key).items():
            total[k.decode()] = total.get(k.decode(), 0) + int(v)
    return total
