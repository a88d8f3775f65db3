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
