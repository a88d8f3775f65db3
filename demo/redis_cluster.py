"""A local Redis Cluster: 3 primaries and 3 replicas started from ``redis-server``.

For the scaled-out layout (issue 17: market data on a cluster) in tests and ``make
demo-cluster``. Each node is a :class:`demo.redis_server.RedisServer` in cluster mode; the
cluster is formed with redis-py's cluster commands, as ``redis-cli --cluster create`` does
(https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/): each primary gets a
third of the 16,384 hash slots and its own config epoch, the nodes MEET, each replica
REPLICATEs its primary, and the cluster is ready when every node reports ``cluster_state:ok``.
A short ``cluster-node-timeout`` (2 s by default) lets a replica take over a dead primary within
seconds, for failover tests.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import redis

from demo.redis_server import RedisServer, RedisServerError, free_port

SLOTS = 16_384


class RedisCluster:
    """``primaries`` primaries, each with ``replicas_per_primary`` replicas, on free ports."""

    def __init__(self, data_dir: Path, *, primaries: int = 3, replicas_per_primary: int = 1,
                 node_timeout_ms: int = 2_000) -> None:  # fmt: skip
        self.primaries = primaries
        args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms))  # fmt: skip
        count = primaries * (1 + replicas_per_primary)
        self.nodes = [RedisServer(data_dir / f"node{i}", port=_cluster_port(), extra_args=args)
                      for i in range(count)]  # fmt: skip

    @property
    def seeds(self) -> list[str]:
        """``host:port`` of every node: any one is enough for a cluster client to start."""
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, *, timeout_s: float = 30.0) -> None:
        for node in self.nodes:
            for attempt in range(5):
                try:
                    node.start()
                    break
                except RedisServerError as exc:
                    # Its port or its bus port (port + 10,000) was taken between the choice and
                    # the start (another server on this machine): choose again.
                    if "Address already in use" not in str(exc) or attempt == 4:
                        raise
                    node.port = _cluster_port()
        clients = [_client(n.port) for n in self.nodes]
        try:
            ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients]
            if clients[0].execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
                self._form(clients, ids)
            self._wait_ok(clients, timeout_s)
        finally:
            for c in clients:
                c.close()

    def _form(self, clients: list[Any], ids: list[str]) -> None:
        per = SLOTS // self.primaries
        for i in range(self.primaries):
            first, last = i * per, (SLOTS - 1 if i == self.primaries - 1 else (i + 1) * per - 1)
            clients[i].execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            clients[i].execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        deadline = time.monotonic() + 15
        while not all(_known(c) == len(clients) for c in clients):
            if time.monotonic() > deadline:
                raise RedisServerError("cluster nodes did not meet within 15 s")
            time.sleep(0.1)
        for j, c in enumerate(clients[self.primaries :]):
            c.execute_command("CLUSTER", "REPLICATE", ids[j % self.primaries])

    def _wait_ok(self, clients: list[Any], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            infos = [c.execute_command("CLUSTER", "INFO").decode() for c in clients]
            replicas = sum(
                ",slave" in line or " slave " in line
                for line in clients[0].execute_command("CLUSTER", "NODES").decode().splitlines()
            )
            wanted = len(clients) - self.primaries
            if all("cluster_state:ok" in i for i in infos) and replicas == wanted:
                return
            if time.monotonic() > deadline:
                raise RedisServerError(f"cluster not ready within {timeout_s} s: {infos[0][:200]}")
            time.sleep(0.1)

    def primary_of(self, key: str) -> RedisServer:
        """Return the node that serves ``key``'s slot, as the first running node sees it.

        After a failover the other nodes learn of the promotion by gossip, within a moment.
        """
        c = _client(next(n for n in self.nodes if n.running).port)
        try:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for first, last, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        finally:
            c.close()
        raise RedisServerError(f"no node serves {key!r}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(save=False)

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10,000) is free and exists too."""
    for _ in range(1000):
        port = free_port()
        if port <= 55_535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10_000))
                except OSError:
                    continue
            return port
    raise RedisServerError("no free port pair for a cluster node")


def _client(port: int) -> Any:  # execute_command is untyped in redis-py
    return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2)


def _known(c: Any) -> int:
    return len(c.execute_command("CLUSTER", "NODES").decode().strip().splitlines())
