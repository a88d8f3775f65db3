"""Scale-out (issue 17): market data on a real Redis Cluster (3 primaries, 3 replicas, started
by the test from ``redis-server``), two processes of every role, and failures while data flows.

The control Redis (Dramatiq's broker, health) stays the suite's single server, as in a
deployment: Dramatiq cannot run on a cluster. After each run every closed candle is compared
with the simulator's ground truth (tests/e2e/test_candles.py ``check_against_truth``): a trade
applied twice or lost unrepaired would show in volume, count or close.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from demo.redis_cluster import RedisCluster
from tests.e2e.conftest import RunningSim
from tests.e2e.pipeline import Pipeline
from tests.e2e.test_candles import check_against_truth, finish, run_market, unexplained_diffs


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path / "cluster") as c:
        yield c


def health(p: Pipeline, key: str) -> dict[str, dict[str, Any]]:
    raw: dict[bytes, bytes] = p.control.hgetall(key)  # type: ignore[assignment]
    return {name.decode(): orjson.loads(value) for name, value in raw.items()}


def next_minute() -> float:
    return (time.time() // 60 + 1) * 60


def check_exact(p: Pipeline, sim: RunningSim) -> dict[str, int]:
    m = p.metrics()
    assert not unexplained_diffs(p), str(m)
    assert m.get("backfill_diff", 0) == 0, str(m)
    assert m.get("dead", 0) == 0, str(m)
    compared = check_against_truth(p, sim)
    seen = {i.symbol: [(c.open_time_ms // 1000 % 3600, c.closed, c.source)
                       for c in p.candles(i.symbol, "1m")[-3:]]
            for i in sim.sim.model.instruments}  # fmt: skip
    # A closed minute of most symbols (the newest bar of each is left out as possibly open);
    # check_against_truth already failed if any minute the market traded in were missing.
    assert compared["1m"] >= 4, str((compared, seen))  # str: pytest would truncate them
    assert compared["15s"] > 0, str((compared, seen))  # folded from our trades alone, compared
    return compared


@pytest.mark.timeout(360)
def test_two_processes_per_role_on_a_cluster_share_the_work_and_take_over_a_killed_peer(
    sim_factory: Callable[..., RunningSim],
    start_pipeline: Callable[..., Pipeline],
    cluster: RedisCluster,
) -> None:
    sim = sim_factory(rate=0.0, symbol_count=8, trade_retention=200_000, bar_retention=1500)
    p = start_pipeline(sim, cluster=cluster, per_role=2)
    sim.admin("POST", "/sim/rate", {"rate": 120})
    p.wait_for("first candles", lambda: p.metrics().get("trades_applied", 0) > 300)
    whole_windows = time.monotonic() + 35  # two whole 15 s windows before the failures

    # Every process does a share: both feeders write, both consumers read and build (half the
    # shards each, by lease: workers/leases.py), the Dramatiq
    # processes handle messages (the worker role only backfills: the start-up history, which one
    # process may take whole).
    def shares() -> bool:
        feeders = health(p, p.keys.feed_health())
        consumers = health(p, p.keys.consumer_health())
        workers = health(p, p.keys.worker_health())
        fed = [f for f in feeders.values() if f["counters"]["trades"] > 0]
        read = [c for c in consumers.values() if c["entries"] > 0]
        roles = [w.get("role") for w in workers.values()
                 if w.get("processed", 0) > 0]  # fmt: skip
        return (len(fed) == 2 and len(read) == 2 and roles.count("worker") >= 1
                and roles.count("signals") >= 1)  # fmt: skip

    p.wait_for("every process doing its share", shares, timeout_s=60)
    assert set(health(p, p.keys.feed_health())) == {"feeder-1of2", "feeder-2of2"}

    # One process of each role killed while its peers run. The consumer, worker and signals
    # process stay dead: their peers take their share (the survivor's builds read from each
    # shard's cursor, the dead one's pending entries included). The feeder owns its symbols
    # alone: the platform restarts it, and what it missed meanwhile is a gap repaired from REST.
    run_market(sim, p, max(2.0, whole_windows - time.monotonic()))
    read_before = health(p, p.keys.consumer_health())["c2"]["entries"]
    for victim in (p.consumer, p.worker, p.signals):
        p.retire(victim)
    p.feeder.kill9()
    p.feeder.start()
    run_market(sim, p, next_minute() + 3 - time.time())  # a minute closes while trading
    finish(sim, p)  # the next one closes, every repair lands

    # The survivor read on (every shard: finish() saw nothing pending, c1's entries included).
    assert health(p, p.keys.consumer_health())["c2"]["entries"] > read_before
    check_exact(p, sim)


@pytest.mark.timeout(360)
def test_a_killed_primary_fails_over_under_load_and_the_candles_stay_exact(
    sim_factory: Callable[..., RunningSim],
    start_pipeline: Callable[..., Pipeline],
    cluster: RedisCluster,
) -> None:
    sim = sim_factory(rate=0.0, symbol_count=8, trade_retention=200_000, bar_retention=1500)
    p = start_pipeline(sim, cluster=cluster, per_role=2)
    sim.admin("POST", "/sim/rate", {"rate": 120})
    p.wait_for("first candles", lambda: p.metrics().get("trades_applied", 0) > 300)

    run_market(sim, p, 3)
    victim = cluster.primary_of(p.keys.trades(0))
    before = p.metrics()["trades_applied"]
    victim.kill()  # SIGKILL: whatever it had not yet sent its replica is lost
    deadline = time.monotonic() + 30
    while cluster.primary_of(p.keys.trades(0)).port == victim.port:
        assert time.monotonic() < deadline, "no replica took over within 30 s"
        time.sleep(0.2)

    # Data flows again through the promoted replica, with no process restarted by hand.
    def flowing() -> bool:
        return p.metrics().get("trades_applied", 0) > before + 500

    p.wait_for("candles built after the failover", flowing, timeout_s=60)
    run_market(sim, p, next_minute() + 3 - time.time())
    finish(sim, p)

    for s in p.services():
        assert s.alive(), s.tail()
    check_exact(p, sim)
    # The shards on the dead primary are served by its promoted replica.
    try:
        assert p.redis.xlen(p.keys.trades(0)) > 0
    except redis.RedisError as exc:  # pragma: no cover - a failure explains itself
        raise AssertionError(f"shard 0 unreadable after the failover: {exc}") from exc
