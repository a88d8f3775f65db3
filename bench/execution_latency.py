"""Execution benchmark: trade-command and fill latency through web + execution, and throughput.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/execution_latency.py --md-clients 200 --seconds 10       # smoke
    .venv/bin/python bench/execution_latency.py --md-clients 2000 --seconds 30      # latency
    .venv/bin/python bench/execution_latency.py --throughput --repeat 3             # commands/s

**The stack.** ``bench/web_fanout.py``'s (imported, not copied): redis-server, the simulator
(``--steady``, ``--symbols`` instruments; trading is always on; started with ``--weight-limit
--sim-weight-limit``, see below), and ONE web process from the Procfile's ``web:`` line, plus
the ``execution`` process (``python -m execution --name execution-bench``, the Procfile's
command). Web and execution get the same ``TP_JWT_KEYS`` and ``TP_KEY_ENCRYPTION_KEY``
(generated per run). Market data for the web (``--md-source``): ``replay`` (default) is
web_fanout's ``--replay``: the pipeline (feeder, consumer, worker at ``--md-rate`` aggTrades/s)
runs ``--record-warmup`` s, its output streams (candle-updates, signal-updates, book) are recorded
for ``--replay-seconds`` and replayed in a loop at their pace by one process, the pipeline is
stopped and the simulator idles (rate 0): real md traffic for the web without the pipeline's
~1.4 cores on this machine, and a quiet exchange for the orders. ``pipeline`` keeps the whole
pipeline running instead (the machine saturates); ``none`` sends no md (a baseline).
``--md-clients`` raw Engine.IO/Socket.IO clients (web_fanout's load processes) subscribe to
``--symbols-per-client`` 1m candle rooms each and read the ``md`` messages.

**Traders.** ``--traders`` users, each with their own simulator account (``POST /sim/accounts``,
100,000 USDT), signed in with SIWE (``/auth/nonce``, ``/auth/login``), their HMAC key linked with
``POST /api/account/link`` (verified by execution), then connected over Socket.IO with their
access token (raw Engine.IO 4 / Socket.IO 5 in one asyncio process of their own, like the load
clients). They send ``trade`` events (what the trader page uses) ``{"action": "place", "type":
"MARKET", ...}`` at an aggregate ``--rate`` per second, open loop (command k is due at k/rate,
round-robin over traders), each trader alternating BUY and SELL of the same small quantity (a
little above the symbol's minimum notional), so positions stay flat. ``TP_TRADE_PER_MINUTE`` is
raised to fit the per-user rate (the default, 120/min, would refuse 5 commands/s per user).

**Latency 1, command -> exchange** (an upper bound of what the system adds): the simulator's order
``time`` (ms, its wall clock: from ``GET /fapi/v1/allOrders`` of each trader's account) minus the
moment the trader process handed the ``trade`` frame to its websocket (same machine clock; both
ms-truncated, so ±1 ms). It includes the client's send and loopback, the web (Socket.IO decode,
checks, the Redis script that queues), the ``orders:commands`` stream, execution, and the
simulator's own HTTP handling up to its matching engine. **web -> exchange**, what the issue asks
for (the latency the system adds from the web receiving a command to the exchange receiving the
order): the same order ``time`` minus the order's ``created_ms``, which the web stamps when its
``trade`` handler starts (web/commands.py ``Trading.execute``). Segments, per command: *send ->
web* (``created_ms`` minus the send: the client, loopback, the web's socket read and its wait for
the handler to run), *web -> XADD* (the ``orders:commands`` entry id: the checks and the script
that queues), *XADD -> exec* (the order's ``sent_ms``, execution's estimate of the exchange clock
just before its compare-and-set; the measured offset is printed, ~0 here), *exec -> exchange*, and
on the way back *exchange -> ack* (the ``trade`` ack received, minus the order's ``updateTime``;
only acks that carry the outcome: the web answers ``202`` "queued" at once when 32 requests already
wait). Receipt times are the trader process's clock when its loop reads the frame: on a saturated
machine that process waits its turn too (``sent >5 ms late`` counts its late sends).

**Latency 2, fill -> socket**: for each MARKET order, the receipt time of the first ``order_event``
of kind ``fill`` on the owner's socket minus its ``data.time`` (the exchange's trade time ``T``);
also kind ``order`` with status FILLED minus its ``data.update_ms``. Segments: *fill -> XADD*
(the ``orders:events`` entry of the fill: simulator user stream, execution) and *XADD -> socket*
(the web's order-event reader, its emit, the socket).

Each of ``--repeat`` windows of ``--seconds`` (after ``--warmup`` s of trading) counts the
commands sent in it; ``--grace`` s later the window is read back. Printed per window: counts,
p50/p90/p99/max of both latencies and of their segments, md messages/s and md latency (as
web_fanout), CPU% per process (``machine`` is out of cpus x 100 %), the web's pump lag, GC pause
and longest tick, the simulator's REST weight used per minute by 127.0.0.1 (``/sim/state``; its
limit ``--sim-weight-limit`` is Binance's 2,400 by default; execution spends at most the shared
``TP_REST_WEIGHT_BUDGET``), and the simulator's answer time under the load (``sim GET time``, a
trivial request, and ``sim GET account``, the read execution makes after fills; 5 of each, after
the window); last, the medians over the windows. ``--orders limit`` sends resting LIMIT BUYs 5 %
under the mark and cancels each once acked instead (no fills, so no account reads after fills:
latency 1 for places and cancels only).

**--throughput**: commands/s that one execution process sustains against the simulator. No md
(``--md-source none``: the pipeline stopped after start, the simulator at rate 0). The traders are
signed in and linked as above; then, per repeat, the execution process is stopped (SIGSTOP),
``--commands`` MARKET place commands (alternating sides, round-robin over the traders' accounts)
are stored and queued exactly as web/commands.py does (its ``_SUBMIT`` script: request id,
PENDING order in ``orders:live``, the ``OrderCommand`` on ``orders:commands``), execution is
resumed (SIGCONT) and the time until the last command's result event (``orders:events`` entry
id) gives commands/s; CPU% of execution, Redis and the simulator over that time.

**--sim-cost**: the simulator alone (idle market), one account: the median time of POST a MARKET
order, GET /fapi/v2/account and GET /fapi/v2/positionRisk after 0, 250, 500, 1,000 and 1,500
orders placed (paced under the account's order limits). The simulator keeps up to 2,000 orders
per account and some of its checks walk all of them, so a long run with few accounts slows it.

The code measured is printed first (HEAD, plus a hash of uncommitted changes to tracked files).

Every process is stopped at the end, also on Ctrl-C or SIGTERM: the execution process runs in a
process group of its own (stopped with killpg), the rest as web_fanout stops them, then any
descendant still alive is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import math
import multiprocessing
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import ROUND_UP, Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import psutil
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import candles_rate
import web_fanout
from candles_rate import ROOT, SHARDS, Pipeline, calibrate, cpu_s, free_port

from core.keys import Keys
from core.trading import FINAL, Order, OrderCommand, decode_instruments
from core.trading import new_client_order_id as new_cid
from simulator.trading import sign as hmac_sign
from web.commands import _SUBMIT, submission

PREFERRED = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
EXECUTION_NAME = "execution-bench"


# --- the trader process ------------------------------------------------------------------------


def _slim_ack(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {"ok": None, "error": "not an object"}
    order = body.get("order") or {}
    return {
        "ok": body.get("ok"),
        "error": body.get("error"),
        "cid": order.get("client_order_id"),
        "status": order.get("status"),
        "created_ms": order.get("created_ms"),
        "sent_ms": order.get("sent_ms"),
        "update_ms": order.get("update_ms"),
    }


class Traders:
    """Signed-in Socket.IO clients in one asyncio loop, sending ``trade`` at a fixed rate."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.commands: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.pending: dict[int, dict[str, Any]] = {}  # ack id -> command record
        self.errors: Counter[str] = Counter()
        self.go = asyncio.Event()
        self.sides = [0] * len(cfg["traders"])
        self.resting: list[list[str]] = [[] for _ in cfg["traders"]]  # limit: acked, not canceled

    async def open(self, token: str) -> ClientConnection:
        ws = await connect(
            self.cfg["url"],
            origin=self.cfg["origin"],
            compression=None,
            ping_interval=None,
            max_size=None,
            open_timeout=60,
            close_timeout=2,
            proxy=None,
            user_agent_header=None,
        )
        if not (await ws.recv(decode=False)).startswith(b"0"):
            raise RuntimeError("no Engine.IO open packet")
        await ws.send("40" + orjson.dumps({"token": token}).decode())
        while True:
            raw = await ws.recv(decode=False)
            if raw.startswith(b"40"):
                return ws
            if raw.startswith(b"44"):
                raise RuntimeError(f"connect refused: {raw[:200]!r}")
            if raw == b"2":
                await ws.send("3")

    async def reader(self, i: int, ws: ClientConnection) -> None:
        try:
            while True:
                raw = await ws.recv(decode=False)
                now = time.time_ns()
                if raw == b"2":
                    await ws.send("3")
                elif raw.startswith(b"43"):
                    bracket = raw.index(b"[")
                    rec = self.pending.pop(int(raw[2:bracket]), None)
                    if rec is not None:
                        rec["ack_ns"] = now
                        ack = rec["ack"] = _slim_ack(orjson.loads(raw[bracket:])[0])
                        if rec["type"] == "LIMIT" and ack["ok"] and ack["status"] == "NEW":
                            self.resting[rec["trader"]].append(ack["cid"])
                elif raw.startswith(b'42["order_event"'):
                    p = orjson.loads(raw[2:])[1]
                    d = p.get("data") or {}
                    self.events.append(
                        {
                            "trader": i,
                            "ns": now,
                            "kind": p.get("kind"),
                            "rid": p.get("request_id"),
                            "cid": d.get("client_order_id"),
                            "status": d.get("status"),
                            "update_ms": d.get("update_ms"),
                            "time": d.get("time"),
                            "trade_id": d.get("trade_id"),
                        }
                    )
                elif raw.startswith((b"41", b"1")):
                    self.errors["disconnected by server"] += 1
                    return
                else:
                    self.errors[f"other {raw[:20]!r}"] += 1
        except Exception as exc:  # counted: a trader that stops reading shows as missing acks
            self.errors[f"reader: {type(exc).__name__}: {str(exc)[:80]}"] += 1

    def command(self, k: int, i: int) -> dict[str, Any]:
        """Return command k, of trader i: MARKET orders alternating BUY and SELL; or (limit) a
        resting LIMIT BUY, then the cancel of that order once its ack said it rests."""
        tr, rid = self.cfg["traders"][i], f"{self.cfg['run']}-{k}"
        if self.cfg["orders"] == "limit":
            if self.resting[i]:
                cid = self.resting[i].pop(0)
                return {
                    "action": "cancel",
                    "request_id": rid,
                    "symbol": tr["symbol"],
                    "client_order_id": cid,
                }
            return {
                "action": "place",
                "request_id": rid,
                "symbol": tr["symbol"],
                "side": "BUY",
                "type": "LIMIT",
                "quantity": tr["limit_qty"],
                "price": tr["limit_price"],
            }
        side = "BUY" if self.sides[i] % 2 == 0 else "SELL"
        self.sides[i] += 1
        return {
            "action": "place",
            "request_id": rid,
            "symbol": tr["symbol"],
            "side": side,
            "type": "MARKET",
            "quantity": tr["qty"],
        }

    async def send_loop(self, socks: list[ClientConnection]) -> None:
        await self.go.wait()
        rate, n = self.cfg["rate"], len(socks)
        t0, k = time.monotonic(), 0
        start_ns = time.time_ns()
        while True:
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            i = k % n
            body = self.command(k, i)
            rec: dict[str, Any] = {
                "k": k,
                "trader": i,
                "rid": body["request_id"],
                "action": body["action"],
                "type": body.get("type"),
            }
            self.pending[k] = rec
            rec["send_ns"] = time.time_ns()
            rec["late_ms"] = (rec["send_ns"] - start_ns) / 1e6 - k / rate * 1000
            self.commands.append(rec)
            try:
                await socks[i].send(f'42{k}["trade",{orjson.dumps(body).decode()}]')
            except Exception as exc:  # a closed socket: counted, the schedule goes on
                self.errors[f"send: {type(exc).__name__}"] += 1
            k += 1

    def collect(self, cutoff_ns: int) -> dict[str, Any]:
        """Hand over the commands sent before ``cutoff_ns`` and every event received so far."""
        done = [c for c in self.commands if c["send_ns"] < cutoff_ns]
        self.commands = [c for c in self.commands if c["send_ns"] >= cutoff_ns]
        events, self.events = self.events, []
        return {"commands": done, "events": events, "errors": dict(self.errors)}

    async def run(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        try:
            socks = [await self.open(t["token"]) for t in self.cfg["traders"]]
        except Exception as exc:
            conn.send({"error": f"{type(exc).__name__}: {exc}"})
            return
        readers = [asyncio.create_task(self.reader(i, ws)) for i, ws in enumerate(socks)]
        conn.send({"ready": len(socks)})

        def command() -> None:
            try:
                what = conn.recv()
            except (EOFError, OSError):  # the benchmark process is gone: stop, never spin
                what = ("stop",)
            if what[0] == "go":
                self.go.set()
            elif what[0] == "collect":
                conn.send(self.collect(what[1]))
            else:
                stop.set()

        loop.add_reader(conn.fileno(), command)
        sender = asyncio.create_task(self.send_loop(socks))
        await stop.wait()
        sender.cancel()
        await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(sender, *readers, return_exceptions=True)
        with contextlib.suppress(OSError):
            conn.send("stopped")


def trader_process(conn: Connection, cfg: dict[str, Any]) -> None:
    """Entry point of the trader process: connect, wait for "go", send until "stop"."""
    asyncio.run(Traders(cfg).run(conn))


# --- sign-in (EIP-4361 by hand, as tests/e2e/webstack.py does) ---------------------------------


def sign_in(http: httpx.Client) -> tuple[str, str]:
    """Create a wallet, sign in with SIWE; return (EIP-55 address, access token)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    account = Account.create(secrets.token_hex(8))
    info = http.get("/auth/nonce").json()
    issued = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = (
        f"{info['domain']} wants you to sign in with your Ethereum account:\n"
        f"{account.address}\n\nSign in to tradepipe\n\nURI: {info['uri']}\nVersion: 1\n"
        f"Chain ID: {info['chain_id']}\nNonce: {info['nonce']}\nIssued At: {issued}"
    )
    signature = account.sign_message(encode_defunct(text=text)).signature.hex()
    resp = http.post(
        "/auth/login",
        json={"message": text, "scope": "web", "signature": "0x" + signature.removeprefix("0x")},
    )
    if resp.status_code != 200:
        raise SystemExit(f"sign-in refused: {resp.status_code} {resp.text[:300]}")
    return str(account.address), str(resp.json()["access_token"])


# --- the stack -----------------------------------------------------------------------------------


class SimPipeline(Pipeline):
    """candles_rate's Pipeline with the simulator's REST weight limit set (``--weight-limit``)."""

    def __init__(self, symbols: int, tmp: Path, *, weight_limit: int) -> None:
        self.weight_limit = weight_limit
        super().__init__(symbols, tmp, {})  # the product's stream bounds, as web_fanout

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None) -> None:
        if name == "simulator":
            args = [*args, "--weight-limit", str(self.weight_limit)]
        super().spawn(name, args, env)

    def ws_url(self) -> str:
        argv = list(self.procs["simulator"].args)  # type: ignore[arg-type]
        return f"ws://127.0.0.1:{argv[argv.index('--ws-port') + 1]}"


class Stack(web_fanout.Bench):
    """web_fanout's Bench (pipeline or replay, web, md load) plus execution and the traders."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.loads = []
        self.replayer = None
        self.execution: subprocess.Popen[bytes] | None = None
        self.trader: tuple[multiprocessing.process.BaseProcess, Connection] | None = None
        self.accounts: list[dict[str, Any]] = []  # address, token, sim key, symbol, qty
        self.keys = Keys("tp", SHARDS)
        self.p = SimPipeline(args.symbols, tmp, weight_limit=args.sim_weight_limit)
        try:
            if args.md_source == "none":
                for name in ("worker", "signals", "consumer", "feeder"):
                    self.p.procs[name].terminate()
                    self.p.procs[name].wait(30)
                    del self.p.procs[name], self.p.pids[name]
            else:
                self.p.rate(args.md_rate)
                if args.md_source == "replay":
                    self.start_replay(tmp)
            self.port, argv = web_fanout.start_web(self.p, args)
            print(f"# web: python {' '.join(argv)}  (log {tmp / 'web.log'})", flush=True)
            self.symbols = web_fanout.universe(self.p)
            self.start_execution()
        except BaseException:
            self.close()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_execution(self) -> None:
        a = self.args
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
            "REDIS_URL": self.p.redis.url,
            "TP_DEMO": "1",
            "TP_NAMESPACE": "tp",
            "TP_STREAM_SHARDS": str(SHARDS),
            "TP_LOG_LEVEL": "INFO",
            "TP_REST_URL": str(self.p.http.base_url).rstrip("/"),
            "TP_WS_URL": self.p.ws_url(),
            **a.secrets,
        }
        log = (self.tmp / "execution.log").open("wb")
        self.execution = subprocess.Popen(
            [sys.executable, "-m", "execution", "--name", EXECUTION_NAME],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.p.pids["execution"] = self.execution.pid
        deadline = time.time() + 60
        while not self.p.r.exists(self.keys.instruments()):
            if self.execution.poll() is not None or time.time() > deadline:
                raise SystemExit(
                    "execution did not publish instruments:\n"
                    + web_fanout.tail(self.tmp / "execution.log")
                )
            time.sleep(0.2)
        print(
            f"# execution: python -m execution --name {EXECUTION_NAME}  "
            f"(log {self.tmp / 'execution.log'})",
            flush=True,
        )

    def link_traders(self, n: int) -> None:
        """Create n exchange accounts, sign n users in, link each user's key (via the web)."""
        instruments = decode_instruments(self.p.r.get(self.keys.instruments()) or b"{}")
        symbols = [s for s in PREFERRED if s in instruments] or sorted(instruments)[:5]
        sims = [
            self.p.http.post("/sim/accounts", json={"balance": "100000"}).json() for _ in range(n)
        ]
        marks = {
            r["symbol"]: Decimal(r["markPrice"])
            for r in self.sim_signed(
                {"api_key": sims[0]["apiKey"], "secret": sims[0]["secretKey"]},
                "/fapi/v2/positionRisk",
            )
        }
        qty = {s: quantity(instruments[s], marks[s]) for s in symbols}
        limit = {s: limit_order(instruments[s], marks[s]) for s in symbols}
        with httpx.Client(base_url=self.base_url, timeout=30, trust_env=False) as http:
            for i, sim in enumerate(sims):
                address, token = sign_in(http)
                link_trader(http, token, sim)
                symbol = symbols[i % len(symbols)]
                self.accounts.append(
                    {
                        "address": address,
                        "token": token,
                        "symbol": symbol,
                        "qty": qty[symbol],
                        "limit_price": limit[symbol][0],
                        "limit_qty": limit[symbol][1],
                        "api_key": sim["apiKey"],
                        "secret": sim["secretKey"],
                    }
                )
        print(
            f"# {n} traders signed in and linked; " + ", ".join(f"{s} x {qty[s]}" for s in symbols),
            flush=True,
        )

    def start_traders(self, rate: float) -> None:
        cfg = {
            "url": f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket",
            "origin": self.base_url,
            "rate": rate,
            "run": f"b{os.getpid()}",
            "orders": self.args.orders,
            "traders": [
                {k: a[k] for k in ("token", "symbol", "qty", "limit_price", "limit_qty")}
                for a in self.accounts
            ],
        }
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=trader_process, args=(theirs, cfg), name="traders")
        proc.start()
        self.trader = (proc, ours)
        self.p.pids["traders"] = proc.pid
        if not ours.poll(60):
            raise SystemExit("the trader process did not connect in 60 s")
        ready = ours.recv()
        if "error" in ready:
            raise SystemExit(f"traders: {ready['error']}\n" + web_fanout.tail(self.tmp / "web.log"))
        print(f"# traders: {ready['ready']} sockets connected, {rate:g} commands/s", flush=True)

    def traders_cmd(self, *what: Any) -> Any:
        assert self.trader is not None
        self.trader[1].send(what)
        return self.trader[1].recv() if what[0] == "collect" else None

    def sim_signed(self, account: dict[str, Any], path: str, **params: Any) -> Any:
        query = urlencode({**params, "timestamp": int(time.time() * 1000)})
        query += "&signature=" + hmac_sign(account["secret"], query)
        resp = self.p.http.get(f"{path}?{query}", headers={"X-MBX-APIKEY": account["api_key"]})
        resp.raise_for_status()
        return resp.json()

    def sim_weight(self) -> int:
        ips = self.p.http.get("/sim/state").json()["rest"]["ips"]
        return max((v["used"] for v in ips.values()), default=0)

    def exec_health(self) -> dict[str, Any]:
        raw = self.p.r.hget(self.keys.execution_health(), EXECUTION_NAME)
        return orjson.loads(raw) if raw else {}

    def check_alive(self) -> None:
        self.check_web()
        if self.execution is not None and self.execution.poll() is not None:
            raise SystemExit(
                f"execution exited ({self.execution.returncode}):\n"
                + web_fanout.tail(self.tmp / "execution.log")
            )

    def close(self) -> None:
        if self.trader is not None:
            proc, conn = self.trader
            with contextlib.suppress(OSError, EOFError):
                conn.send(("stop",))
                if conn.poll(10):
                    conn.recv()
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            self.trader = None
        if self.execution is not None:
            stop_group(self.execution, 20)
            self.execution = None
        super().close()


def link_trader(http: httpx.Client, token: str, sim: dict[str, Any]) -> None:
    """POST /api/account/link; when execution refuses for the IP weight budget (shared by every
    process, per minute), wait for the next minute and ask again."""
    for _ in range(5):
        resp = http.post(
            "/api/account/link",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "request_id": f"link-{secrets.token_hex(6)}",
                "kind": "hmac",
                "api_key": sim["apiKey"],
                "secret": sim["secretKey"],
            },
        )
        body = resp.json()
        if resp.status_code == 200 and body.get("ok") is True:
            return
        if resp.status_code == 202:  # still being checked (it waits for the IP weight budget)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                account = http.get("/api/account", headers={"Authorization": f"Bearer {token}"})
                if account.json().get("linked"):
                    return
                time.sleep(1)
            break
        if "budget" not in str(body.get("message")):
            break
        wait = 61 - time.time() % 60
        print(f"# link refused for the IP weight budget; again in {wait:.0f} s", flush=True)
        time.sleep(wait)
    raise SystemExit(f"link refused: {resp.status_code} {resp.text[:300]}")


def quantity(inst: Any, price: Decimal, *, market: bool = True) -> str:
    """A quantity of ``inst`` a little above its minimum notional at ``price``."""
    step = (inst.market_step_size if market else inst.step_size) or Decimal("0.001")
    low = inst.market_min_qty if market else inst.min_qty
    want = max(inst.min_notional, Decimal(5)) * Decimal("1.2") / price
    qty = max(low, (want / step).to_integral_value(ROUND_UP) * step)
    return format(qty.quantize(step), "f")


def limit_order(inst: Any, mark: Decimal) -> tuple[str, str]:
    """(price, quantity) of a BUY limit that rests: 5 % under the mark, on the tick grid."""
    tick = inst.tick_size or Decimal("0.01")
    price = (mark * Decimal("0.95") / tick).to_integral_value() * tick
    return format(price.quantize(tick), "f"), quantity(inst, price, market=False)


def code_version() -> str:
    """HEAD, and a hash of the uncommitted changes to tracked files outside bench/ (the code
    measured)."""

    def git(*argv: str) -> bytes:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, check=False).stdout

    head = git("rev-parse", "--short", "HEAD").decode().strip()
    diff = git("diff", "HEAD", "--", ".", ":(exclude)bench")
    if not diff:
        return head
    files = len(git("diff", "--name-only", "HEAD", "--", ".", ":(exclude)bench").split())
    digest = hashlib.sha256(diff).hexdigest()[:12]
    return f"{head} + uncommitted changes to {files} files (diff sha256 {digest})"


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process group of ``proc`` (its own session), then SIGKILL it if needed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def kill_descendants() -> None:
    """Last resort: kill whatever this process started that is still alive."""
    me = psutil.Process()
    left = [
        p
        for p in me.children(recursive=True)
        if "resource_tracker" not in " ".join(p.cmdline() if p.is_running() else [])
    ]
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(left, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if left:
        print(
            f"# cleanup: {len(left)} leftover process(es) stopped: "
            + ", ".join(str(p.pid) for p in left),
            flush=True,
        )


# --- reading a window back -----------------------------------------------------------------------


def pcts(
    values: list[float], which: tuple[str, ...] = ("p50", "p90", "p99", "max")
) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return dict.fromkeys(which, math.nan)
    out = {}
    for name in which:
        q = 1.0 if name == "max" else int(name[1:]) / 100
        out[name] = v[-1] if name == "max" else v[min(len(v) - 1, int(len(v) * q))]
    return out


def stream_times(s: Stack, since_ms: int) -> tuple[dict[tuple[str, str], int], dict[Any, int]]:
    """Return the entry-id times of orders:commands (by (action, client order id)) and of
    orders:events (by ("fill", cid), ("order", cid, status) and ("result", request id)) since
    ``since_ms``."""
    commands = {}
    for entry_id, fields in s.p.r.xrange(s.keys.order_commands(), f"{since_ms}-0", "+"):
        cmd = orjson.loads(fields[b"d"])
        if cmd.get("client_order_id"):
            commands[cmd["action"], cmd["client_order_id"]] = int(entry_id.split(b"-")[0])
    events: dict[Any, int] = {}
    for entry_id, fields in s.p.r.xrange(s.keys.order_events(), f"{since_ms}-0", "+"):
        ms, e = int(entry_id.split(b"-")[0]), orjson.loads(fields[b"d"])
        d = e.get("data") or {}
        key: Any = None
        if e["kind"] == "fill":
            key = ("fill", d.get("client_order_id"))
        elif e["kind"] == "order":
            key = ("order", d.get("client_order_id"), d.get("status"))
        elif e["kind"] == "result":
            key = ("result", e.get("request_id"))
        if key is not None and key not in events:
            events[key] = ms
    return commands, events


def analyse(
    s: Stack, got: dict[str, Any], events: list[dict[str, Any]], w0_ns: int, w1_ns: int
) -> tuple[dict[str, float], Counter[str]]:
    """Return one window's latency figures (ms) and its counts."""
    w0_ms = w0_ns // 1_000_000
    cmds = [c for c in got["commands"] if w0_ns <= c["send_ns"] < w1_ns]
    exchange: dict[str, dict[str, Any]] = {}
    for acc in s.accounts:
        for row in s.sim_signed(
            acc, "/fapi/v1/allOrders", symbol=acc["symbol"], startTime=w0_ms - 5000, limit=1000
        ):
            exchange[row["clientOrderId"]] = row
    cmd_ms, evt_ms = stream_times(s, w0_ms - 5000)
    first_fill: dict[str, dict[str, Any]] = {}
    filled: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["kind"] == "fill" and e["cid"] not in first_fill:
            first_fill[e["cid"]] = e
        elif e["kind"] == "order" and e["status"] == "FILLED" and e["cid"] not in filled:
            filled[e["cid"]] = e
    n: Counter[str] = Counter(sent=len(cmds))
    lat: dict[str, list[float]] = defaultdict(list)
    for c in cmds:
        send_ms = c["send_ns"] / 1e6
        if c["late_ms"] > 5:
            n["sent >5 ms late"] += 1
        ack = c.get("ack")
        if ack is None:
            n["no ack"] += 1
            continue
        if ack["ok"] is not True:
            n[f"ack ok={ack['ok']} {ack.get('error') or ack.get('status')}"] += 1
        cid = ack["cid"]
        row = exchange.get(cid)
        if row is None:
            n["not at the exchange"] += 1
            continue
        xadd = cmd_ms.get((c["action"], cid))
        if c["action"] == "cancel":
            n["canceled"] += 1
            lat["cancel->exchange"].append(row["updateTime"] - send_ms)
            if xadd is not None:
                lat["cancel send->XADD"].append(xadd - send_ms)
                lat["cancel XADD->exchange"].append(row["updateTime"] - xadd)
            continue
        n["placed"] += 1
        lat["cmd->exchange"].append(row["time"] - send_ms)
        if ack.get("created_ms"):
            lat["web->exchange"].append(row["time"] - ack["created_ms"])
            lat["send->web"].append(ack["created_ms"] - send_ms)
            if xadd is not None:
                lat["web->XADD"].append(xadd - ack["created_ms"])
        if ack.get("sent_ms") and xadd is not None:
            lat["XADD->exec"].append(ack["sent_ms"] - xadd)
            lat["exec->exchange"].append(row["time"] - ack["sent_ms"])
        if ack["ok"] is True:  # an answer with the outcome (not a 202 "queued")
            answered = row["updateTime"] if c["type"] == "MARKET" else row["time"]
            lat["exchange->ack"].append(c["ack_ns"] / 1e6 - answered)
            if ("result", c["rid"]) in evt_ms:
                lat["result XADD->ack"].append(c["ack_ns"] / 1e6 - evt_ms[("result", c["rid"])])
        if c["type"] != "MARKET":
            continue
        if row["status"] != "FILLED":
            n[f"exchange status {row['status']}"] += 1
            continue
        fill = first_fill.get(cid)
        if fill is None:
            n["no fill event"] += 1
        else:
            n["fills"] += 1
            lat["fill->socket"].append(fill["ns"] / 1e6 - fill["time"])
            if ("fill", cid) in evt_ms:
                lat["fill->XADD"].append(evt_ms[("fill", cid)] - fill["time"])
                lat["XADD->socket"].append(fill["ns"] / 1e6 - evt_ms[("fill", cid)])
        order = filled.get(cid)
        if order is None:
            n["no FILLED event"] += 1
        else:
            lat["FILLED->socket"].append(order["ns"] / 1e6 - order["update_ms"])
    row: dict[str, float] = {"commands/s": len(cmds) / ((w1_ns - w0_ns) / 1e9)}
    main = ["cmd->exchange", "web->exchange", "fill->socket", "FILLED->socket"]
    if s.args.orders == "limit":
        main = ["cmd->exchange", "web->exchange", "cancel->exchange"]
    for name in main:
        row.update({f"{name} {k}": v for k, v in pcts(lat[name]).items()})
    for name in (
        "send->web",
        "web->XADD",
        "XADD->exec",
        "exec->exchange",
        "exchange->ack",
        "result XADD->ack",
        *(("fill->XADD", "XADD->socket") if s.args.orders == "market" else ()),
        *(("cancel send->XADD", "cancel XADD->exchange") if s.args.orders == "limit" else ()),
    ):
        row.update({f"{name} {k}": v for k, v in pcts(lat[name], ("p50", "p99", "max")).items()})
    return row, n


def show(row: dict[str, float]) -> str:
    def fmt(k: str, v: float) -> str:
        if k.endswith("CPU"):
            return f"{k}={v:.0%}"
        if isinstance(v, float) and (math.isnan(v) or abs(v) < 100):
            return f"{k}={v:.1f}"
        return f"{k}={v:,.0f}"

    return "  ".join(fmt(k, v) for k, v in row.items())


def cpu_row(w0: dict[str, Any], w1: dict[str, Any]) -> dict[str, float]:
    dt = w1["t"] - w0["t"]
    cpu: dict[str, float] = Counter()
    for name in w0["cpu"]:
        if name in w1["cpu"]:
            key = "load CPU" if name.startswith("load-") else f"{name} CPU"
            cpu[key] += (w1["cpu"][name] - w0["cpu"][name]) / dt
    busy = (w1["busy"] - w0["busy"]) / dt
    return {**cpu, "other CPU": busy - sum(cpu.values()), "machine CPU": busy}


def watch(s: Stack, seconds: float) -> dict[str, float]:
    """Sleep ``seconds``, sampling each second the web's health (pump lag, GC pause per
    generation, longest tick; each the largest since the web's previous report) and the
    simulator's REST weight used this minute; return the window's maxima."""
    end, seen = time.time() + seconds, Counter[str]()
    minute, used = -1, 0
    while (left := end - time.time()) > 0:
        time.sleep(min(1.0, left))
        s.check_alive()
        reports = s.p.r.hvals(s.keys.web_health())
        h = orjson.loads(reports[0]) if reports else {}
        for k in ("lag_ms_max", "gc_ms_max", "tick_ms_max", "gc_cpu_ms_max"):
            seen[k] = max(seen[k], h.get(k, 0))
        for gen, ms in enumerate(h.get("gc_ms_max_gen", ())):
            seen[f"gc{gen}"] = max(seen[f"gc{gen}"], ms)
        now_min = int(time.time() // 60)
        if now_min != minute:
            minute, used = now_min, 0
        used = max(used, s.sim_weight())
        seen["weight"] = max(seen["weight"], used)
    return {
        "pump lag max": seen["lag_ms_max"],
        "GC pause max": seen["gc_ms_max"],
        **{f"GC gen{gen} max": seen[f"gc{gen}"] for gen in range(3)},
        "tick max": seen["tick_ms_max"],
        "GC cpu max": seen["gc_cpu_ms_max"],
        "sim weight/min max": seen["weight"],
    }


def probe_sim(s: Stack) -> dict[str, float]:
    """Time the simulator's answers under the load: a trivial GET /fapi/v1/time, and the GET
    /fapi/v2/account that execution sends after fills (trader 0's account), 5 of each."""
    times: dict[str, list[float]] = {"sim GET time ms": [], "sim GET account ms": []}
    for _ in range(5):
        t0 = time.perf_counter()
        s.p.http.get("/fapi/v1/time")
        times["sim GET time ms"].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        s.sim_signed(s.accounts[0], "/fapi/v2/account")
        times["sim GET account ms"].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def md_row(got: dict[str, Any]) -> dict[str, float]:
    e2e = got["hist"]["e2e"]
    if not e2e:
        return {"md/s": 0.0}
    return {
        "md clients": got["live"],
        "md/s": got["counts"]["md"] / got["seconds"],
        "md p50": web_fanout.percentile(e2e, 0.5),
        "md p99": web_fanout.percentile(e2e, 0.99),
        "md max": max(e2e),
    }


def web_alone(s: Stack) -> None:
    """Give the web process (gunicorn and its worker) CPU 0 and every other process of the run
    (Redis, simulator, replay, execution, md load, traders, this script) CPU 1: the web on a
    machine of its own, as a deploy gives it, with everything else sharing the other core."""
    web = {p.pid for p in candles_rate.tree(s.p.procs["web"].pid)}
    for proc in candles_rate.tree(os.getpid()):
        candles_rate.pin(proc.pid, 0 if proc.pid in web else 1)


OUTSIDE = ("replay", "load-")  # stand-ins for the market's feed and the browsers


def outside_nice(s: Stack, nice: int) -> None:
    """Give every thread of the processes that stand in for the world outside the deploy (the
    replayed market, the md clients' load) the nice value ``nice``: on a shared 2-core machine
    the system under test (web, execution, Redis) then gets the CPU first, as it would with the
    browsers on other machines. The simulator and the traders stay at 0: their clocks are the
    measurement (niced, the simulator stamped orders late: exec->exchange p99 45-74 ms)."""
    for name, pid in s.p.pids.items():
        if name.startswith(OUTSIDE):
            for proc in candles_rate.tree(pid):
                for t in proc.threads():
                    os.setpriority(os.PRIO_PROCESS, t.id, nice)


def latency_run(s: Stack, args: argparse.Namespace) -> None:
    if args.web_alone:
        web_alone(s)  # before the load and the traders start: they inherit CPU 1
    if args.md_clients:
        s.start_load()
        if args.outside_nice:
            outside_nice(s, args.outside_nice)
        s.ramp()
    elif args.outside_nice:
        outside_nice(s, args.outside_nice)
    s.start_traders(args.rate)
    s.traders_cmd("go")
    time.sleep(args.warmup)
    s.traders_cmd("collect", time.time_ns())  # the warm-up's commands are not counted
    if args.md_clients:
        s.ask("collect")
    events: list[dict[str, Any]] = []
    rows, counts = [], Counter[str]()
    for _ in range(args.repeat):
        w0, w0_ns = s.snapshot(), time.time_ns()
        health = watch(s, args.seconds)
        w1, w1_ns = s.snapshot(), time.time_ns()
        md = md_row(s.ask("collect")) if args.md_clients else {}
        t_grace = time.time() + args.grace
        row_probe = probe_sim(s)
        time.sleep(max(0.0, t_grace - time.time()))  # the window's last commands and fills arrive
        got = s.traders_cmd("collect", w1_ns)
        events += got["events"]
        row, n = analyse(s, got, events, w0_ns, w1_ns)
        row.update({**md, **health, **row_probe, **cpu_row(w0, w1)})
        rows.append(row)
        counts.update(n)
        print("  " + show(row), flush=True)
        print(f"  counts: {dict(n)}  trader errors: {got['errors']}", flush=True)
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    print(
        f"median of {len(rows)}: " + show({k: statistics.median(r[k] for r in rows) for k in keys})
    )
    print(f"counts over all windows: {dict(counts)}")
    h = s.exec_health()
    offsets = sorted({a.get("offset_ms") for a in h.get("accounts", {}).values()} - {None})
    print(
        f"execution health: commands={h.get('commands')} pending={h.get('pending')} "
        f"clock offsets to the simulator (ms): {offsets}"
    )
    s.health()


# --- throughput ----------------------------------------------------------------------------------


def queue_commands(s: Stack, n: int, run: str) -> list[tuple[str, str]]:
    """Store and queue ``n`` MARKET place commands exactly as web/commands.py does; return
    their (address, request id)."""
    submit = s.p.r.register_script(_SUBMIT)
    out, sides = [], Counter[int]()
    pipe = s.p.r.pipeline(transaction=False)
    for k in range(n):
        i = k % len(s.accounts)
        acc = s.accounts[i]
        side = "BUY" if sides[i] % 2 == 0 else "SELL"
        sides[i] += 1
        rid, cid, now = f"{run}-{k}", new_cid(), time.time_ns() // 1_000_000
        qty = Decimal(acc["qty"])
        cmd = OrderCommand(
            rid,
            acc["address"],
            "place",
            now,
            symbol=acc["symbol"],
            client_order_id=cid,
            side=side,
            order_type="MARKET",
            quantity=qty,
        )
        order = Order(
            cid,
            acc["symbol"],
            side,
            "MARKET",
            format(qty, "f"),
            "PENDING",
            request_id=rid,
            created_ms=now,
        )
        keys, argv = submission(s.keys, cmd, order, per_minute=100_000)
        submit(keys=keys, args=argv, client=pipe)
        out.append((acc["address"], rid))
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()
    return out


def throughput_run(s: Stack, args: argparse.Namespace) -> None:
    assert s.execution is not None
    per_account = math.ceil(args.commands / len(s.accounts))
    if per_account > 250:
        print(
            f"# warning: {per_account} orders per account in one burst: the exchange's "
            "300 per 10 s limit may refuse some",
            flush=True,
        )
    exec_proc = psutil.Process(s.execution.pid)
    rows = []
    for rep in range(args.repeat):
        time.sleep(args.grace)  # the previous repeat's account refreshes settle
        os.kill(s.execution.pid, signal.SIGSTOP)
        try:
            since_ms = time.time_ns() // 1_000_000
            queued = queue_commands(s, args.commands, f"t{os.getpid()}-{rep}")
        finally:
            w0 = s.snapshot()
            c0, t0_ns = cpu_s(s.execution.pid), time.time_ns()
            os.kill(s.execution.pid, signal.SIGCONT)
        live = [s.keys.orders_live(a["address"]) for a in s.accounts]
        deadline = time.time() + 300
        while True:
            with s.p.r.pipeline(transaction=False) as pipe:
                for key in live:
                    pipe.hlen(key)
                left = sum(pipe.execute())
            if not left or time.time() > deadline:
                break
            time.sleep(0.02)
        t1_ns, c1 = time.time_ns(), cpu_s(s.execution.pid)
        w1 = s.snapshot()
        _, evt = stream_times(s, since_ms)
        done_ms = [evt[("result", rid)] for _, rid in queued if ("result", rid) in evt]
        statuses: Counter[str] = Counter()
        prefix = f"t{os.getpid()}-{rep}-"
        for _, fields in s.p.r.xrange(s.keys.order_events(), f"{since_ms}-0", "+"):
            e = orjson.loads(fields[b"d"])
            if e["kind"] == "result" and (e.get("request_id") or "").startswith(prefix):
                statuses[(e["data"].get("order") or {}).get("status", "?")] += 1
        t0_ms = t0_ns / 1e6
        span_s = (max(done_ms) - t0_ms) / 1000 if done_ms else math.nan
        row = {
            "commands": len(queued),
            "results": len(done_ms),
            "left in live": left,
            "seconds": span_s,
            "commands/s": len(done_ms) / span_s,
            "execution CPU": (c1 - c0) / ((t1_ns - t0_ns) / 1e9),
            **{
                k: v
                for k, v in cpu_row(w0, w1).items()
                if k.startswith(("redis", "simulator", "web", "machine", "other"))
            },
        }
        rows.append(row)
        print(
            f"  {show(row)}  statuses={dict(statuses)}  threads={exec_proc.num_threads()}",
            flush=True,
        )
        if not all(st in FINAL for st in statuses):
            print(f"  note: non-final statuses in results: {dict(statuses)}")
    print(
        f"median of {len(rows)}: "
        + show({k: statistics.median(r[k] for r in rows) for k in rows[0]})
    )
    h = s.exec_health()
    print(f"execution health: {orjson.dumps({k: v for k, v in h.items() if k != 'accounts'})}")


# --- the simulator's own cost ------------------------------------------------------------------


def sim_cost_run(args: argparse.Namespace) -> None:
    """Time the simulator's answers for one account as its kept orders grow (the simulator alone,
    idle market): POST a MARKET order, GET /fapi/v2/account, GET /fapi/v2/positionRisk."""
    rest, ws = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--rest-port",
            str(rest),
            "--ws-port",
            str(ws),
            "--symbols",
            str(args.symbols),
            "--rate",
            "0",
            "--steady",
            "--log-level",
            "WARNING",
            "--weight-limit",
            "100000000",
        ],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{rest}", timeout=30, trust_env=False)
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/fapi/v1/ping").status_code == 200:
                    break
            time.sleep(0.2)
        sim = http.post("/sim/accounts", json={"balance": "100000"}).json()
        acc = {"api_key": sim["apiKey"], "secret": sim["secretKey"]}

        def call(method: str, path: str, **params: Any) -> float:
            query = urlencode({**params, "timestamp": int(time.time() * 1000)})
            query += "&signature=" + hmac_sign(acc["secret"], query)
            t0 = time.perf_counter()
            resp = http.request(method, f"{path}?{query}", headers={"X-MBX-APIKEY": sim["apiKey"]})
            resp.raise_for_status()
            return (time.perf_counter() - t0) * 1000

        placed = 0

        def order() -> float:
            nonlocal placed
            side = "BUY" if placed % 2 == 0 else "SELL"
            placed += 1
            return call(
                "POST",
                "/fapi/v1/order",
                symbol="BTCUSDT",
                side=side,
                type="MARKET",
                quantity="0.001",
                newOrderRespType="RESULT",
            )

        for target in (0, 250, 500, 1000, 1500):
            while placed < target:  # paced under the account's 1,200 orders a minute
                t0 = time.monotonic()
                order()
                time.sleep(max(0.0, 1 / 19 - (time.monotonic() - t0)))
            times: dict[str, list[float]] = defaultdict(list)
            for _ in range(20):
                times["POST order"].append(order())
                times["GET account"].append(call("GET", "/fapi/v2/account"))
                times["GET positionRisk"].append(call("GET", "/fapi/v2/positionRisk"))
                time.sleep(1 / 19)
            print(
                f"  orders kept {placed - 20:5d}: "
                + "  ".join(f"{k} p50={statistics.median(v):.1f} ms" for k, v in times.items()),
                flush=True,
            )
    finally:
        stop_group(proc, 10)


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--throughput", action="store_true", help="measure commands/s instead")
    parser.add_argument(
        "--sim-cost",
        action="store_true",
        help="time the simulator's answers as an account's orders grow",
    )
    parser.add_argument("--traders", type=int, default=10, help="signed-in users, one account each")
    parser.add_argument("--rate", type=float, default=50, help="trade commands/s, all traders")
    parser.add_argument(
        "--orders",
        choices=("market", "limit"),
        default="market",
        help="market: MARKET orders (fills); limit: resting LIMIT + cancel",
    )
    parser.add_argument("--commands", type=int, default=2000, help="throughput: per repeat")
    parser.add_argument("--md-clients", type=int, default=2000)
    parser.add_argument("--md-source", choices=("replay", "pipeline", "none"), default="replay")
    parser.add_argument("--md-rate", type=float, default=9500, help="pipeline aggTrades/s")
    parser.add_argument("--replay-seconds", type=float, default=60, help="recording's length")
    parser.add_argument("--record-warmup", type=float, default=20)
    parser.add_argument("--symbols", type=int, default=300, help="simulator instruments")
    parser.add_argument("--symbols-per-client", type=int, default=5)
    parser.add_argument("--ramp-per-s", type=float, default=25, help="new md clients per second")
    parser.add_argument("--warmup", type=float, default=10, help="s of trading before windows")
    parser.add_argument("--seconds", type=float, default=30, help="measured window")
    parser.add_argument("--grace", type=float, default=5, help="s after a window before reading")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--sim-weight-limit",
        type=int,
        default=2400,
        help="simulator REST weight per IP per minute (Binance: 2400)",
    )
    parser.add_argument(
        "--web-alone",
        action="store_true",
        help="pin the web process to CPU 0 and every other process to CPU 1 (on a 2-core "
        "machine the rest does not fit on one core: execution fell 30 s behind, RESULTS.md)",
    )
    parser.add_argument(
        "--outside-nice",
        type=int,
        default=0,
        help="nice value of the stand-ins for the outside world (replay, md load): the system "
        "under test gets the CPU first, as with the browsers on other machines",
    )
    parser.add_argument("--web-env", action="append", default=[], help="KEY=VALUE for the web")
    parser.add_argument("--logs", default="", help="keep the processes' logs in this directory")
    args = parser.parse_args()
    if args.throughput:
        args.md_source, args.md_clients = "none", 0
    # What web_fanout's Bench, start_web, start_load and ramp read.
    args.clients, args.replay = (
        args.md_clients,
        (args.replay_seconds if args.md_source == "replay" else 0),
    )
    args.timeframe, args.procs, args.retry_s, args.seed = "1m", 0, 2.0, 1
    args.web_cmd, args.web_nice = "", 0
    kek = "k1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    args.secrets = {"TP_JWT_KEYS": "k1:" + secrets.token_hex(24), "TP_KEY_ENCRYPTION_KEY": kek}
    per_user = math.ceil(args.rate / args.traders * 60 * 2)
    args.web_env = [
        *(f"{k}={v}" for k, v in args.secrets.items()),
        "TP_LOGIN_PER_MINUTE_IP=1000",
        "TP_LOGIN_PER_MINUTE_ADDRESS=1000",
        f"TP_TRADE_PER_MINUTE={min(100_000, max(120, per_user))}",
        "TP_ACCESS_TTL_S=7200",
        *args.web_env,
    ]
    candles_rate.PIN.update(dict.fromkeys(candles_rate.PIN), web=None, load=None, replay=None)
    print(f"# {' '.join(sys.argv)}")
    print(f"# code: {code_version()}")
    print(
        f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
        f"python={platform.python_version()} calibration={calibrate():.2f} us/decode "
        f"loadavg={os.getloadavg()}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.sim_cost:
        sim_cost_run(args)
        return
    try:
        with contextlib.ExitStack() as stack:
            if args.logs:
                tmp = Path(args.logs)
                tmp.mkdir(parents=True, exist_ok=True)
            else:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            s = Stack(args, tmp)
            try:
                s.link_traders(args.traders)
                (throughput_run if args.throughput else latency_run)(s, args)
            finally:
                s.close()
    finally:
        kill_descendants()
        print(f"# code at the end: {code_version()}")


if __name__ == "__main__":
    main()
