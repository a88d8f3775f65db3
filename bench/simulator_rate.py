"""Benchmark: events per second the simulator serves to one and to several websocket clients.

Starts ``python -m simulator`` as a subprocess for each run, connects N clients (one socket
each) on ``/public/ws`` subscribed to ``<symbol>@trade`` and ``<symbol>@bookTicker`` of every
symbol, and counts the events received over a measurement window. The clients are minimal
(asyncio protocols counting events with ``bytes.count``) so the figure is the simulator's, not a
client library's; they all run in this one process, which on a 2-core machine shares the
second core. The simulator's CPU use is read from /proc. Each configuration is repeated and
the median printed. The simulator runs with ``--steady`` (no bursty regimes) so a window of a
few seconds is representative; ``skipped ms`` > 0 means it could not keep up with the rate.

    .venv/bin/python bench/simulator_rate.py --rates 20000,40000,80000 --clients 1,4 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MARKER = b'{"e":"'  # every event payload starts with it, raw or inside {"stream":..,"data":..}
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class CountingClient(asyncio.Protocol):
    """A websocket client that only counts events: after the handshake, every payload is an
    event starting with ``{"e":"``, so counting that marker in the byte stream counts events."""

    def __init__(self, path: str, port: int) -> None:
        self.path, self.port = path, port
        self.events = 0
        self.bytes = 0
        self.handshake = b""
        self.tail = b""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.handshake is not None:
            self.handshake += data
            if b"\r\n\r\n" not in self.handshake:
                return
            data = self.handshake.partition(b"\r\n\r\n")[2]
            self.handshake = None  # type: ignore[assignment]
        self.bytes += len(data)
        joined = self.tail + data
        self.events += joined.count(MARKER)
        # keep the last bytes so a marker split across reads is counted (once) next time
        self.tail = b"" if joined.endswith(MARKER) else joined[-(len(MARKER) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def measure(port: int, path: str, clients: int, warmup_s: float, seconds: float,
                  pid: int) -> tuple[float, float]:  # fmt: skip
    loop = asyncio.get_running_loop()
    counters: list[CountingClient] = []
    for _ in range(clients):
        _, proto = await loop.create_connection(
            lambda: CountingClient(path, port), "127.0.0.1", port
        )
        counters.append(proto)
    await asyncio.sleep(warmup_s)
    start_events = sum(c.events for c in counters)
    start_cpu, start = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    events = sum(c.events for c in counters) - start_events
    elapsed = time.perf_counter() - start
    cpu = (cpu_seconds(pid) - start_cpu) / elapsed
    return events / elapsed, cpu


def run_once(rate: int, clients: int, symbols: int, warmup_s: float, seconds: float) -> dict:
    rest, ws = free_port(), free_port()
    cmd = [sys.executable, "-m", "simulator", "--rest-port", str(rest), "--ws-port", str(ws),
           "--rate", str(rate), "--symbols", str(symbols), "--log-level", "WARNING",
           "--max-send-buffer", str(64 << 20), "--steady"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{rest}/fapi/v1/exchangeInfo", timeout=1).json()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        names = [s["symbol"].lower() for s in info["symbols"]]
        streams = [f"{n}@{kind}" for n in names for kind in ("trade", "bookTicker")][:1024]
        path = "/public/ws/" + "/".join(streams)
        eps, cpu = asyncio.run(measure(ws, path, clients, warmup_s, seconds, proc.pid))
        state = httpx.get(f"http://127.0.0.1:{rest}/sim/state", timeout=5).json()
        return {"eps": eps, "cpu": cpu, "skipped_ms": state["model"]["skippedMs"],
                "slow": state["ws"]["slowDisconnects"]}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--rates", default="20000,40000,80000", help="simulator --rate values (aggTrades/s)"
    )
    p.add_argument("--clients", default="1,4", help="numbers of concurrent clients")
    p.add_argument("--symbols", type=int, default=122)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=8.0)
    ns = p.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'rate':>8} {'clients':>7} {'events/s total':>15} {'per client':>11} "
          f"{'sim CPU':>8} {'skipped ms':>10}")  # fmt: skip
    for rate in (int(x) for x in ns.rates.split(",")):
        for clients in (int(x) for x in ns.clients.split(",")):
            runs = [
                run_once(rate, clients, ns.symbols, ns.warmup_s, ns.seconds)
                for _ in range(ns.repeat)
            ]
            eps = statistics.median(r["eps"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            skipped = max(r["skipped_ms"] for r in runs)
            print(f"{rate:>8} {clients:>7} {eps:>15,.0f} {eps / clients:>11,.0f} "
                  f"{cpu:>7.0%} {skipped:>10}", flush=True)  # fmt: skip
            if any(r["slow"] for r in runs):
                print("  (a client was disconnected as slow in at least one run)")


if __name__ == "__main__":
    main()
