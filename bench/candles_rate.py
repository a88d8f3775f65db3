"""Candles benchmark: one worker's aggregation rate, end-to-end latency, and memory over time.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/candles_rate.py aggregate --batches 0,250 --profile   # 1. throughput
    .venv/bin/python bench/candles_rate.py e2e --rate 9500 --seconds 30         # 2. latency
    .venv/bin/python bench/candles_rate.py e2e --rate 9500 --rss-minutes 30     # 3. memory
    .venv/bin/python bench/candles_rate.py e2e --upstream writer --signals off  # 4. the stage

**aggregate**: trades/s that one process folds into every default timeframe. A private
redis-server (CPU 1) is filled with ``--trades`` aggTrades of ``--symbols`` simulator instruments
(contiguous raw ids per symbol, times advancing at ``--market-rate`` trades/s, symbols drawn
uniformly: the most candles written per trade), encoded with ``core.schemas.encode`` into the
shards' trades streams as the feeder writes them. This process, pinned to CPU 0, then calls
``ShardBuilder.build()`` of every shard until everything is applied; only the build calls are
timed (wall, this process's CPU, redis-server's CPU). Entries reach group ``candles`` (pending,
acked by the build's write) through a Lua XREADGROUP that returns only a count, so delivering
costs this process nothing. ``--batches 0`` delivers everything first (a backlog caught up,
``MAX_ENTRIES`` per build); ``250`` delivers 250 entries per shard before each build (a worker
keeping up with a live feed). Each run checks that every trade was applied, with no gap.

**e2e**: the real processes (simulator ``--steady``, ``python -m feeds``, ``workers.consumer``
(``--consumers`` of them, ``--shard k/N``: the candle stage), the Procfile's dramatiq worker
(backfill); ``TP_CANDLE_HISTORY=0``), each started under ``taskset`` as in ``PIN`` (``--pin``).
``--rate`` is the simulator's aggTrades/s; the feeder writes about twice as many events (a
bookTicker per aggTrade, kline updates). Latency of a trade: the id time of the first candle-updates
entry holding a 1m candle of its symbol with ``last_trade_id`` >= the trade's last raw id, minus the
exchange event time ``E`` (``p50``..``max``: simulator, feeder, stream, the consumer's read and
build, write) or minus the trade's own stream entry time (``stage``: the candle stage alone). Each
of the ``--repeat`` windows follows ``--warmup`` seconds at the rate and counts every trade written
in it; the simulator is then paused (rate 0) while this process reads the window back, so that
reading never competes with the pipeline. CPU% is per process tree; ``other CPU`` is what processes
outside the benchmark used meanwhile (this machine is shared); ``shed`` counts trades the feeder
dropped (a window with shed > 0 measures an overloaded feeder).

**e2e --upstream writer**: the candle stage on its own, as it runs in a deployment where the
feeder and the exchange are not on its machine. In place of the simulator's market and the
feeder, a writer process (``PIN["writer"]``) runs the simulator's market model (``--steady``, same
instruments and weights) on the wall clock and writes what the feeder would, straight into the
streams: each aggTrade as a ``Trade`` and a ``BookTicker`` per trade, one ``XADD_MANY`` per stream
per 10-ms slice. No websocket, no JSON parsing: CPU 1 then carries Redis and a writer lighter than
simulator + feeder. The simulator still runs, at rate 0, for the REST calls (exchangeInfo,
backfill). ``E`` is the writer's clock when it made the trade, so ``p50``..``max`` add only the
writer's slice (≤ 10 ms) to ``stage``; the feeder's own latency is measured by
``bench/feeder_rate.py``.

**e2e --signals process|worker|off**: where ``evaluate_signals`` runs: in a process of its own
(``PIN["signals"]``), as the Procfile's ``signals`` process type (default); in the worker's
process, as before session 7; or nowhere (its queue is left alone): the candle stage as it runs
when the signals process has a machine of its own.

**e2e --rss-minutes M**: the same pipeline with the product's stream bounds, for M minutes; every
30 s the RSS of the consumer and worker trees and Redis's used_memory, then the Redis memory held
by each kind of stream and what the candle-updates streams will hold at their bound.
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import dataclasses
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402
from core.keys import ENTRY_FIELD, GROUP_CANDLES, Keys  # noqa: E402
from core.redis_clients import sync_client  # noqa: E402
from core.schemas import BookTicker, Candle, Trade, decode, encode  # noqa: E402
from demo.redis_server import RedisServer, free_port  # noqa: E402
from feeds.writer import XADD_MANY  # noqa: E402
from simulator.instruments import load_instruments  # noqa: E402
from simulator.model import MarketModel, SystemClock  # noqa: E402

SHARDS = 8
PIN: dict[str, int | None] = {"worker": 0, "consumer": 0, "signals": 0, "redis": 1,
                              "simulator": 1, "feeder": 1, "writer": 1, "bench": 1}  # fmt: skip
WRITER_RATE_KEY = "bench:writer:rate"  # the writer's aggTrades/s, set by Pipeline.rate
# Deliver up to ARGV[1] new entries to group 'candles' (pending, as the consumer's read leaves
# them) and return only how many, so that delivering costs the benchmark process nothing.
DELIVER = """
local r = redis.call('XREADGROUP', 'GROUP', 'candles', 'bench', 'COUNT', ARGV[1],
                     'STREAMS', KEYS[1], '>')
if r then return #r[1][2] end
return 0
"""
_CANDLE = [f.name for f in dataclasses.fields(Candle)]
SYM, TF, LAST = (2 + _CANDLE.index(n) for n in ("symbol", "timeframe", "last_trade_id"))


def pin(pid: int, cpu: int | None) -> None:
    """Pin every thread of ``pid`` (redis-server's background threads too) to ``cpu``."""
    for t in psutil.Process(pid).threads() if cpu is not None else ():
        os.sched_setaffinity(t.id, {cpu})


def tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def cpu_s(pid: int) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in tree(pid))


def busy_s() -> float:
    """Return the CPU seconds the whole machine has been busy (every process, ours or not)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - t.iowait


def calibrate() -> float:
    """Return microseconds per core.schemas.decode of a trade: this machine's speed right now."""
    data = encode(Trade("BTCUSDT", 1, 1, 2, Decimal("27785.1"), Decimal("0.014"), False, 1, 2, 3))
    t0 = time.perf_counter()
    for _ in range(50_000):
        decode(data, Trade)
    return (time.perf_counter() - t0) / 50_000 * 1e6


def pct(values: list[int], q: float) -> int:
    return values[min(len(values) - 1, int(len(values) * q))]


def show(row: dict[str, float]) -> str:
    return "  ".join(
        f"{k}={v:.0%}" if k.endswith("CPU") else f"{k}={v:,.0f}" for k, v in row.items()
    )


# --- 1. aggregation throughput of one process ---------------------------------------------------


def make_trades(total: int, symbols: int, market_rate: int, seed: int) -> list[list[bytes]]:
    """Return each shard's encoded aggTrades, in stream order."""
    rng = random.Random(seed)  # noqa: S311 - market data, not secrets
    insts = load_instruments(count=symbols, seed=seed)
    keys = Keys("tp", SHARDS)
    state = {i.symbol: [1_000, 5_000, i.start_price] for i in insts}  # agg id, next raw id, price
    start_ms = time.time_ns() // 1_000_000 - total * 1000 // market_rate
    out: list[list[bytes]] = [[] for _ in range(SHARDS)]
    for n in range(total):
        inst = rng.choice(insts)
        st = state[inst.symbol]
        st[2] = max(inst.tick, st[2] + inst.tick * rng.choice((-2, -1, 0, 0, 1, 2)))
        raw = rng.choice((1, 1, 1, 2, 3, 5))  # raw trades in this aggTrade
        ms = start_ms + n * 1000 // market_rate
        qty = max(inst.min_qty, inst.step * rng.randint(1, 200))
        t = Trade(inst.symbol, st[0], st[1], st[1] + raw - 1, inst.price_decimal(st[2]),
                  inst.qty_decimal(qty), rng.random() < 0.5, ms, ms + 3, ms + 5)  # fmt: skip
        out[keys.shard_of(inst.symbol)].append(encode(t))
        st[0], st[1] = st[0] + 1, st[1] + raw
    return out


def aggregate_run(
    server: RedisServer, payloads: list[list[bytes]], batch: int, prof: Any = None
) -> dict[str, float]:
    """Fill the streams, then build every shard until done; return the build calls' cost."""
    from workers.candles import MAX_ENTRIES, ShardBuilder  # after aggregate() has set the env

    keys, settings = Keys("tp", SHARDS), Settings.from_env()
    client = sync_client(server.url, max_connections=4, client_name="bench")
    client.flushall()
    xadd, deliver = client.register_script(XADD_MANY), client.register_script(DELIVER)
    for s, entries in enumerate(payloads):
        pipe = client.pipeline(transaction=False)
        for i in range(0, len(entries), 2000):
            xadd(keys=[keys.trades(s)], args=[10**9, *entries[i : i + 2000]], client=pipe)
        pipe.execute()
        for stream in (keys.trades(s), keys.klines(s)):
            client.xgroup_create(stream, GROUP_CANDLES, id="0", mkstream=True)
    builders = [ShardBuilder(client, keys, settings, s) for s in range(SHARDS)]
    redis_proc = psutil.Process(server._proc.pid)  # type: ignore[union-attr]

    def redis_cpu() -> float:
        return float(sum(redis_proc.cpu_times()[:2]))

    cost = {"trades": sum(map(len, payloads)), "wall_s": 0.0, "cpu_s": 0.0, "redis_cpu_s": 0.0,
            "builds": 0}  # fmt: skip
    live = set(range(SHARDS))
    while live:
        for s in sorted(live):
            if not deliver(keys=[keys.trades(s)], args=[batch or 10**9]):
                live.discard(s)
            while True:  # a build takes at most MAX_ENTRIES: repeat until one takes fewer
                r0, t0, c0 = redis_cpu(), time.perf_counter(), time.process_time()
                report = prof.runcall(builders[s].build) if prof else builders[s].build()
                cost["wall_s"] += time.perf_counter() - t0
                cost["cpu_s"] += time.process_time() - c0
                cost["redis_cpu_s"] += redis_cpu() - r0
                cost["builds"] += 1
                if report.trades < MAX_ENTRIES:
                    break
    metrics = [client.hgetall(keys.candle_metrics(s)) for s in range(SHARDS)]
    applied = sum(int(m.get(b"trades_applied", 0)) for m in metrics)
    gaps = sum(int(m.get(b"gaps", 0)) for m in metrics)
    pending = sum(client.xpending(keys.trades(s), GROUP_CANDLES)["pending"] for s in range(SHARDS))
    assert (applied, gaps, pending) == (cost["trades"], 0, 0), (applied, gaps, pending)
    client.close()
    return cost


def aggregate(args: argparse.Namespace, tmp: Path) -> None:
    server = RedisServer(tmp / "redis")
    server.start()
    pin(server._proc.pid, PIN["redis"])  # type: ignore[union-attr]
    # workers.candles imports tasks.broker, which reads the settings at import.
    os.environ.update(REDIS_URL=server.url, TP_DEMO="1", TP_STREAM_SHARDS=str(SHARDS),
                      TP_NAMESPACE="tp", TP_LOG_LEVEL="WARNING")  # fmt: skip
    pin(os.getpid(), PIN["worker"])
    payloads = make_trades(args.trades, args.symbols, args.market_rate, args.seed)
    try:
        for batch in (int(b) for b in args.batches.split(",")):
            runs = [aggregate_run(server, payloads, batch) for _ in range(args.repeat)]
            for r in runs:
                print(f"  run: {r['trades'] / r['wall_s']:,.0f} trades/s wall, "
                      f"{r['trades'] / r['cpu_s']:,.0f} per CPU-s", flush=True)  # fmt: skip
            if runs:
                m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(f"batch={batch or 'all'}  " + show({
                    "trades": m["trades"], "builds": m["builds"], "wall ms": m["wall_s"] * 1000,
                    "trades/s": m["trades"] / m["wall_s"], "trades/CPU-s": m["trades"] / m["cpu_s"],
                    "process CPU": m["cpu_s"] / m["wall_s"],
                    "redis CPU": m["redis_cpu_s"] / m["wall_s"]}), flush=True)  # fmt: skip
            if args.profile:
                prof = cProfile.Profile()
                aggregate_run(server, payloads, batch, prof)
                stats = pstats.Stats(prof).strip_dirs()
                print(f"\n# cProfile of the build calls, batch={batch or 'all'}")
                stats.sort_stats("cumulative").print_stats(25)
                stats.sort_stats("tottime").print_stats(15)
    finally:
        server.stop(save=False)


# --- 2 and 3. the real pipeline ----------------------------------------------------------------


def write_market(redis_url: str, symbols: int, maxlen: int) -> None:
    """The ``writer`` upstream: the simulator's market model written as the feeder would."""
    r = redis.Redis.from_url(redis_url)
    keys = Keys("tp", SHARDS)
    insts = load_instruments(count=symbols)  # the simulator's, with its default seed
    shard = [keys.shard_of(i.symbol) for i in insts]
    model = MarketModel(insts, SystemClock(), rate=0, steady=True, trade_retention=100,
                        bar_retention=10, max_catchup_ms=1_000)  # fmt: skip
    xadd = r.register_script(XADD_MANY)
    next_poll = 0
    while True:
        now = time.time_ns() // 1_000_000
        if now >= next_poll:
            model.set_rate(float(r.get(WRITER_RATE_KEY) or 0))
            next_poll = now + 100
        trades: list[list[bytes]] = [[] for _ in range(SHARDS)]
        book: list[list[bytes]] = [[] for _ in range(SHARDS)]
        for ev in model.step(now).events:
            inst, a = insts[ev.i], ev.agg
            trades[shard[ev.i]].append(encode(Trade(
                inst.symbol, a.a, a.f, a.l, inst.price_decimal(a.p), inst.qty_decimal(a.q), a.m,
                a.T, now, now)))  # fmt: skip
            bid, ask = inst.price_decimal(ev.bid), inst.price_decimal(ev.ask)
            book[shard[ev.i]].append(encode(BookTicker(
                inst.symbol, ev.u, bid, inst.qty_decimal(ev.bid_qty), ask,
                inst.qty_decimal(ev.ask_qty), a.T, now, now)))  # fmt: skip
        with r.pipeline(transaction=False) as pipe:
            for s in range(SHARDS):
                if trades[s]:
                    xadd(keys=[keys.trades(s)], args=[maxlen, *trades[s]], client=pipe)
                    xadd(keys=[keys.book(s)], args=[maxlen, *book[s]], client=pipe)
            pipe.execute()
        time.sleep(max(0.0, 0.010 - (time.time_ns() // 1_000_000 - now) / 1000))


class Pipeline:
    """redis-server, simulator, feeder (or writer), consumer and worker, pinned as in PIN."""

    def __init__(self, symbols: int, tmp: Path, env: dict[str, str], upstream: str = "feeder",
                 signals: str = "process", consumers: int = 1) -> None:  # fmt: skip
        self.tmp = tmp
        self.upstream = upstream
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        self.pids = {"redis": self.redis._proc.pid}  # type: ignore[union-attr]
        pin(self.pids["redis"], PIN["redis"])
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        rest, ws = free_port(), free_port()
        self.spawn("simulator", ["-m", "simulator", "--rest-port", str(rest), "--ws-port", str(ws),
                                 "--symbols", str(symbols), "--rate", "0", "--steady",
                                 "--trade-retention", "1000", "--bar-retention", "100",
                                 "--log-level", "WARNING"], None)  # fmt: skip
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{rest}", timeout=10)
        while not self._ping():
            time.sleep(0.1)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
               "REDIS_URL": self.redis.url, "TP_DEMO": "1", "TP_STREAM_SHARDS": str(SHARDS),
               "TP_REST_URL": f"http://127.0.0.1:{rest}", "TP_WS_URL": f"ws://127.0.0.1:{ws}",
               "TP_LOG_LEVEL": "WARNING", "TP_CANDLE_HISTORY": "0", **env}  # fmt: skip
        if upstream == "writer":
            maxlen = env.get(
                "TP_STREAM_MAXLEN", str(Settings.from_env({"TP_DEMO": "1"}).stream_maxlen)
            )
            self.spawn("writer", [str(Path(__file__).resolve()), "_writer", "--redis-url",
                                  self.redis.url, "--symbols", str(symbols), "--maxlen", maxlen],
                       None)  # fmt: skip
        else:
            self.spawn("feeder", ["-m", "feeds"], env)
        for k in range(1, consumers + 1):  # consumer k of n: PIN["consumer"] + k - 1
            name = "consumer" if k == 1 else f"consumer{k}"
            PIN.setdefault(name, None if PIN["consumer"] is None else PIN["consumer"] + k - 1)
            self.spawn(name, ["-m", "workers.consumer", "--shard", f"{k}/{consumers}"], env)
        dramatiq = ["-m", "dramatiq", "--processes", "1", "--worker-shutdown-timeout", "25000"]
        queues = [] if signals == "worker" else ["--queues", "backfill"]
        # The Procfile's worker (with its --queues unless signals=worker).
        self.spawn("worker", [*dramatiq, "tasks.backfill", "tasks.signals", *queues,
                              "--threads", "8"], env)  # fmt: skip
        if signals == "process":  # the Procfile's signals process type
            self.spawn("signals", [*dramatiq, "tasks.signals", "--queues", "signals",
                                   "--threads", "4"], env)  # fmt: skip
        self.r = redis.Redis.from_url(self.redis.url)
        self.keys = Keys("tp", SHARDS)
        while not (
            (upstream == "writer" or self.r.hlen(self.keys.feed_health()))
            and self.r.hlen(self.keys.consumer_health()) == consumers
        ):
            time.sleep(0.2)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None) -> None:
        taskset = [] if PIN[name] is None else ["taskset", "-c", str(PIN[name])]
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen([*taskset, sys.executable, *args], cwd=ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        self.pids[name] = self.procs[name].pid

    def _ping(self) -> bool:
        try:
            return self.http.get("/fapi/v1/ping").status_code == 200
        except httpx.HTTPError:
            return False

    def rate(self, aggtrades_per_s: float) -> None:
        if self.upstream == "writer":
            self.r.set(WRITER_RATE_KEY, aggtrades_per_s)
        else:
            self.http.post("/sim/rate", json={"rate": aggtrades_per_s})

    def cpu(self) -> dict[str, float]:
        return {name: cpu_s(pid) for name, pid in self.pids.items()}

    def snapshot(self) -> dict[str, Any]:
        """Return the counters a window is measured by (each a total since the start)."""
        metrics = [self.r.hmget(self.keys.candle_metrics(s), "builds", "trades_applied")
                   for s in range(SHARDS)]  # fmt: skip
        feeder = orjson.loads(self.r.hget(self.keys.feed_health(), "feeder-1of1") or b"{}")
        return {"t": time.time(), "busy": busy_s(), "cpu": self.cpu(),
                "builds": sum(int(b or 0) for b, _ in metrics),
                "applied": sum(int(t or 0) for _, t in metrics),
                "shed": feeder["counters"]["shed_trades"] if feeder else 0}  # fmt: skip

    def stage_reports(self, until: float) -> dict[str, int]:
        """Until ``until``, collect the stages' own figures from the health reports (each a
        [p50, p99, max] per 2-s period, core/latency.py): the consumer's read age (the stream),
        its builds' run time and their oldest entry's age when written (the stage as the consumer
        sees it). Return the largest p99 of each over the periods."""
        worst = {"read age p99": 0, "build run p99": 0, "build age p99": 0}
        seen: set[tuple[bytes, int]] = set()

        def note(label: str, figures: list[int] | None) -> None:
            if figures:
                worst[label] = max(worst[label], figures[1])

        while time.time() < until:
            time.sleep(min(0.5, max(0.0, until - time.time())))
            for name, raw in self.r.hgetall(self.keys.consumer_health()).items():
                rep = orjson.loads(raw)
                if (name, rep["at_ms"]) in seen:
                    continue
                seen.add((name, rep["at_ms"]))
                note("read age p99", rep.get("read_age_ms"))
                note("build run p99", rep.get("build_ms"))
                note("build age p99", rep.get("stage_ms"))
        return worst

    def report(self) -> None:
        """Print the consumer's health and where Redis's memory is."""
        for name, raw in self.r.hgetall(self.keys.consumer_health()).items():
            print(f"consumer health {name.decode()}: {raw.decode()}")
        totals: dict[str, int] = {}
        for s in range(SHARDS):
            for k, v in self.r.hgetall(self.keys.candle_metrics(s)).items():
                if v.isdigit():
                    totals[k.decode()] = totals.get(k.decode(), 0) + int(v)
        print(f"candle metrics (all shards): {totals}")
        info = self.r.info("memory")
        print(f"redis used_memory={info['used_memory'] / 2**20:.1f} MiB  "
              f"peak={info['used_memory_peak'] / 2**20:.1f} MiB  "
              f"rss={info['used_memory_rss'] / 2**20:.1f} MiB  "
              f"fragmentation={info['mem_fragmentation_ratio']}")  # fmt: skip
        bound = Settings.from_env({"TP_DEMO": "1"}).candles.updates_maxlen
        for kind in ("trades", "book", "klines", "candle_updates"):
            names = [getattr(self.keys, kind)(s) for s in range(SHARDS)]
            used = sum(self.r.memory_usage(n, samples=0) or 0 for n in names) / 2**20
            length = sum(self.r.xlen(n) for n in names)
            at_bound = ""
            if kind == "candle_updates" and length:
                full = used / length * bound * SHARDS
                at_bound = f"  at TP_UPDATES_MAXLEN={bound:,}: ~{full:,.0f} MiB"
            print(f"  {kind:<15} {length:>9,} entries {used:8.1f} MiB{at_bound}")

    def close(self) -> None:
        order = [n for n in ("worker", "signals", *sorted(n for n in self.procs
                                                          if n.startswith("consumer")),
                             "feeder", "writer", "simulator") if n in self.procs]  # fmt: skip
        for name in order:
            self.procs[name].terminate()
        for name in order:
            try:
                self.procs[name].wait(30)
            except subprocess.TimeoutExpired:
                self.procs[name].kill()
        self.redis.stop(save=False)


def latencies(p: Pipeline, since_ms: int, until_ms: int) -> tuple[list[int], list[int], int]:
    """Return the sorted latencies of the trades written in the window, from the exchange event
    and from the trades stream entry, and how many trades no candle update covered."""
    exchange, stage, missing = [], [], 0
    for s in range(SHARDS):
        seen: dict[str, tuple[list[int], list[int]]] = {}  # symbol -> (entry ms, running max id)
        oldest = p.r.xrange(p.keys.candle_updates(s), count=1)
        if oldest and int(oldest[0][0].split(b"-")[0]) > since_ms:  # would inflate latencies
            raise SystemExit(f"shard {s}: candle-updates trimmed into the window (raise the "
                             "bench's TP_UPDATES_MAXLEN)")  # fmt: skip
        updates = p.r.xrange(p.keys.candle_updates(s), f"{since_ms}-0", f"{until_ms + 3000}-0")
        for entry_id, fields in updates:
            ms = int(entry_id.split(b"-")[0])
            for c in orjson.loads(fields[b"d"]):
                if c[TF] == "1m":
                    times, ids = seen.setdefault(c[SYM], ([], []))
                    times.append(ms)
                    ids.append(max(c[LAST], ids[-1] if ids else c[LAST]))
        for entry_id, fields in p.r.xrange(p.keys.trades(s), f"{since_ms}-0", f"{until_ms}-0"):
            t = decode(fields[ENTRY_FIELD], Trade)
            times, ids = seen.get(t.symbol, ([], []))
            i = bisect.bisect_left(ids, t.last_id)
            if i == len(ids):
                missing += 1
                continue
            exchange.append(times[i] - t.event_time_ms)
            stage.append(times[i] - int(entry_id.split(b"-")[0]))
    return sorted(exchange), sorted(stage), missing


def e2e(args: argparse.Namespace, tmp: Path) -> None:
    # Streams long enough to still hold the window when it is read back.
    bounds = {"TP_STREAM_MAXLEN": "200000", "TP_UPDATES_MAXLEN": "50000"}
    p = Pipeline(args.symbols, tmp, bounds, args.upstream, args.signals, args.consumers)
    pin(os.getpid(), PIN["bench"])
    try:
        rows = []
        for _ in range(args.repeat):
            p.rate(args.rate)
            time.sleep(args.warmup)
            w0 = p.snapshot()
            stages = p.stage_reports(time.time() + args.seconds)
            w1 = p.snapshot()
            time.sleep(3)  # the window's last trades reach their candles
            p.rate(0)  # the pipeline idles while this process reads the window back
            lat, stage, missing = latencies(p, int(w0["t"] * 1000), int(w1["t"] * 1000))
            if not lat:
                raise SystemExit(f"no trade reached a candle ({missing} written); logs: {tmp}")
            dt = w1["t"] - w0["t"]
            cpu = {f"{k} CPU": (w1["cpu"][k] - w0["cpu"][k]) / dt for k in w0["cpu"]}
            rows.append(
                {
                    "p50": pct(lat, 0.5),
                    "p99": pct(lat, 0.99),
                    "max": lat[-1],
                    "stage p50": pct(stage, 0.5),
                    "stage p99": pct(stage, 0.99),
                    "stage max": stage[-1],
                    "missing": missing,
                    "written/s": (len(lat) + missing) / dt,
                    **{f"{k}/s": (w1[k] - w0[k]) / dt for k in ("applied", "builds")},
                    "shed": w1["shed"] - w0["shed"],
                    **stages,
                    **cpu,
                    "other CPU": (w1["busy"] - w0["busy"]) / dt - sum(cpu.values()),
                }
            )
            print("  " + show(rows[-1]), flush=True)
        print(f"median of {len(rows)}: " + show({k: statistics.median(r[k] for r in rows)
                                                 for k in rows[0]}))  # fmt: skip
        p.report()
    finally:
        p.close()


def rss(args: argparse.Namespace, tmp: Path) -> None:
    p = Pipeline(args.symbols, tmp, {}, args.upstream, args.signals)  # the product's bounds
    pin(os.getpid(), PIN["bench"])
    try:
        p.rate(args.rate)
        start = time.time()
        samples = []
        while time.time() - start < args.rss_minutes * 60:
            time.sleep(30)
            mib = [sum(q.memory_info().rss for q in tree(p.pids[n])) / 2**20
                   for n in ("consumer", "worker")]  # fmt: skip
            samples.append((*mib, p.r.info("memory")["used_memory"] / 2**20))
            print(f"t={time.time() - start:5.0f}s consumer_rss={mib[0]:6.1f} MiB "
                  f"worker_rss={mib[1]:6.1f} MiB redis_used={samples[-1][2]:7.1f} MiB",
                  flush=True)  # fmt: skip
        warm = samples[len(samples) // 6 :]  # after the first sixth (warm-up)
        for i, name in enumerate(("consumer rss", "worker rss", "redis used_memory")):
            vals = [s[i] for s in warm]
            print(f"{name}: first={vals[0]:.1f} last={vals[-1]:.1f} max={max(vals):.1f} MiB")
        p.report()
    finally:
        p.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("aggregate", "e2e", "_writer"))
    parser.add_argument(
        "--upstream",
        choices=("feeder", "writer"),
        default="feeder",
        help="e2e: simulator + feeder, or a writer process (the candle stage)",
    )
    parser.add_argument("--signals", choices=("process", "worker", "off"), default="process",
                        help="e2e: evaluate_signals in a process of its own (the Procfile's; "
                        "PIN['signals']), in the worker's, or not at all")  # fmt: skip
    parser.add_argument("--redis-url", help="_writer: the pipeline's Redis")
    parser.add_argument("--maxlen", type=int, default=200_000, help="_writer: stream MAXLEN ~")
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--consumers", type=int, default=1,
                        help="e2e: consumer processes (--shard k/N), pinned to PIN['consumer'], "
                        "the next CPU...")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pin", default="", help="e.g. worker=0,feeder=1 or 'none' (see PIN)")
    parser.add_argument("--trades", type=int, default=1_000_000, help="aggregate: trades")
    parser.add_argument("--market-rate", type=int, default=20_000, help="aggregate: trades/s")
    parser.add_argument("--batches", default="0,250", help="aggregate: per shard per build, 0=all")
    parser.add_argument("--profile", action="store_true", help="aggregate: cProfile each batch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=9500, help="e2e: simulator aggTrades/s")
    parser.add_argument("--warmup", type=float, default=20, help="e2e: before each window")
    parser.add_argument("--seconds", type=float, default=30, help="e2e: measured window")
    parser.add_argument("--rss-minutes", type=float, default=0, help="e2e: sample memory instead")
    args = parser.parse_args()
    if args.what == "_writer":  # a Pipeline's upstream process (--upstream writer)
        write_market(args.redis_url, args.symbols, args.maxlen)
        return
    for part in filter(None, args.pin.split(",")):
        name, _, cpu = part.partition("=")
        PIN.update(dict.fromkeys(PIN) if name == "none" else {name: int(cpu)})
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
          f"python={platform.python_version()} pin={PIN} "
          f"calibration={calibrate():.2f} us/decode", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run = aggregate if args.what == "aggregate" else rss if args.rss_minutes else e2e
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
