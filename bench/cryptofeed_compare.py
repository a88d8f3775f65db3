"""Our feeder against cryptofeed 2.4.1, side by side: events per CPU-second and max sustained rate.

Both ingest the same simulator (same symbols, aggTrade + bookTicker + kline_1m) into a
redis-server of their own: ours is ``python -m feeds`` driven exactly as ``bench/feeder_rate.py``'s
``Rig`` drives it; theirs is cryptofeed's ``BinanceFutures`` feed with its own Redis Streams
backends (``TradeStream``, ``TickerStream``, ``CandlesStream``), installed from PyPI into a
virtualenv of its own (never the project's ``.venv``).

Run by hand (not part of the test suite)::

    .venv/bin/python bench/cryptofeed_compare.py \\
        --rates 2500,5000,7500,10000,12500,15000,20000,25000,30000,40000 --seconds 10 --repeat 3
    .venv/bin/python bench/cryptofeed_compare.py --symbols 50 --rates 2000 --seconds 4 \\
        --repeat 1                                                      # a quick check

The first run creates ``$XDG_CACHE_HOME/tradepipe-bench/cryptofeed-2.4.1`` (``--venv``) with
``python -m venv`` and ``pip install cryptofeed==2.4.1 redis``, and writes ``cf_runner.py`` there.

Layout on a 2-core machine, as feeder_rate.py: the ingest process (ours or cryptofeed) alone on
CPU 0; the simulator, redis-server and this script on CPU 1. Each pass starts a fresh rig per
system and climbs the ``--rates`` ladder (the simulator's aggTrades/s over all symbols; each also
moves the book, one bookTicker, and kline updates add up to 4 per symbol per second). Passes
alternate: ours, cryptofeed, ours, cryptofeed... and the report gives medians over ``--repeat``.

Per level, after a 3 s warm-up, one ``--seconds`` window:

- sent: frames the simulator published (``/sim/state`` ws.framesPublished);
- landed: entries added to the system's data streams (XINFO STREAM ``entries-added``, so
  trimming does not matter): trades, book and klines for both; ours also carries markPrice@1s
  (built into the feeder), counted in landed/sent but not in events per CPU-second;
- events per CPU-second: landed aggTrade + bookTicker + kline entries / CPU-seconds (user +
  system, psutil) of the ingest process over the same window;
- latency: Redis entry id (the server's clock at XADD) minus the exchange event time ``E`` of
  trade and bookTicker entries. cryptofeed keeps no ``E`` for trades (its Trade carries ``T``),
  so its trade latencies are from ``T``: longer by the simulator's E - T (10-20 ms: T falls in
  the 10 ms slice before the one that publishes it), a bias against cryptofeed of that size.

A level is sustained when landed/sent >= ``--min-landed`` (0.95), p99 latency < ``--p99-ms``
(1000), the simulator disconnected no one for a full send buffer and the ingest process is alive.
A pass stops at its first level that is not sustained. A level where the simulator itself fell
behind (made < 95 % of the offered aggTrades, or skipped time) is marked sim-limited and ends
the pass too. A system's max sustained rate is the lower median over its passes of each pass's
highest sustained level (a rate of the ladder); when that pass never failed (the simulator or
the ladder's top ended it) it is shown as a lower bound (``>=``). Events per CPU-second and p99
are compared at the highest rate both systems sustained in every pass.

cryptofeed runs as shipped (its defaults: uvloop, backends in-process) but for addresses and one
input fix. The simulator splits streams by route as Binance has since 2026-04 (``/public``:
bookTicker; ``/market``: aggTrade, kline; its unrouted ``/stream``, which cryptofeed 2.4.1 uses,
carries bookTicker only) and serves plain ws://, so the runner gives two BinanceFutures feeds
(one per route) the simulator's addresses and opens their ``wss://`` addresses as ``ws://``
(cryptofeed's WSAsyncConn accepts nothing but wss://). The simulator lists the dated
BTCUSDT_210924 and ETHUSDT_210924 as PERPETUAL; cryptofeed would map them onto BTC-USDT-PERP and
ETH-USDT-PERP and subscribe them instead of BTCUSDT and ETHUSDT (the busiest symbols), so the
runner relabels them CURRENT_QUARTER before cryptofeed parses exchangeInfo: it then subscribes
the same 300 symbols as ours. ``candle_closed_only=False`` makes it write every kline update,
as ours does (its default writes closed candles only).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import orjson
import psutil
import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from feeder_rate import SHARDS, Rig, pin  # noqa: E402

from demo.redis_server import RedisServer, _die_with_parent, free_port  # noqa: E402

CF_VERSION = "2.4.1"
WARMUP_S = 3.0
DEFAULT_RATES = "2500,5000,7500,10000,12500,15000,20000,25000,30000,40000"
LATENCY_SAMPLE = 40_000  # cryptofeed entries read back per window for latency (whole streams)
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tradepipe-bench"

# Runs in the cryptofeed venv: stock cryptofeed but for the addresses and the exchangeInfo
# relabel described in the module docstring.
RUNNER = '''\
"""cryptofeed BinanceFutures -> its own Redis Streams backends, on the tradepipe simulator.

Written by bench/cryptofeed_compare.py. Usage: python cf_runner.py REST WS REDIS_PORT LOG
"""
import dataclasses
import sys

import cryptofeed.connection
from cryptofeed import FeedHandler
from cryptofeed.backends.redis import CandlesStream, TickerStream, TradeStream
from cryptofeed.defines import CANDLES, TICKER, TRADES
from cryptofeed.exchanges import BinanceFutures

rest_url, ws_url, redis_port, log_file = sys.argv[1:5]
_connect = cryptofeed.connection.connect


def connect(address, **kwargs):
    # WSAsyncConn refuses all but wss:// addresses; the simulator serves plain ws://.
    return _connect(address.replace("wss://", "ws://", 1), **kwargs)


cryptofeed.connection.connect = connect


class SimFutures(BinanceFutures):
    rest_endpoints = [
        dataclasses.replace(BinanceFutures.rest_endpoints[0], address=rest_url, sandbox=None)
    ]

    @classmethod
    def _parse_symbol_data(cls, data):
        # The simulator serves every symbol as PERPETUAL, the dated BTCUSDT_210924 too; as a
        # perpetual it would take BTC-USDT-PERP from BTCUSDT (the last one listed wins). Label
        # dated contracts as Binance does, so both keep a name of their own.
        for info in data["symbols"]:
            if "_" in info["symbol"] and info.get("contractType") == "PERPETUAL":
                info["contractType"] = "CURRENT_QUARTER"
        return super()._parse_symbol_data(data)


def on_route(name, route):
    stock = BinanceFutures.websocket_endpoints[0]
    address = ws_url.replace("ws://", "wss://", 1) + route
    ws = dataclasses.replace(stock, address=address, sandbox=None)
    return type(name, (SimFutures,), {"websocket_endpoints": [ws]})


Public = on_route("SimPublic", "/public")  # bookTicker
Market = on_route("SimMarket", "/market")  # aggTrade, kline_1m
# Every listed symbol, as our feeder takes (PINDEX names are premium-index candles only).
symbols = [s for s in Public.symbols() if not s.endswith("-PINDEX")]
print("symbols", len(symbols), flush=True)
kw = {"host": "127.0.0.1", "port": int(redis_port)}
fh = FeedHandler(config={"log": {"filename": log_file, "level": "WARNING"}})
fh.add_feed(Public(symbols=symbols, channels=[TICKER], callbacks={TICKER: TickerStream(**kw)}))
fh.add_feed(Market(symbols=symbols, channels=[TRADES, CANDLES], candle_closed_only=False,
                   callbacks={TRADES: TradeStream(**kw), CANDLES: CandlesStream(**kw)}))
fh.run()
'''


# --- cryptofeed's virtualenv -------------------------------------------------------------------


def ensure_cryptofeed(venv: Path) -> tuple[Path, Path, str]:
    """Create ``venv`` with cryptofeed from PyPI if needed; return (python, runner, versions)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"# creating {venv} (pip install cryptofeed=={CF_VERSION} redis)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if package_versions(python).get("cryptofeed") != CF_VERSION:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"cryptofeed=={CF_VERSION}", "redis"], check=True)  # fmt: skip
    runner = venv / "cf_runner.py"
    runner.write_text(RUNNER)
    versions = package_versions(python)
    return python, runner, " ".join(f"{k}={v}" for k, v in versions.items())


def package_versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m\n"
        "for p in ('cryptofeed', 'redis', 'websockets', 'uvloop', 'yapic.json', 'aiohttp'):\n"
        "    try: print(p, m.version(p))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(line.split() for line in out.stdout.splitlines())


# --- the two systems ---------------------------------------------------------------------------


class Side(Protocol):
    name: str
    proc: subprocess.Popen[bytes]
    http: httpx.Client
    r: redis.Redis
    redis_pid: int
    sim_pid: int

    def rate(self, aggtrades_per_s: float) -> None: ...
    def stream_keys(self) -> tuple[list[str], list[str]]: ...
    def new_level(self) -> None: ...
    def latencies_ms(self, since_ms: int, until_ms: int, added: dict[str, int]) -> list[int]: ...
    def sample(self) -> str: ...
    def close(self) -> None: ...


class Ours:
    """feeder_rate.py's Rig (redis-server + simulator + ``python -m feeds``) as a Side."""

    name = "ours"

    def __init__(self, symbols: int, tmp: Path) -> None:
        self.rig = Rig(symbols, tmp)
        self.proc, self.http, self.r = self.rig.feeder, self.rig.http, self.rig.r
        self.redis_pid, self.sim_pid = self.rig.redis._proc.pid, self.rig.sim.pid  # type: ignore[union-attr]
        k = self.rig.keys
        self.common = [x for s in range(SHARDS) for x in (k.trades(s), k.book(s), k.klines(s))]
        self.extra = [k.mark(s) for s in range(SHARDS)]  # markPrice@1s: the feeder always has it

    def rate(self, aggtrades_per_s: float) -> None:
        self.rig.rate(aggtrades_per_s)

    def stream_keys(self) -> tuple[list[str], list[str]]:
        return self.common, self.extra

    def new_level(self) -> None:
        pass  # its streams are capped (MAXLEN ~ 200000)

    def latencies_ms(self, since_ms: int, until_ms: int, added: dict[str, int]) -> list[int]:
        return self.rig.latencies_ms(since_ms, until_ms)

    def sample(self) -> str:
        entries = self.r.xrevrange(self.rig.keys.trades(0), count=1)
        return f"{self.rig.keys.trades(0)} {entries[0] if entries else None}"

    def close(self) -> None:
        self.rig.close()


def start_simulator(symbols: int, rest: int, ws: int) -> subprocess.Popen[bytes]:
    """The simulator exactly as Rig starts it, pinned to CPU 1."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--rest-port", str(rest), "--ws-port", str(ws),
         "--symbols", str(symbols), "--rate", "0", "--steady", "--trade-retention", "1000",
         "--bar-retention", "100", "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip
    pin(sim.pid, 1)
    return sim


class Cryptofeed:
    """redis-server + simulator + cryptofeed's runner, wired together on free ports."""

    name = "cryptofeed"

    def __init__(self, symbols: int, tmp: Path, python: Path, runner: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        pin(self.redis._proc.pid, 1)  # type: ignore[union-attr]
        rest, ws = free_port(), free_port()
        self.sim = start_simulator(symbols, rest, ws)
        self.redis_pid, self.sim_pid = self.redis._proc.pid, self.sim.pid  # type: ignore[union-attr]
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{rest}", timeout=10)
        wait_for_ping(self.http)
        self.log, out = tmp / "cryptofeed.log", tmp / "cryptofeed.out"
        self._out: IO[bytes] = out.open("wb")
        self.proc = subprocess.Popen(
            [str(python), str(runner), f"http://127.0.0.1:{rest}", f"ws://127.0.0.1:{ws}",
             str(self.redis.port), str(self.log)],
            cwd=tmp, stdout=self._out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )  # fmt: skip
        pin(self.proc.pid, 0)
        self.r = redis.Redis.from_url(self.redis.url)
        self.symbols = self._wait_subscribed(out)

    def _wait_subscribed(self, out: Path, timeout_s: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_s
        count = 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if self.proc.poll() is not None:
                break
            words = out.read_text().split()
            if not count and len(words) >= 2 and words[0] == "symbols":
                count = int(words[1])
            ws = self.http.get("/sim/state").json()["ws"]
            if count and ws["subscribedStreams"] >= 3 * count:
                return count
        tail = out.read_text()[-2000:] + (self.log.read_text()[-2000:] if self.log.exists() else "")
        self.close()
        raise RuntimeError(f"cryptofeed did not subscribe within {timeout_s:.0f} s:\n{tail}")

    def rate(self, aggtrades_per_s: float) -> None:
        self.http.post("/sim/rate", json={"rate": aggtrades_per_s})

    def stream_keys(self) -> tuple[list[str], list[str]]:
        keys = sorted(k.decode() for k in self.r.scan_iter(match="*-BINANCE_FUTURES-*", count=5000))
        return keys, []

    def new_level(self) -> None:
        # Its streams have no MAXLEN: drop the last level's entries (entries-added restarts with
        # the stream, before this level's first snapshot).
        keys = self.stream_keys()[0]
        for i in range(0, len(keys), 500):
            self.r.unlink(*keys[i : i + 500])

    def latencies_ms(self, since_ms: int, until_ms: int, added: dict[str, int]) -> list[int]:
        # Whole streams of every n-th symbol, ~LATENCY_SAMPLE entries: spread over the window.
        keys = [k for k in sorted(added) if k.startswith(("trades-", "ticker-"))]
        stride = max(1, math.ceil(sum(added[k] for k in keys) / LATENCY_SAMPLE))
        pipe = self.r.pipeline(transaction=False)
        for key in keys[::stride]:
            pipe.xrange(key, f"{since_ms}-0", f"{until_ms}-0")
        out: list[int] = []
        for entries in pipe.execute():
            for entry_id, fields in entries:
                event_ms = round(float(fields[b"timestamp"]) * 1000)  # E (ticker), T (trade)
                out.append(int(entry_id.split(b"-")[0]) - event_ms)
        return out

    def sample(self) -> str:
        key = next((k for k in self.stream_keys()[0] if k.startswith("trades-")), None)
        entries = self.r.xrevrange(key, count=1) if key else []
        return f"{key} {entries[0] if entries else None} ({self.symbols} symbols)"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()
        self.sim.terminate()
        self.sim.wait(20)
        self.redis.stop(save=False)


def wait_for_ping(http: httpx.Client) -> None:
    for _ in range(100):
        try:
            http.get("/fapi/v1/ping")
            return
        except httpx.HTTPError:
            time.sleep(0.1)


# --- one level ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    t: float
    cpu_s: float  # the ingest process
    redis_cpu_s: float
    sim_cpu_s: float
    published: int  # frames the simulator published to a subscriber
    made: int  # aggTrades the simulator's model made
    skipped_ms: int  # virtual time the simulator skipped, behind
    slow: int  # clients it disconnected for a full send buffer
    common: dict[str, int]  # entries-added per stream: trades, book, klines
    extra: dict[str, int]  # ours only: markPrice


def entries_added(r: redis.Redis, keys: list[str]) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_stream(key)
    replies = pipe.execute(raise_on_error=False)  # a stream not created yet: an error, 0
    return {
        k: int(x["entries-added"])
        for k, x in zip(keys, replies, strict=True)
        if isinstance(x, dict)
    }


def cpu_seconds(proc: psutil.Process) -> float:
    cpu = proc.cpu_times()
    return float(cpu.user + cpu.system)


def snapshot(side: Side, procs: tuple[psutil.Process, psutil.Process, psutil.Process]) -> Snapshot:
    """Read the counters and the ingest process's CPU, within a few ms of each other."""
    t = time.time()
    state = side.http.get("/sim/state").json()
    common, extra = side.stream_keys()
    added_common, added_extra = entries_added(side.r, common), entries_added(side.r, extra)
    ingest, redis_server, sim = (cpu_seconds(p) for p in procs)
    return Snapshot(t, ingest, redis_server, sim, state["ws"]["framesPublished"],
                    state["model"]["aggTrades"], state["model"]["skippedMs"],
                    state["ws"]["slowDisconnects"], added_common, added_extra)  # fmt: skip


def kind_of(key: str) -> str:
    """trades, book or klines, for our keys (tp:{s0}:trades) and cryptofeed's (trades-...)."""
    for kind, marks in (("trades", (":trades", "trades-")), ("book", (":book", "ticker-")),
                        ("klines", (":klines", "candles-"))):  # fmt: skip
        if any(m in key for m in marks):
            return kind
    return "other"


def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: v - a.get(k, 0) for k, v in b.items()}


def measure(side: Side, rate: float, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    side.rate(rate)
    side.new_level()
    time.sleep(WARMUP_S)
    procs = (psutil.Process(side.proc.pid), psutil.Process(side.redis_pid),
             psutil.Process(side.sim_pid))  # fmt: skip
    s0 = snapshot(side, procs)
    time.sleep(seconds)
    s1 = snapshot(side, procs)
    dt = s1.t - s0.t
    added = delta(s0.common, s1.common)
    landed = sum(added.values())
    landed_all = landed + sum(delta(s0.extra, s1.extra).values())
    sent = s1.published - s0.published
    cpu_s = s1.cpu_s - s0.cpu_s
    lat = sorted(side.latencies_ms(int(s0.t * 1000), int(s1.t * 1000), added))
    row: dict[str, Any] = {
        "system": side.name,
        "rate": rate,
        "made_per_s": (s1.made - s0.made) / dt,
        "sent_per_s": sent / dt,
        "landed_per_s": landed / dt,
        "landed_ratio": landed_all / sent if sent else 0.0,
        "p50_ms": lat[len(lat) // 2] if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
        "cpu": cpu_s / dt,
        "redis_cpu": (s1.redis_cpu_s - s0.redis_cpu_s) / dt,
        "sim_cpu": (s1.sim_cpu_s - s0.sim_cpu_s) / dt,
        "events_per_cpu_s": landed / cpu_s if cpu_s > 0 else None,
        "slow_disconnects": s1.slow - s0.slow,
        "skipped_ms": s1.skipped_ms - s0.skipped_ms,
        "latency_samples": len(lat),
        "alive": side.proc.poll() is None,
    }
    for key, n in added.items():  # per kind: trades landed vs aggTrades made, e.g.
        name = f"landed_{kind_of(key)}_per_s"
        row[name] = row.get(name, 0.0) + n / dt
    row["sim_ok"] = row["made_per_s"] >= 0.95 * rate and row["skipped_ms"] == 0
    row["sustained"] = (
        row["landed_ratio"] >= args.min_landed
        and row["p99_ms"] is not None
        and row["p99_ms"] < args.p99_ms
        and row["slow_disconnects"] == 0
        and row["alive"]
    )
    return row


def ladder(side: Side, rep: int, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Climb the rates until one is not sustained (or the simulator is the limit)."""
    for rate in args.rate_list:
        row = {**measure(side, rate, args.seconds, args), "rep": rep}
        print(f"  {side.name:<10} pass {rep + 1} {rate:>7.0f} aggTrades/s: "
              f"sent={row['sent_per_s']:>8.0f}/s landed={row['landed_per_s']:>8.0f}/s "
              f"({row['landed_ratio']:.1%}) p50={row['p50_ms']} p99={row['p99_ms']} ms "
              f"cpu={row['cpu']:.0%} events/cpu-s={row['events_per_cpu_s'] or 0:,.0f} "
              f"(redis {row['redis_cpu']:.0%}, sim {row['sim_cpu']:.0%} of CPU 1) "
              f"slow={row['slow_disconnects']} made={row['made_per_s']:.0f}/s "
              f"skipped={row['skipped_ms']} ms -> "
              f"{'sustained' if row['sustained'] else 'NOT sustained'}"
              f"{'' if row['sim_ok'] else ' (sim-limited)'}", flush=True)  # fmt: skip
        yield row
        if not row["sustained"] or not row["sim_ok"]:
            return


# --- report ------------------------------------------------------------------------------------


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def max_sustained(rows: list[dict[str, Any]]) -> tuple[float, bool, float | None]:
    """(highest sustained rate, whether the pass ended without a failure, landed/s there)."""
    ok = [r for r in rows if r["sustained"] and r["sim_ok"]]
    top = max(ok, key=lambda r: r["rate"], default=None)
    capped = all(r["sustained"] for r in rows)  # ended by sim-limit or by the top of the ladder
    return (top["rate"] if top else 0.0), capped, (top["landed_per_s"] if top else None)


def sustained_every_pass(rows: list[dict[str, Any]], name: str, rate: float, repeat: int) -> bool:
    rs = [r for r in rows if r["system"] == name and r["rate"] == rate]
    return len(rs) == repeat and all(r["sustained"] for r in rs)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    systems = ("ours", "cryptofeed")
    out = ["", "| aggTrades/s offered | system | passes sustained | sent events/s | "
           "landed events/s | landed/sent | p50 ms | p99 ms | ingest CPU | events per CPU-s | "
           "redis CPU |", "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for rate in args.rate_list:
        for name in systems:
            rs = [r for r in rows if r["system"] == name and r["rate"] == rate]
            if not rs:
                continue
            note = "" if all(r["sim_ok"] for r in rs) else " (sim-limited)"
            passes = f"{sum(r['sustained'] for r in rs)}/{len(rs)}{note}"
            out.append(f"| {rate:,.0f} | {name} | {passes} "
                       f"| {fmt(med(rs, 'sent_per_s'))} | {fmt(med(rs, 'landed_per_s'))} "
                       f"| {fmt(med(rs, 'landed_ratio'), '.1%')} | {fmt(med(rs, 'p50_ms'))} "
                       f"| {fmt(med(rs, 'p99_ms'))} | {fmt(med(rs, 'cpu'), '.0%')} "
                       f"| {fmt(med(rs, 'events_per_cpu_s'))} "
                       f"| {fmt(med(rs, 'redis_cpu'), '.0%')} |")  # fmt: skip
    summary: dict[str, dict[str, Any]] = {}
    for name in systems:
        runs = [[r for r in rows if r["system"] == name and r["rep"] == rep]
                for rep in range(args.repeat)]  # fmt: skip
        passes = [max_sustained(run) for run in runs if run] or [(0.0, False, None)]
        top = statistics.median_low(p[0] for p in passes)  # a rate of the ladder
        summary[name] = {
            "max": top,
            "capped": any(p[1] for p in passes if p[0] == top),
            "landed": statistics.median(p[2] or 0.0 for p in passes if p[0] == top),
        }
    both = [rate for rate in args.rate_list
            if all(sustained_every_pass(rows, n, rate, args.repeat) for n in systems)]  # fmt: skip
    common = max(both, default=None)
    at = {n: [r for r in rows if r["system"] == n and r["rate"] == common] for n in systems}
    o, c = summary["ours"], summary["cryptofeed"]
    ge = {n: ">= " if summary[n]["capped"] else "" for n in systems}
    # A pass that never failed gives a lower bound; the ratio is then a bound or unknown.
    bound = {(False, False): "", (True, False): ">= ", (False, True): "<= "}
    max_ratio = ratio(o["max"], c["max"])
    if max_ratio != "-":
        max_ratio = (
            "-" if o["capped"] and c["capped"] else bound[o["capped"], c["capped"]] + max_ratio
        )
    out += ["", f"| {args.symbols} symbols, median of {args.repeat} | ours | cryptofeed "
            f"{CF_VERSION} | ours/cryptofeed |", "|---|---:|---:|---:|",
            f"| max sustained aggTrades/s offered | {ge['ours']}{o['max']:,.0f} "
            f"| {ge['cryptofeed']}{c['max']:,.0f} | {max_ratio} |",
            f"| landed events/s there | {o['landed']:,.0f} | {c['landed']:,.0f} "
            f"| {ratio(o['landed'], c['landed'])} |"]  # fmt: skip
    if common is None:
        out.append("| (no rate sustained by both in every pass) | | | |")
    else:
        eo, ec = med(at["ours"], "events_per_cpu_s"), med(at["cryptofeed"], "events_per_cpu_s")
        po, pc = med(at["ours"], "p99_ms"), med(at["cryptofeed"], "p99_ms")
        out += [f"| events per CPU-second at {common:,.0f} aggTrades/s | {fmt(eo)} | {fmt(ec)} "
                f"| {ratio(eo, ec)} |",
                f"| p99 latency ms at {common:,.0f} aggTrades/s (lower is better) | {fmt(po)} "
                f"| {fmt(pc)} | {ratio(po, pc)} |"]  # fmt: skip
    print("\n".join(out), flush=True)
    print("\n" + orjson.dumps({"rows": rows}).decode())


# --- main --------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_pass(name: str, rep: int, tmp: Path, rows: list[dict[str, Any]], sampled: set[str],
             args: argparse.Namespace) -> None:  # fmt: skip
    """One ladder of one system on a fresh rig; a pass that breaks is reported, not fatal."""
    side: Side | None = None
    try:
        side = (Ours(args.symbols, tmp) if name == "ours"
                else Cryptofeed(args.symbols, tmp, args.cf_python, args.cf_runner))  # fmt: skip
        for row in ladder(side, rep, args):
            rows.append(row)
        if name not in sampled:
            sampled.add(name)
            print(f"  sample {name} entry: {side.sample()}", flush=True)
    except Exception:
        traceback.print_exc()
        print(f"  {name} pass {rep + 1} FAILED (the levels it finished are kept)", flush=True)
    finally:
        if side is not None:
            side.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--rates", default=DEFAULT_RATES,
                        help="aggTrades/s ladder (over all symbols)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10, help="measured window per level")
    parser.add_argument("--repeat", type=int, default=3, help="passes per system, alternating")
    parser.add_argument("--p99-ms", type=float, default=1000, help="sustained: p99 under this")
    parser.add_argument("--min-landed", type=float, default=0.95,
                        help="sustained: landed/sent at least this")  # fmt: skip
    parser.add_argument("--venv", type=Path, default=CACHE / f"cryptofeed-{CF_VERSION}",
                        help="cryptofeed's virtualenv (created if missing)")  # fmt: skip
    args = parser.parse_args()
    args.rate_list = [float(x) for x in args.rates.split(",")]
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # CPU 0 is the ingest process's alone
    args.cf_python, args.cf_runner, versions = ensure_cryptofeed(args.venv)
    print(f"# .venv/bin/python bench/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}")
    print(
        f"# {platform.platform()}; {cpu_model()}; cpus={os.cpu_count()} "
        f"(physical {psutil.cpu_count(logical=False)}); python {platform.python_version()}"
    )
    print(f"# cryptofeed venv {args.venv}: {versions}", flush=True)
    rows: list[dict[str, Any]] = []
    sampled: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for name in ("ours", "cryptofeed"):
                run_pass(name, rep, Path(tmp) / f"{name}-{rep}", rows, sampled, args)
    report(rows, args)


if __name__ == "__main__":
    main()
