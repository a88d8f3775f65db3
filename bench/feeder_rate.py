"""Feeder benchmark: sustained events/s into Redis Streams, latency, memory, vs Redis's own limit.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/feeder_rate.py                       # throughput ladder + latency
    .venv/bin/python bench/feeder_rate.py --rss-minutes 30 --rate 9000   # memory over time
    .venv/bin/python bench/feeder_rate.py --blast --seconds 10 --repeat 3   # saturated: CPU/event
    .venv/bin/python bench/feeder_rate.py --overload 0.5,1,1.5,2,3 --seconds 15   # overload ladder

Layout on a 2-core machine: the feeder is pinned to CPU 0; the simulator and redis-server to CPU
1. Events are everything the feeder writes (trades, book tickers, kline updates). Latency is the
Redis stream entry id (Redis's clock when the XADD ran) minus the exchange event time ``E``: it
covers the simulator's send, the network, parsing, sequencing and the pipelined write.
``--rate`` is the simulator's aggTrade rate; each aggTrade also moves the book (one bookTicker),
and kline updates add up to 4 per symbol per second.

``cpu/event`` is the feeder's CPU-seconds (user + system) per event written, over the same
interval as the counters (between two of its health reports). It is what to compare across code
changes: on a machine shared with other work the wall-clock rates move with the neighbours, the
CPU an event costs much less. Compare medians of repeats run back to back in one session.
"""

from __future__ import annotations

import argparse
import contextlib
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

    def __init__(self, symbols: int, tmp: Path, *, ws_url: str | None = None) -> None:
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
               "TP_REST_URL": f"http://127.0.0.1:{self.rest}", "TP_WS_URL": ws_url or f"ws://127.0.0.1:{self.ws}",
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


def fresh_health(rig: Rig, proc: psutil.Process) -> tuple[dict[str, Any], float, float]:
    """Wait for the feeder's next health report; return it, the time and the feeder's CPU-seconds
    read right after it (so the counters and the CPU cover the same interval, within ~10 ms)."""
    first = rig.health()
    assert first
    while True:
        time.sleep(0.01)
        h = rig.health()
        if h is not None and h["updated_ms"] != first["updated_ms"]:
            cpu = proc.cpu_times()
            return h, time.time(), cpu.user + cpu.system


def measure(rig: Rig, aggtrades: float, seconds: float) -> dict[str, Any]:
    rig.rate(aggtrades)
    time.sleep(3)  # warm up at this rate
    proc = psutil.Process(rig.feeder.pid)
    h0, t0, cpu0 = fresh_health(rig, proc)
    since = int(t0 * 1000)
    time.sleep(max(0.0, seconds - 2.5))
    h1, t1, cpu1 = fresh_health(rig, proc)
    dt = (h1["updated_ms"] - h0["updated_ms"]) / 1000
    written = h1["counters"]["written"] - h0["counters"]["written"]
    received = sum(
        h1["counters"][k] - h0["counters"][k] for k in ("trades", "book_tickers", "klines")
    )
    lat = sorted(rig.latencies_ms(since, int(t1 * 1000)))
    cpu_s = cpu1 - cpu0
    return {
        "aggtrades_per_s": aggtrades,
        "received_per_s": received / dt,
        "written_per_s": written / dt,
        "shed": h1["counters"]["shed_trades"] + h1["counters"]["shed_other"],
        "outbox_high_water": h1["outbox"]["high_water"],
        "p50_ms": lat[len(lat) // 2] if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
        "feeder_cpu": cpu_s / dt,
        # CPU per event written: robust to a shared machine, unlike the wall-clock rates.
        "cpu_us_per_event": cpu_s * 1e6 / written if written else None,
        "cpu_us_per_received": cpu_s * 1e6 / received if received else None,
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


# --- saturation: a frame source that is never the bottleneck -----------------------------------
#
# The simulator models an exchange and costs more CPU per event than the feeder; on a shared
# 2-core machine it falls behind first. --blast replaces its websocket side (REST still comes from
# the simulator) with a minimal RFC 6455 server that writes pre-formatted frames as fast as TCP
# takes them: the feeder is then saturated and its CPU per event and events/s at 100 % of its
# core are measured without the source in the way. Trade ids are consecutive per symbol (no gaps),
# book update ids increase; one kline update per 10 aggTrades.

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
AGG = (b'{"stream":"%s@aggTrade","data":{"e":"aggTrade","E":%d,"a":%d,"s":"%s","p":"%d.%02d",'
       b'"q":"0.%03d","f":%d,"l":%d,"T":%d,"m":%s}}')  # fmt: skip
BOOK = (b'{"stream":"%s@bookTicker","data":{"e":"bookTicker","u":%d,"s":"%s","b":"%d.%02d",'
        b'"B":"%d","a":"%d.%02d","A":"%d","T":%d,"E":%d}}')  # fmt: skip
KLINE = (b'{"stream":"%s@kline_1m","data":{"e":"kline","E":%d,"s":"%s","k":{"t":%d,"T":%d,'
         b'"s":"%s","i":"1m","f":%d,"L":%d,"o":"100.00","c":"%d.%02d","h":"199.99","l":"1.00",'
         b'"v":"%d","n":%d,"x":false,"q":"12345.6","V":"7","Q":"700.1","B":"0"}}}')  # fmt: skip


def ws_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def blast_server(port: int, rate_file: str | None = None) -> None:
    """Serve combined streams on 127.0.0.1:``port`` until killed (run as a subprocess).

    With ``rate_file``: paced at the total frames per second the file holds (read every 0.2 s;
    0: unpaced, as fast as TCP takes them), split evenly over the connections, in 10 ms ticks.
    Paced, it behaves as an exchange does with a client that reads too slowly: it does not wait.
    A tick whose frames the socket cannot take (TCP's window is full) is dropped, ids advancing
    as if sent, so the feeder sees the loss as an id jump (a gap).
    """
    import asyncio
    import base64
    import hashlib

    trade_ids: dict[bytes, int] = {}
    book_ids: dict[bytes, int] = {}
    pace = {"total": 0.0, "pumps": 0}

    async def read_rate() -> None:
        while rate_file is not None:
            with contextlib.suppress(OSError, ValueError), open(rate_file) as f:  # noqa: ASYNC230
                pace["total"] = float(f.read() or 0)  # a few bytes every 0.2 s
            await asyncio.sleep(0.2)

    class Blast(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.Transport = transport  # type: ignore[assignment]
            self.t.set_write_buffer_limits(high=256 * 1024)
            self.buf = b""
            self.route = b""
            self.symbols: list[bytes] = []
            self.can_write = asyncio.Event()
            self.can_write.set()
            self.pump: asyncio.Task[None] | None = None

        def pause_writing(self) -> None:
            self.can_write.clear()

        def resume_writing(self) -> None:
            self.can_write.set()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.pump:
                self.pump.cancel()

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if not self.route:
                if b"\r\n\r\n" not in self.buf:
                    return
                head, _, self.buf = self.buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                self.route = b"market" if b"/market" in lines[0] else b"public"
                key = next(v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])
                           if k.strip().lower() == b"sec-websocket-key")  # fmt: skip
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324
                self.t.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                             + b"\r\n\r\n")  # fmt: skip
            while len(self.buf) >= 6:
                b0, b1 = self.buf[0], self.buf[1]
                n, off = b1 & 0x7F, 2
                if n == 126:
                    n, off = int.from_bytes(self.buf[2:4], "big"), 4
                elif n == 127:
                    n, off = int.from_bytes(self.buf[2:10], "big"), 10
                if len(self.buf) < off + 4 + n:
                    return
                mask = self.buf[off : off + 4]
                raw = self.buf[off + 4 : off + 4 + n]
                self.buf = self.buf[off + 4 + n :]
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(raw))
                opcode = b0 & 0x0F
                if opcode == 0x9:  # ping
                    self.t.write(bytes((0x8A, len(payload))) + payload)
                elif opcode == 0x8:
                    self.t.close()
                elif opcode == 0x1:
                    msg = orjson.loads(payload)
                    for stream in msg.get("params", []):
                        sym, _, kind = stream.partition("@")
                        if kind in ("aggTrade", "bookTicker"):
                            self.symbols.append(sym.encode())
                    self.t.write(ws_frame(b'{"result":null,"id":%d}' % msg["id"]))
                    if self.pump is None and self.symbols:
                        self.pump = asyncio.get_running_loop().create_task(self._pump())

        async def _pump(self) -> None:
            await asyncio.sleep(0.5)  # every SUBSCRIBE of the connection answered first
            market = self.route == b"market"
            i = 0
            pace["pumps"] += 1
            next_tick = time.monotonic()
            while True:
                count = 200
                if pace["total"] > 0:  # paced: this connection's share, per 10 ms tick
                    next_tick += 0.01
                    await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
                    count = max(1, round(pace["total"] / max(pace["pumps"], 1) / 100))
                    if market:
                        count = max(1, round(count / 1.1))  # one kline per 10 aggTrades
                else:
                    next_tick = time.monotonic()
                    await self.can_write.wait()
                now = int(time.time() * 1000)
                out = []
                for _ in range(count):
                    sym = self.symbols[i % len(self.symbols)]
                    up = sym.upper()
                    i += 1
                    if market:
                        a = trade_ids[sym] = trade_ids.get(sym, 0) + 1
                        out.append(
                            ws_frame(
                                AGG
                                % (
                                    sym,
                                    now,
                                    a,
                                    up,
                                    100 + a % 50,
                                    a % 100,
                                    a % 999 + 1,
                                    a,
                                    a,
                                    now,
                                    b"true" if a & 1 else b"false",
                                )
                            )
                        )
                        if a % 10 == 0:
                            out.append(
                                ws_frame(
                                    KLINE
                                    % (
                                        sym,
                                        now,
                                        up,
                                        now // 60000 * 60000,
                                        now // 60000 * 60000 + 59999,
                                        up,
                                        1,
                                        a,
                                        100 + a % 50,
                                        a % 100,
                                        a,
                                        a,
                                    )
                                )
                            )
                    else:
                        u = book_ids[sym] = book_ids.get(sym, 0) + 1
                        out.append(
                            ws_frame(
                                BOOK
                                % (
                                    sym,
                                    u,
                                    up,
                                    100 + u % 50,
                                    u % 100,
                                    u % 9 + 1,
                                    101 + u % 50,
                                    u % 100,
                                    u % 7 + 1,
                                    now,
                                    now,
                                )
                            )
                        )
                if self.can_write.is_set() or pace["total"] <= 0:
                    self.t.write(b"".join(out))  # (paced and the socket full: dropped)
                if pace["total"] <= 0:
                    await asyncio.sleep(0)

    async def serve() -> None:
        asyncio.get_running_loop().create_task(read_rate())
        server = await asyncio.get_running_loop().create_server(Blast, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(serve())


def blast_run(symbols: int, seconds: float, repeat: int, tmp: Path) -> None:
    ws_port = free_port()
    blaster = subprocess.Popen([sys.executable, __file__, "--blast-server", str(ws_port)],
                               cwd=ROOT)  # fmt: skip
    pin(blaster.pid, 1)
    rig = Rig(symbols, tmp, ws_url=f"ws://127.0.0.1:{ws_port}")
    try:
        time.sleep(5)  # connect, subscribe, warm up
        runs = []
        for _ in range(repeat):
            proc = psutil.Process(rig.feeder.pid)
            h0, _, cpu0 = fresh_health(rig, proc)
            time.sleep(max(0.0, seconds - 2.5))
            h1, _, cpu1 = fresh_health(rig, proc)
            dt = (h1["updated_ms"] - h0["updated_ms"]) / 1000
            c0, c1 = h0["counters"], h1["counters"]
            written = c1["written"] - c0["written"]
            runs.append({
                "written_per_s": written / dt,
                "feeder_cpu": (cpu1 - cpu0) / dt,
                "cpu_us_per_event": (cpu1 - cpu0) * 1e6 / written,
                "shed": c1["shed_trades"] + c1["shed_other"] - c0["shed_trades"] - c0["shed_other"],
                "gaps": c1["gaps"] - c0["gaps"],
                "duplicates": c1["duplicates"] - c0["duplicates"],
            })  # fmt: skip
            r = runs[-1]
            print(f"  run: written/s={r['written_per_s']:>8.0f}  feeder_cpu={r['feeder_cpu']:.0%}  "
                  f"cpu/event={r['cpu_us_per_event']:.2f} us  shed={r['shed']}  gaps={r['gaps']}",
                  flush=True)  # fmt: skip
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"blast (saturated): written/s={med['written_per_s']:>8.0f}  "
              f"feeder_cpu={med['feeder_cpu']:.0%}  cpu/event={med['cpu_us_per_event']:.2f} us  "
              f"=> {1e6 / med['cpu_us_per_event']:,.0f} events per CPU-second  "
              f"shed={med['shed']:.0f}  gaps={med['gaps']:.0f}", flush=True)  # fmt: skip
    finally:
        rig.close()
        blaster.terminate()
        blaster.wait(10)


def overload_window(rig: Rig, seconds: float) -> dict[str, Any]:
    """Measure one window: written/s, CPU per event, shed and gap counts, RSS, latency."""
    proc = psutil.Process(rig.feeder.pid)
    h0, t0, cpu0 = fresh_health(rig, proc)
    other0 = psutil.cpu_times(percpu=True)[-1]  # the source's, Redis's and REST's CPU
    rss = proc.memory_info().rss
    end = time.monotonic() + max(0.0, seconds - 2.5)
    while time.monotonic() < end:
        time.sleep(0.5)
        rss = max(rss, proc.memory_info().rss)
    h1, t1, cpu1 = fresh_health(rig, proc)
    other1 = psutil.cpu_times(percpu=True)[-1]
    dt = (h1["updated_ms"] - h0["updated_ms"]) / 1000
    c0, c1 = h0["counters"], h1["counters"]
    written = c1["written"] - c0["written"]
    busy = sum(b - a for a, b in zip(other0, other1, strict=True)) - (other1.idle - other0.idle)
    lat = sorted(rig.latencies_ms(int(t0 * 1000), int(t1 * 1000)))
    return {
        "written_per_s": written / dt,
        "received_per_s": sum(c1[k] - c0[k] for k in ("trades", "book_tickers", "klines")) / dt,
        "cpu_us_per_event": (cpu1 - cpu0) * 1e6 / written if written else None,
        "feeder_cpu": (cpu1 - cpu0) / dt,
        "other_cpu": busy / (t1 - t0),
        "shed": c1["shed_trades"] + c1["shed_other"] - c0["shed_trades"] - c0["shed_other"],
        "gaps": c1["gaps"] - c0["gaps"],
        "rss_mib": rss / 2**20,
        "outbox_bytes_high": h1["outbox"]["high_water_bytes"],
        "p50_ms": lat[len(lat) // 2] if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
    }


def drain_s(rig: Rig, started: float, limit_s: float = 30.0, p99_ms: int = 100) -> float | None:
    """Seconds from ``started`` until the entries written in the last second have p99 latency
    under ``p99_ms`` (None: not within ``limit_s``)."""
    while time.time() - started < limit_s:
        time.sleep(0.5)
        now = int(time.time() * 1000)
        lat = sorted(rig.latencies_ms(now - 1000, now))
        if lat and lat[int(len(lat) * 0.99)] < p99_ms:
            return time.time() - started
    return None


def overload_run(symbols: int, seconds: float, levels: list[float], tmp: Path) -> None:
    """The ladder of issue 19: the feeder offered 0.5x..3x its saturation rate (paced frames from
    the blast source, which drops what the socket cannot take, as an exchange does), each level
    followed by a quarter of saturation to time the drain."""
    ws_port = free_port()
    rate_file = tmp / "blast-rate"
    rate_file.write_text("0")
    blaster = subprocess.Popen([sys.executable, __file__, "--blast-server", str(ws_port),
                                "--blast-rate-file", str(rate_file)], cwd=ROOT)  # fmt: skip
    pin(blaster.pid, 1)
    rig = Rig(symbols, tmp, ws_url=f"ws://127.0.0.1:{ws_port}")
    rows: list[dict[str, Any]] = []
    try:
        time.sleep(5)  # connect, subscribe, warm up
        saturated = overload_window(rig, seconds)
        sat = saturated["written_per_s"]
        print(f"saturation (unpaced source): written/s={sat:,.0f}  "
              f"cpu/event={saturated['cpu_us_per_event']:.2f} us  "
              f"feeder/other cpu={saturated['feeder_cpu']:.0%}/{saturated['other_cpu']:.0%}  "
              f"rss={saturated['rss_mib']:.0f} MiB", flush=True)  # fmt: skip
        for level in levels:
            rate_file.write_text(str(level * sat))
            time.sleep(3)
            row = {"level": level, "offered_per_s": level * sat, **overload_window(rig, seconds)}
            rate_file.write_text(str(0.25 * sat))
            row["drain_s"] = drain_s(rig, time.time())
            rows.append(row)
            drained = "not within 30" if row["drain_s"] is None else f"{row['drain_s']:.1f}"
            print(f"{level:>4.1f}x offered={level * sat:>8,.0f}/s  "
                  f"written/s={row['written_per_s']:>8,.0f} "
                  f"({row['written_per_s'] / sat:.0%} of saturation)  "
                  f"cpu/event={row['cpu_us_per_event'] or 0:.2f} us  "
                  f"feeder/other cpu={row['feeder_cpu']:.0%}/{row['other_cpu']:.0%}  "
                  f"rss={row['rss_mib']:.0f} MiB  shed={row['shed']}  gaps={row['gaps']}  "
                  f"p50={row['p50_ms']} p99={row['p99_ms']} ms  drain={drained} s",
                  flush=True)  # fmt: skip
            time.sleep(3)
        print(orjson.dumps({"saturation": saturated, "levels": rows}).decode())
    finally:
        rig.close()
        blaster.terminate()
        blaster.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--rates", default="5000,10000,15000,20000,25000,30000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-minutes", type=float, default=0)
    parser.add_argument("--rate", type=float, default=9000, help="aggTrades/s for --rss-minutes")
    parser.add_argument("--no-xadd-limit", action="store_true", help="skip redis-benchmark")
    parser.add_argument("--blast", action="store_true",
                        help="saturate the feeder from a frame source that is never the "
                             "bottleneck (instead of the simulator's ladder)")  # fmt: skip
    parser.add_argument("--overload", default="",
                        help="comma-separated multiples of the saturation rate to offer, e.g. "
                             "0.5,1,1.5,2,3 (issue 19's ladder; --seconds per level)")  # fmt: skip
    parser.add_argument("--blast-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--blast-rate-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.blast_server:
        blast_server(args.blast_server, args.blast_rate_file)
        return
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.node()} {platform.processor() or platform.machine()} "
          f"cpus={os.cpu_count()} python={platform.python_version()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if args.blast:
            blast_run(args.symbols, args.seconds, args.repeat, Path(tmp))
            return
        if args.overload:
            levels = [float(x) for x in args.overload.split(",")]
            overload_run(args.symbols, args.seconds, levels, Path(tmp))
            return
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
                      f"cpu/event={med['cpu_us_per_event']:.2f} us  "
                      f"(per received {med['cpu_us_per_received']:.2f} us)  "
                      f"shed={med['shed']:.0f}  outbox_high_water={med['outbox_high_water']:.0f}",
                      flush=True)  # fmt: skip
            rig.rate(0)
            if args.no_xadd_limit:
                return
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
