"""A real Redis Cluster (demo/redis_cluster.py): our shard keys spread over its primaries, a
script over one shard's keys runs on one node, and a killed primary's replica takes over."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError

from core.keys import Keys
from demo.redis_cluster import RedisCluster as LocalCluster

# One shard's stream and a hash beside it, as the candle scripts do (a hash tag: one slot).
SCRIPT = """
redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])
return redis.call('HINCRBY', KEYS[2], 'n', 1)
"""


def replicated(info: dict[str, Any]) -> bool:
    """Every replica of this primary has everything it wrote."""
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    offsets = [v["offset"] for v in replicas]
    return bool(offsets) and min(offsets) >= info["master_repl_offset"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster") as c:
        yield c


def client_of(cluster: LocalCluster) -> Any:
    nodes = [ClusterNode("127.0.0.1", int(s.split(":")[1])) for s in cluster.seeds]
    return RedisCluster(startup_nodes=nodes, socket_timeout=5, socket_connect_timeout=2)


def test_shards_spread_over_the_primaries_and_a_replica_takes_over_a_killed_one(
    cluster: LocalCluster,
) -> None:
    keys = Keys("tp", 8)
    r = client_of(cluster)
    script = r.register_script(SCRIPT)
    for shard in range(8):
        assert script(keys=[keys.trades(shard), keys.candle_metrics(shard)], args=["x"]) == 1
    owners = {cluster.primary_of(keys.trades(s)).port for s in range(8)}
    assert len(owners) >= 2  # the hash tags {s0}..{s7} spread the market over the cluster

    # A primary dies with its shard's data replicated: its replica is promoted and serves it.
    victim = cluster.primary_of(keys.trades(0))
    direct = redis.Redis(port=victim.port)
    deadline = time.monotonic() + 10
    while not replicated(direct.info("replication")):
        assert time.monotonic() < deadline, direct.info("replication")
        time.sleep(0.05)
    direct.close()
    victim.kill()
    deadline = time.monotonic() + 30
    while True:
        try:
            n = script(keys=[keys.trades(0), keys.candle_metrics(0)], args=["y"])
            break
        except (redis.ConnectionError, redis.TimeoutError, ClusterDownError,
                redis.ResponseError):  # fmt: skip
            assert time.monotonic() < deadline, "no replica took over within 30 s"
            time.sleep(0.2)
    assert n == 2  # the write before the kill survived the failover
    assert r.xlen(keys.trades(0)) == 2
    # The promotion reaches the other nodes by gossip: within a node timeout or two.
    deadline = time.monotonic() + 10
    while cluster.primary_of(keys.trades(0)).port == victim.port:
        assert time.monotonic() < deadline, "the cluster still names the dead primary"
        time.sleep(0.1)
    r.close()


def test_market_client_reads_every_shard_and_runs_scripts_in_pipelines_on_a_cluster(
    cluster: LocalCluster,
) -> None:
    """What the processes do on market data that a cluster treats differently: an XREAD and an
    XREADGROUP over every shard (one command per slot), a script inside a transaction and inside
    a plain pipeline (redis-py refuses EVALSHA there), and an idle blocking read that waits."""
    from core.config import MarketRedis
    from core.redis_clients import in_pipeline, market_client, read_streams

    keys = Keys("tp", 8)
    market = MarketRedis(tuple(f"redis://{s}" for s in cluster.seeds), cluster=True, shared=False)
    r = market_client(market, redis.Redis(), client_name="test")
    for s in range(8):
        r.xadd(keys.trades(s), {"d": f"t{s}"})
        r.xgroup_create(keys.trades(s), "g", id="0")
    every = {keys.trades(s): "0-0" for s in range(8)}
    got = read_streams(r, every, count=10)
    assert sorted(fields[b"d"] for _, entries in got for _, fields in entries) == sorted(
        f"t{s}".encode() for s in range(8)
    )
    mine = read_streams(r, dict.fromkeys(every, ">"), count=10, group=("g", "c1"))
    assert sum(len(entries) for _, entries in mine) == 8
    started = time.monotonic()
    assert read_streams(r, dict.fromkeys(every, ">"), count=10, block=300, group=("g", "c1")) == []
    assert time.monotonic() - started >= 0.3  # it waited out the block time, polling

    script = r.register_script(SCRIPT)
    shard2 = [keys.trades(2), keys.candle_metrics(2)]
    with r.pipeline(transaction=True) as pipe:  # a transaction: one shard, one slot
        in_pipeline(pipe, script, shard2, ["x"])
        in_pipeline(pipe, script, shard2, ["x"])
        assert pipe.execute() == [1, 2]
    with r.pipeline(transaction=False) as pipe:  # a pipeline: any shards, node by node
        in_pipeline(pipe, script, shard2, ["x"])
        in_pipeline(pipe, script, [keys.trades(5), keys.candle_metrics(5)], ["x"])
        assert pipe.execute() == [3, 1]
    r.close()


def test_the_release_check_names_a_healthy_cluster_and_refuses_an_unreachable_one(
    cluster: LocalCluster,
) -> None:
    from core.config import Settings
    from release.checks import CheckFailed, check_market_redis

    base = {"REDIS_URL": "redis://127.0.0.1:1/0", "TP_MARKET": "sim", "TP_DEMO": "1",
            "TP_MARKET_REDIS_CLUSTER": "1"}  # fmt: skip
    seeds = ",".join(f"redis://{s}" for s in cluster.seeds)
    ok = check_market_redis(Settings.from_env({**base, "TP_MARKET_REDIS_URL": seeds}))
    assert "6 nodes, state ok" in ok
    with pytest.raises(CheckFailed, match="does not answer"):
        check_market_redis(
            Settings.from_env({**base, "TP_MARKET_REDIS_URL": "redis://127.0.0.1:1"})
        )
