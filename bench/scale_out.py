"""Scale-out benchmark (issue 17): the same market on one process per role and on two, side by
side in one run, so that the scaling factor can be read on a machine with few cores.

Run by hand (a quiet machine; nothing else running)::

    .venv/bin/python bench/scale_out.py                      # 2 repeats of both layouts
    .venv/bin/python bench/scale_out.py --rate 3000 --repeat 3

**Layouts.** ``1x``: one feeder, consumer, worker and signals process, market data on the control
redis-server (the demo's layout). ``2x``: two of each (feeders ``--shard K/2``; the consumers,
workers and signals processes share the consumer groups and Dramatiq's queues), on the same one
redis-server. ``2x-cluster``: the same two of each, market data on a 3-primary, 3-replica Redis
Cluster (``demo/redis_cluster.py``), the control Redis apart: what the cluster itself costs. The
stack is the end-to-end tests' (``tests/e2e/pipeline.py``; the simulator runs in this process), as
``bench/chaos.py`` does. The layouts alternate (1x, 2x, 2x-cluster, 1x...) so that drift in the
machine's speed falls on both.

**Measured** over ``--seconds`` after a warm-up, at a fixed offered rate (the simulator's
aggTrades per second, ``steady``: no busy and quiet regimes, no hot symbols; with its book
tickers, klines and mark prices): trades applied to candles
per second, and each role's CPU per 1,000 trades applied (summed over its processes, children
included), and the busiest process of the role. With the load split evenly, the busiest
process's CPU per trade halves: that is the scaling factor (what one core per process would
carry, read without needing the cores). Redis's own CPU (every node) is shown too, and what a
stored candle costs in Redis memory, from ``MEMORY USAGE`` of the candle sets.

Printed: a table per layout (medians of the repeats) and one JSON line with every window.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.redis_cluster import RedisCluster  # noqa: E402
from demo.redis_server import RedisServer  # noqa: E402
from tests.e2e.conftest import RunningSim, sim_config  # noqa: E402
from tests.e2e.pipeline import SHARDS, Pipeline, Service  # noqa: E402

ROLES = ("feeder", "consumer", "worker", "signals")
LAYOUTS = ["1x", "2x", "2x-cluster"]


def role_of(service: Service) -> str:
    return next(r for r in ROLES if service.name.startswith(r))


def cpu_s(service: Service) -> float:
    """CPU seconds of the service's process and its children (Dramatiq forks a worker)."""
    assert service.proc is not None
    total = 0.0
    try:
        root = psutil.Process(service.proc.pid)
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.Error:
        pass
    return total


def redis_cpu_s(clients: list[redis.Redis]) -> float:
    total = 0.0
    for c in clients:
        info: Any = c.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def applied(p: Pipeline) -> int:
    return sum(int(p.redis.hget(p.keys.candle_metrics(s), "trades_applied") or 0)
               for s in range(SHARDS))  # fmt: skip


def candle_bytes(p: Pipeline, symbols: list[str]) -> float:
    """Mean bytes of Redis memory per stored candle (zset member), over every candle set."""
    used = members = 0
    for sym in symbols:
        for tf in ("15s", "1m", "5m"):
            key = p.keys.candles(sym, tf)
            n = int(p.redis.zcard(key))
            if n:
                used += int(p.redis.memory_usage(key, samples=0) or 0)
                members += n
    return used / members if members else 0.0


def run_layout(layout: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    per_role = 1 if layout == "1x" else 2
    control = RedisServer(work / "redis")
    control.start()
    cluster = RedisCluster(work / "cluster") if layout.endswith("cluster") else None
    if cluster is not None:
        cluster.start()
    sim = RunningSim(sim_config(rate=0.0, symbol_count=args.symbols, trade_retention=200_000,
                                bar_retention=300, seed=7, steady=True))  # fmt: skip
    symbols = [i.symbol for i in sim.sim.model.instruments]
    p = Pipeline(sim, control.url, "tp", work, cluster=cluster, per_role=per_role,
                 TP_LOG_LEVEL="WARNING", TP_SYMBOLS=",".join(symbols))  # fmt: skip
    nodes = [redis.Redis(port=n.port) for n in (cluster.nodes if cluster else [control])]
    try:
        sim.admin("POST", "/sim/rate", {"rate": args.rate})
        p.wait_for("trades applied", lambda: applied(p) > 0, timeout_s=60)
        time.sleep(args.warmup)
        services = p.services()
        cpu0 = {s.name: cpu_s(s) for s in services}
        r0, a0, t0 = redis_cpu_s(nodes), applied(p), time.monotonic()
        time.sleep(args.seconds)
        cpu1 = {s.name: cpu_s(s) for s in services}
        r1, a1, t1 = redis_cpu_s(nodes), applied(p), time.monotonic()
        for s in services:
            assert s.alive(), s.tail()
        n = max(a1 - a0, 1)
        per_process = {name: (cpu1[name] - cpu0[name]) / n * 1000 for name in cpu0}
        roles: dict[str, dict[str, float]] = {}
        for s in services:
            row = roles.setdefault(role_of(s), {"total": 0.0, "busiest": 0.0})
            row["total"] += per_process[s.name]
            row["busiest"] = max(row["busiest"], per_process[s.name])
        return {
            "layout": layout,
            "applied_per_s": round((a1 - a0) / (t1 - t0)),
            "cpu_ms_per_1k": {
                r: {k: round(v * 1000, 1) for k, v in row.items()} for r, row in roles.items()
            },
            "redis_cpu_ms_per_1k": round((r1 - r0) / n * 1e6, 1),
            "candle_bytes": round(candle_bytes(p, symbols)),
        }
    finally:
        p.stop()
        sim.stop()
        for c in nodes:
            c.close()
        if cluster is not None:
            cluster.stop()
        control.stop(save=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000, help="aggTrades/s offered")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30, help="measured window")
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--layouts", type=lambda v: v.split(","), default=LAYOUTS,
                        help=f"comma-separated, of {','.join(LAYOUTS)}")  # fmt: skip
    args = parser.parse_args()
    windows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        for i in range(args.repeat):
            for layout in args.layouts:
                work = Path(tmp) / f"{layout}-{i}"
                work.mkdir()
                w = run_layout(layout, args, work)
                windows.append(w)
                print(f"# {layout} run {i + 1}: {json.dumps(w)}", flush=True)
    print(f"\nrate {args.rate:.0f} aggTrades/s offered, {args.symbols} symbols, "
          f"{args.seconds:.0f} s windows, medians of {args.repeat}")  # fmt: skip
    print(f"{'layout':<11}{'applied/s':>10}  " + "".join(
        f"{r + ' tot/max':>22}" for r in ROLES) + f"{'redis':>8}{'B/candle':>10}")  # fmt: skip
    for layout in args.layouts:
        mine = [w for w in windows if w["layout"] == layout]

        def med(get: Any, rows: list[dict[str, Any]] = mine) -> float:
            return statistics.median(get(w) for w in rows)

        cells = "".join(
            f"{med(lambda w, r=r: w['cpu_ms_per_1k'][r]['total']):>13.1f}/"
            f"{med(lambda w, r=r: w['cpu_ms_per_1k'][r]['busiest']):<8.1f}"
            for r in ROLES
        )  # fmt: skip
        print(f"{layout:<11}{med(lambda w: w['applied_per_s']):>10.0f}  {cells}"
              f"{med(lambda w: w['redis_cpu_ms_per_1k']):>8.1f}"
              f"{med(lambda w: w['candle_bytes']):>10.0f}")  # fmt: skip
    print("(CPU ms per 1,000 trades applied: the role's processes together / its busiest one)")
    print(json.dumps({"args": vars(args), "windows": windows}))


if __name__ == "__main__":
    main()
