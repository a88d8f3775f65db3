"""Signals benchmark: how long one worker process takes to evaluate every signal after a close.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/signals_rate.py --symbols 300 --repeat 5

A private redis-server is filled with ``--history`` closed candles and one open candle for every
symbol and default timeframe (1m, 5m, 15m, 1h, 4h, 1d: 1,800 series for 300 symbols). Then, in
this one process (a worker process's evaluation is one thread at a time: the GIL), with the
default signals (the six built-ins with their default parameters):

* **cold**: every series dirty, nothing cached: the first round after a worker starts;
* **1m close**: every symbol's 1m candle closes (a new closed candle and a new open one written
  the way the candle actor writes them, the series marked dirty): the time from the write to the
  last value written, over every shard's round; ``--repeat`` times, median;
* **all close**: the same with every timeframe closing at once (00:00 UTC).

Figures: wall time, values written (closed and provisional), evaluations per second. Target
(issue 6): the close of all 300 symbols' 1m candles evaluated within 1 s on one worker process.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.schemas import Candle, encode
from core.timeframes import parse_timeframe
from demo.redis_server import RedisServer

TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
SHARDS = 8


def candle(sym: str, tf: str, open_ms: int, price: float, closed: bool) -> Candle:
    p = Decimal(f"{price:.2f}")
    hi, lo = Decimal(f"{price * 1.001:.2f}"), Decimal(f"{price * 0.999:.2f}")
    ms = parse_timeframe(tf).ms
    v = Decimal("12.5")
    return Candle(sym, tf, open_ms, open_ms + ms - 1, p, hi, lo, p, v, p * v, 40, v / 2, p * v / 2,
                  1, 40, closed, "trades")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--symbols", type=int, default=300)
    ap.add_argument("--history", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            run(args, server)
        finally:
            server.stop()


def run(args: argparse.Namespace, server: RedisServer) -> None:
    os.environ.update({"REDIS_URL": server.url, "TP_DEMO": "1", "TP_NAMESPACE": "bench",
                       "TP_STREAM_SHARDS": str(SHARDS), "TP_LOG_LEVEL": "WARNING"})  # fmt: skip
    from tasks.signals import _plan, _shard, keys

    r = _shard(0).client
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    rng = random.Random(7)  # noqa: S311 - a reproducible price walk
    now = 1_800_000_000_000
    price: dict[tuple[str, str], float] = {}
    pipe = r.pipeline(transaction=False)
    for sym in symbols:
        for tf in TIMEFRAMES:
            t = parse_timeframe(tf)
            last_open = t.open_time_ms(now)
            px = 100.0
            members = {}
            for k in range(args.history, -1, -1):
                px *= 1 + rng.gauss(0, 0.002)
                c = candle(sym, tf, last_open - k * t.ms, px, closed=k > 0)
                members[encode(c)] = c.open_time_ms
            price[sym, tf] = px
            pipe.zadd(keys.candles(sym, tf), members)
            pipe.hincrby(keys.signal_dirty(keys.shard_of(sym)), f"{sym}|{tf}", 1)
        pipe.execute()

    def rounds() -> tuple[float, int]:
        t0 = time.perf_counter()
        written = sum(_shard(s).run() for s in range(SHARDS))
        return time.perf_counter() - t0, written

    def close(tfs: tuple[str, ...], step: int) -> None:
        pipe = r.pipeline(transaction=False)
        for sym in symbols:
            for tf in tfs:
                t = parse_timeframe(tf)
                opened = t.open_time_ms(now) + step * t.ms
                px = price[sym, tf]
                old = candle(sym, tf, opened - t.ms, px, closed=False)
                px = price[sym, tf] = px * (1 + rng.gauss(0, 0.002))
                key = keys.candles(sym, tf)
                pipe.zremrangebyscore(key, old.open_time_ms, old.open_time_ms)
                pipe.zadd(key, {encode(candle(sym, tf, old.open_time_ms, old.close.__float__(),
                                              closed=True)): old.open_time_ms})  # fmt: skip
                pipe.zadd(key, {encode(candle(sym, tf, opened, px, closed=False)): opened})
                pipe.hincrby(keys.signal_dirty(keys.shard_of(sym)), f"{sym}|{tf}", 1)
        pipe.execute()

    print(f"# {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{len(symbols)} symbols x {len(TIMEFRAMES)} timeframes, "
          f"signals {[p.name for p in _plan.signals]}")  # fmt: skip
    wall, written = rounds()
    print(f"cold (every series, nothing cached): {wall * 1000:.0f} ms, {written} values")
    for label, tfs in (("1m close", ("1m",)), ("all close", TIMEFRAMES)):
        walls, values = [], []
        for step in range(1, args.repeat + 1):
            time.sleep(1.1)  # provisional values are paced (TP_SIGNAL_PACE_MS): all due again
            close(tfs, step if label == "1m close" else step + args.repeat)
            wall, written = rounds()
            walls.append(wall)
            values.append(written)
        med = statistics.median(walls)
        runs = ", ".join(f"{w * 1000:.0f}" for w in walls)
        n = statistics.median(values)  # one value written per evaluation
        print(f"{label}: median {med * 1000:.0f} ms (runs {runs}), {n:.0f} values written, "
              f"{n / med:,.0f} evaluations/s")  # fmt: skip


if __name__ == "__main__":
    main()
