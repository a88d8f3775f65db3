"""Feeder benchmark: sustained events/s into Redis Streams, latency, memory, vs Redis's own limit.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/feeder_rate.py                       # throughput ladder + latency
    .venv/bin/python bench/feeder_rate.py --rss-minutes 30 --rate 9000   # memory over time

Layout on a 2-core machine: the feeder is pinned to CPU 0; the simulator and redis-server to CPU
1. Events are everything the feeder writes (trades, book tickers, kline updates). Latency is the
Redis stream entry id (Redis's clock when the XADD ran) minus the exchange event time ``E``: it
covers the simulator's send, the network, parsing, sequencing and the pipelined write.
``--rate`` is the simulator's aggTrade rate; each aggTrade also moves the book (one bookTicker),
and kline updates add up to 4 per symbol per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.keys import ENTRY_FIELD, Keys  # noqa: E402
from core.schemas import BookTicker, Trade, decode  # noqa: E402
from demo.redis_server import RedisServer, free_port  # noqa: E402

SHARDS = 8


def pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


class Rig:
    """redis-server + simulator + feeder, wired together on free ports."""

    def __init__(self, symbols: int, tmp: Path) -> None:
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        pin(self.redis._proc.pid, 1)  # type: ignore[union-attr]
        self.rest, self.ws = free_port(), free_port()
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--rest-port", str(self.rest), "--ws-port",
             str(self.ws), "--symbols", str(symbols), "--rate", "0", "--steady",
             "--trade-retention", "1000", "--bar-retention", "100", "--log-level", "WARNING"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pin(self.sim.pid, 1)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.rest}", timeout=10)
        for _ in range(100):
            try:
                self.http.get("/fapi/v1/ping")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
               "REDIS_URL": self.redis.url, "TP_DEMO": "1", "TP_STREAM_SHARDS": str(SHARDS),
               "TP_REST_URL": f"http://127.0.0.1:{self.rest}", "TP_WS_URL": f"ws://127.0.0.1:{self.ws}",
               "TP_LOG_LEVEL": "WARNING", "TP_STREAM_MAXLEN": "200000"}  # fmt: skip
        self.feeder = subprocess.Popen(
            [sys.executable, "-m", "feeds"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pin(self.feeder.pid, 0)
        self.r = redis.Redis.from_url(self.redis.url)
        self.keys = Keys("tp", SHARDS)
        while self.health() is None:
            time.sleep(0.2)

    def health(self) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys.feed_health(), "feeder-1of1")
        return None if raw is None else orjson.loads(raw)

    def written(self) -> int:
        h = self.health()
        assert h is not None
        return int(h["counters"]["written"])

    def rate(self, aggtrades_per_s: float) -> None:
        self.http.post("/sim/rate", json={"rate": aggtrades_per_s})

    def latencies_ms(self, since_ms: int, until_ms: int) -> list[int]:
        out: list[int] = []
        for shard in range(SHARDS):
            for key, cls in ((self.keys.trades(shard), Trade), (self.keys.book(shard), BookTicker)):
                entries = self.r.xrange(key, f"{since_ms}-0", f"{until_ms}-0", count=20_000)
                for entry_id, fields in entries:
                    added_ms = int(entry_id.split(b"-")[0])
                    out.append(added_ms - decode(fields[ENTRY_FIELD], cls).event_time_ms)  # type: ignore[arg-type]
        return out

    def close(self) -> None:
        for proc in (self.feeder, self.sim):
            proc.terminate()
            proc.wait(20)
        self.redis.stop(save=False)


def measure(rig: Rig, aggtrades: float, seconds: float) -> dict[str, Any]:
    rig.rate(aggtrades)
    time.sleep(3)  # warm up at this rate
    h0, t0 = rig.health(), time.time()
    since = int(t0 * 1000)
    cpu0 = psutil.Process(rig.feeder.pid).cpu_times()
    time.sleep(seconds)
    h1, t1 = rig.health(), time.time()
    cpu1 = psutil.Process(rig.feeder.pid).cpu_times()
    assert h0
    assert h1
    dt = (h1["updated_ms"] - h0["updated_ms"]) / 1000
    written = h1["counters"]["written"] - h0["counters"]["written"]
    received = sum(
        h1["counters"][k] - h0["counters"][k] for k in ("trades", "book_tickers", "klines")
    )
    lat = sorted(rig.latencies_ms(since, int(t1 * 1000)))
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0)
    return {
        "aggtrades_per_s": aggtrades,
        "received_per_s": received / dt,
        "written_per_s": written / dt,
        "shed": h1["counters"]["shed_trades"] + h1["counters"]["shed_other"],
        "outbox_high_water": h1["outbox"]["high_water"],
        "p50_ms": lat[len(lat) // 2] if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
        "feeder_cpu": cpu,
        "samples": len(lat),
    }


def redis_xadd_limit(url_port: int) -> float:
    """Return redis-benchmark's pipelined XADD rate (requests/s) with a trade-sized payload."""
    payload = (
        '["trade",1,"BTCUSDT",5933014,100,105,"27785.00","0.014",false,1679851564486,'
        "1679851564490,1679851564493]"
    )
    out = subprocess.run(
        ["redis-benchmark", "-p", str(url_port), "-n", "1000000", "-P", "64", "-q",
         "XADD", "bench:xadd", "MAXLEN", "~", "200000", "*", "d", payload],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(out.split("requests per second")[0].split(":")[-1].strip().split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--rates", default="5000,10000,15000,20000,25000,30000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-minutes", type=float, default=0)
    parser.add_argument("--rate", type=float, default=9000, help="aggTrades/s for --rss-minutes")
    args = parser.parse_args()
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.node()} {platform.processor() or platform.machine()} "
          f"cpus={os.cpu_count()} python={platform.python_version()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(args.symbols, Path(tmp))
        try:
            if args.rss_minutes:
                rss_run(rig, args.rate, args.rss_minutes)
                return
            for rate in (float(r) for r in args.rates.split(",")):
                runs = [measure(rig, rate, args.seconds) for _ in range(args.repeat)]
                med = {k: statistics.median(r[k] for r in runs if r[k] is not None)
                       for k in runs[0] if k != "aggtrades_per_s"}  # fmt: skip
                print(f"aggTrades/s={rate:>7.0f}  received/s={med['received_per_s']:>8.0f}  "
                      f"written/s={med['written_per_s']:>8.0f}  p50={med['p50_ms']:.0f} ms  "
                      f"p99={med['p99_ms']:.0f} ms  feeder_cpu={med['feeder_cpu']:.0%}  "
                      f"shed={med['shed']:.0f}  outbox_high_water={med['outbox_high_water']:.0f}",
                      flush=True)  # fmt: skip
            rig.rate(0)
            xadd = statistics.median(redis_xadd_limit(rig.redis.port) for _ in range(3))
            print(f"redis-benchmark XADD pipelined (-P 64, same payload size): {xadd:,.0f} /s")
        finally:
            rig.close()


def rss_run(rig: Rig, rate: float, minutes: float) -> None:
    rig.rate(rate)
    proc = psutil.Process(rig.feeder.pid)
    start = time.time()
    w0, t0 = rig.written(), time.time()
    samples = []
    while time.time() - start < minutes * 60:
        time.sleep(30)
        rss = proc.memory_info().rss / 2**20
        w1, t1 = rig.written(), time.time()
        samples.append(rss)
        print(f"t={t1 - start:6.0f}s rss={rss:6.1f} MiB written/s={(w1 - w0) / (t1 - t0):8.0f}",
              flush=True)  # fmt: skip
        w0, t0 = w1, t1
    warm = samples[len(samples) // 6 :]  # after the first sixth (warm-up)
    print(f"rss after warm-up: min={min(warm):.1f} max={max(warm):.1f} "
          f"growth={warm[-1] - warm[0]:+.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
