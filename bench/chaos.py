"""Chaos harness (issue 16): every process type killed, Redis restarted, the exchange misbehaving,
traders trading and clients watching; then every candle, order, fill and client view checked.

Run by hand (not part of the test suite; ``tests/e2e/test_chaos.py`` runs a short one)::

    .venv/bin/python bench/chaos.py --minutes 30                 # the long run
    .venv/bin/python bench/chaos.py --minutes 2 --kill-every 4   # a quick look
    .venv/bin/python bench/chaos.py --help

**The stack.** A redis-server of its own (``demo/redis_server.py``) with the persistence README.md
("What Redis must keep") documents for user data: the append-only file, ``appendfsync everysec``.
The simulator runs in this process (``tests/e2e/conftest.py`` ``RunningSim``: its ledgers are the
ground truth). Every Procfile process type runs as a real process in its own process group:
``feeder``, ``consumer``, ``worker``, ``signals`` (``tests/e2e/pipeline.py`` ``Pipeline``),
``execution`` and ``web`` (gunicorn, gevent; ``tests/e2e/tradestack.py`` ``TradeStack``). The
harness imports those test helpers rather than copying them, as it does the ground-truth
comparison's pieces (``tests/e2e/test_candles.py``): ``bench/`` scripts otherwise stand alone.

**Load.** ``--traders`` users signed in with SIWE, each linked to a simulator account (HMAC
keys, every third one a server-generated Ed25519 key), place orders every ``--order-every`` s:
MARKET orders (BUY and SELL in turn, BTCUSDT or ETHUSDT), and now and then a far LIMIT order
then its cancel; over REST and over their socket in turn, each with a request id made once per
intent and sent again (same id) after any failure, as the page does. ``--md-clients`` Socket.IO
clients subscribe to 15s and 1m candle rooms (plus a book and a tape room) and reconnect and
subscribe again whenever they are disconnected.

**Chaos**, for ``--minutes``: every ``--kill-every`` s (±50 %) one process gets SIGKILL (its whole
process group), taken from a shuffled bag of the six types, so every type is killed equally
often; it is started again 0.5-1.5 s later, as a supervisor would. A process that exits without
being killed is counted (``unexpected_exits``, with its log's last lines) and restarted. Every
``--redis-every`` s Redis restarts, alternately shut down cleanly (SHUTDOWN SAVE) and crashed
(SIGKILL: the append-only file is all it has). Every ``--fault-every`` s the simulator gets one
fault (docs/simulator.md, docs/simulator-trading.md): drops, stalls, duplicates, reorders,
delays, refused reconnects, the whole exchange down, REST 5xx and 429, lost order answers,
lookup lag, expired listen keys, dropped user streams.

**Checks**, once the market is stopped and the pipeline settled:

* candles: every closed candle of every symbol and timeframe against the simulator's ledger
  (1m and 5m: its klines; 15s: a fold of every trade it emitted), every traded period present;
  a 1m/5m candle still ``partial`` is a mismatch; ``trades_lost`` sums the trades the exchange's
  1m klines count beyond ours;
* orders: each request id's order against the simulator's record of the account: none lost (the
  exchange has it and we do not, or call it REJECTED; we show it placed and the exchange has
  none), none duplicated (two exchange orders for one client order id or one request id, or an
  exchange order we never asked for), none left unresolved (PENDING, SENDING, UNKNOWN), final
  status and executed quantity equal; every exchange fill recorded, none invented. Our orders and
  fills are read from Redis every few seconds, so the per-user bounds (500 done orders, 1,000
  fills) trim nothing from the comparison;
* clients: what each client holds per candle room (latest value per open time, as the page keeps
  it) against the stored candles, from its first snapshot on: a candle missing or different is a
  gap it was not told about (being disconnected or kicked is being told, and its resubscription's
  snapshot must then cover the hole).

Printed: a readable summary, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis
import socketio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.keys import Keys  # noqa: E402
from core.trading import Order  # noqa: E402
from demo.redis_server import RedisServer  # noqa: E402
from tests.e2e.conftest import RunningSim, sim_config  # noqa: E402
from tests.e2e.pipeline import SHARDS, Pipeline, Service  # noqa: E402
from tests.e2e.test_candles import as_bar, truth_from_trades, truth_klines  # noqa: E402
from tests.e2e.tradestack import KEK, Trader, TradeStack  # noqa: E402
from tests.e2e.webstack import JWT_KEYS, free_port, sign_in  # noqa: E402
from web.market import candle_json  # noqa: E402

TYPES = ("feeder", "consumer", "worker", "signals", "execution", "web")
TRADED = ("BTCUSDT", "ETHUSDT")
QTY = {"BTCUSDT": "0.010", "ETHUSDT": "0.100"}
SIGNALS_TOML = """
[[signal]]
name = "rsi_15s"
formula = "rsi"
params = { period = 5 }
timeframes = ["15s"]

[[signal]]
name = "ema_1m"
formula = "ema_cross"
params = { fast = 3, slow = 5 }
timeframes = ["1m"]
"""
# The faults drawn from, with their weights. Feed faults last a few seconds; ``down`` takes the
# whole exchange away (REST too), so it is rarer.
FAULTS: list[tuple[int, Callable[[random.Random, list[str]], dict[str, Any]]]] = [
    (3, lambda r, s: {"type": "drop", "path": r.choice(["/market", "/public"])}),
    (2, lambda r, s: {"type": "stall", "symbol": r.choice(s), "seconds": r.uniform(2, 6)}),
    (2, lambda r, s: {"type": "duplicate", "every": r.choice([1, 3]), "seconds": 5}),
    (2, lambda r, s: {"type": "reorder", "seconds": 5}),
    (1, lambda r, s: {"type": "delay", "ms": r.choice([200, 800]), "seconds": 4}),
    (2, lambda r, s: {"type": "refuse", "seconds": r.uniform(2, 6)}),  # + a drop: see inject
    (1, lambda r, s: {"type": "down", "seconds": r.uniform(1, 4)}),
    (2, lambda r, s: {"type": "rest", "status": r.choice([500, 502, 503]), "count": 3}),
    (1, lambda r, s: {"type": "rest", "status": 429, "count": 2, "path": "/fapi/v1/klines"}),
    (
        3,
        lambda r, s: {
            "type": "order_unknown",
            "mode": r.choice(["503", "408", "timeout"]),
            "ms": 4000,
            "count": 1,
        },
    ),
    (1, lambda r, s: {"type": "rest", "status": 503, "count": 1, "path": "/fapi/v1/order"}),
    (1, lambda r, s: {"type": "lookup_lag", "ms": 1500, "seconds": 10}),
    (1, lambda r, s: {"type": "listenkey_expire"}),
    (1, lambda r, s: {"type": "drop", "path": "/private"}),
]


def fault_name(spec: dict[str, Any]) -> str:
    """Name a fault for the counts: its type, plus what tells its variants apart."""
    kind = spec["type"]
    if kind == "drop":
        return f"drop {spec['path']}"
    if kind == "rest":
        return f"rest {spec['status']}" + (f" {spec['path']}" if "path" in spec else "")
    if kind == "order_unknown":
        return f"order_unknown {spec['mode']}"
    return str(kind)


@dataclass
class Config:
    minutes: float = 10.0
    kill_every_s: float = 8.0
    fault_every_s: float = 6.0
    redis_every_s: float = 150.0
    traders: int = 3
    order_every_s: float = 2.0
    md_clients: int = 4
    symbols: int = 6
    rate: float = 30.0
    seed: int = 1
    warmup_s: float = 0.0  # trading and clients, no chaos yet (clean candles to compare)
    wait_minute_close: bool = True  # compare the last minute's 1m candles too
    work_dir: Path | None = None
    keep: bool = False


# --- processes ---------------------------------------------------------------------------------


def group_rss(service: Service) -> int:
    """Return the RSS (bytes) of a service's process and all its children (gunicorn, dramatiq)."""
    if service.proc is None or service.proc.poll() is not None:
        return 0
    try:
        root = psutil.Process(service.proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class Supervisor:
    """Kills and restarts our processes; notices the ones that exit on their own."""

    def __init__(self, services: dict[str, Service], rng: random.Random) -> None:
        self.services = services
        self.rng = rng
        self.kills: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.exit_tails: list[tuple[str, str]] = []
        self._restart_at: dict[str, float] = {}
        self._bag: list[str] = []
        self.started_at = {name: time.monotonic() for name in services}

    def kill_one(self) -> str:
        if not self._bag:
            self._bag = list(self.services)
            self.rng.shuffle(self._bag)
        name = self._bag.pop()
        if name in self._restart_at:  # still down from the last kill: its turn comes later
            self._bag.insert(0, name)
            return ""
        svc = self.services[name]
        with contextlib.suppress(ProcessLookupError, AssertionError):
            svc.kill9()
        self.kills[name] += 1
        self._restart_at[name] = time.monotonic() + self.rng.uniform(0.5, 1.5)
        return name

    def tick(self) -> None:
        now = time.monotonic()
        for name, svc in self.services.items():
            due = self._restart_at.get(name)
            if due is not None:
                if now >= due:
                    del self._restart_at[name]
                    svc.start()
                    self.started_at[name] = now
            elif not svc.alive():
                self.unexpected[name] += 1
                self.exit_tails.append((name, svc.tail()[-1500:]))
                svc.start()
                self.started_at[name] = now

    def restart_all_pending(self) -> None:
        for name in list(self._restart_at):
            self._restart_at[name] = 0.0
        self.tick()


# --- traders ------------------------------------------------------------------------------------


@dataclass
class Request:
    """One intent of a trader: its request id, and every answer it got."""

    rid: str
    trader: int
    action: str
    body: dict[str, Any]
    via: str
    attempts: int = 0
    status: int | None = None  # last HTTP status (None: a socket answer)
    answer: dict[str, Any] | None = None
    cids: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


class ChaosTrader:
    """A signed-in, linked user placing orders through whatever the chaos leaves standing."""

    def __init__(self, index: int, stack: TradeStack, ed25519: bool, ticks: dict[str, Decimal],
                 rng: random.Random) -> None:  # fmt: skip
        self.index, self.stack, self.ticks, self.rng = index, stack, ticks, rng
        self.trader = Trader(stack)
        self.account = self.trader.account
        self.address = self.trader.address
        if ed25519:
            pem = self.trader.call("POST", "/api/account/keypair").json()["public_key"]
            self.exchange = stack.exchange_account(publicKey=pem)
            resp = self.trader.post("/api/account/link", kind="ed25519",
                                    api_key=self.exchange["apiKey"])  # fmt: skip
        else:
            self.exchange = stack.exchange_account()
            resp = self.trader.link_hmac(self.exchange)
        if resp.status_code != 200 or resp.json().get("ok") is not True:
            raise RuntimeError(f"linking trader {index} failed: {resp.text}")
        self.kind = "ed25519" if ed25519 else "hmac"
        self.api_key = self.exchange["apiKey"]
        self.requests: list[Request] = []
        self.reconnects = 0
        self._n = 0
        self._side = 0

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.trader.close()
        self.reconnects += 1
        self.trader = Trader(self.stack, self.account)  # raises while the web is down

    def send(self, action: str, body: dict[str, Any], via: str, stop: threading.Event) -> Request:
        """Send one command until it gets an answer (same request id every time) or 90 s pass."""
        self._n += 1
        req = Request(f"c{self.index}-{self._n}-{time.time_ns() % 10**9}", self.index, action,
                      body, via)  # fmt: skip
        self.requests.append(req)
        path = {"place": "/api/orders", "cancel": "/api/orders/cancel"}[action]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            req.attempts += 1
            try:
                if via == "socket":
                    ans = self.trader.sio.call("trade", {"action": action, "request_id": req.rid,
                                                         **body}, timeout=10)  # fmt: skip
                    status = None
                else:
                    resp = self.trader.call("POST", path, {"request_id": req.rid, **body})
                    status = resp.status_code
                    ans = resp.json() if resp.headers.get("content-type", "").startswith(
                        "application/json") else None  # fmt: skip
            except Exception as exc:  # the web was killed mid-request, or is down
                req.errors.append(type(exc).__name__)
                time.sleep(1)
                with contextlib.suppress(Exception):
                    self._reconnect()
                continue
            if not isinstance(ans, dict) or (status is not None and status >= 500):
                req.errors.append(f"http {status}")
                time.sleep(1)
                continue
            req.status, req.answer = status, ans
            order = ans.get("order")
            if isinstance(order, dict) and order.get("client_order_id"):
                req.cids.add(order["client_order_id"])
            if ans.get("error") in ("invalid_token", "token_expired", "token_revoked",
                                    "unauthorized"):  # fmt: skip
                req.errors.append(str(ans["error"]))
                with contextlib.suppress(Exception):
                    self._reconnect()
                continue
            return req
        req.errors.append("gave up")
        return req

    def run(self, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s * self.rng.uniform(0.5, 1.5)):
            via = "socket" if self._n % 2 else "rest"
            symbol = self.rng.choice(TRADED)
            try:
                if self.rng.random() < 0.8:
                    side = ("BUY", "SELL")[self._side % 2]
                    self._side += 1
                    self.send("place", {"symbol": symbol, "side": side, "type": "MARKET",
                                        "quantity": QTY[symbol]}, via, stop)  # fmt: skip
                    continue
                price = self._far_price(symbol)
                if price is None:
                    continue
                placed = self.send("place", {"symbol": symbol, "side": "BUY", "type": "LIMIT",
                                             "time_in_force": "GTC", "quantity": QTY[symbol],
                                             "price": price}, via, stop)  # fmt: skip
                order = (placed.answer or {}).get("order") or {}
                if order.get("status") == "NEW" and not stop.is_set():
                    self.send("cancel", {"symbol": symbol,
                                         "client_order_id": order["client_order_id"]},
                              "rest" if via == "socket" else "socket", stop)  # fmt: skip
            except Exception as exc:  # a harness bug must not end the run silently
                print(f"trader {self.index}: {exc!r}", file=sys.stderr)

    def _far_price(self, symbol: str) -> str | None:
        sim = self.stack.sim
        try:
            book = sim.call(lambda: sim.sim.view.best_bid_ask(symbol))
        except Exception:
            return None
        if book is None:
            return None
        tick = self.ticks[symbol]
        return str((book[0] * Decimal("0.9") / tick).to_integral_value() * tick)


# --- market-data clients ------------------------------------------------------------------------


class MdClient:
    """A Socket.IO client that stays subscribed (resubscribing after every reconnect) and keeps
    the latest value per open time of each candle room, as the page does (web/static/app.js):
    a live candle older than every held one is of a range not held; a candle subscription asks
    ``since`` the oldest held candle that may still change (the newest held if all are final),
    so that its snapshot brings the repairs made while it was away; a room the server lists in
    ``md.resync`` is subscribed to again the same way."""

    def __init__(self, base_url: str, token: str, rooms: list[dict[str, str]]) -> None:
        self.rooms = rooms
        self.lock = threading.Lock()
        self.view: dict[str, dict[int, dict[str, Any]]] = {}
        self.first_open: dict[str, int] = {}
        self.connects = 0
        self.disconnects = 0  # told: the socket went away
        self.kicked = 0
        self.refused: list[Any] = []
        self.md_messages = 0
        self.resyncs = 0  # rooms the server said to subscribe to again
        self.retried = 0  # subscriptions answered `unavailable` and sent again
        self.sio = socketio.Client(reconnection=True, reconnection_attempts=0,
                                   reconnection_delay=0.5, reconnection_delay_max=2)  # fmt: skip
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("snapshot", self._on_snapshot)
        self.sio.on("md", self._on_md)
        self.sio.on("kicked", self._on_kicked)
        self.sio.connect(base_url, auth={"token": token}, transports=["websocket"],
                         wait_timeout=10)  # fmt: skip

    def _on_connect(self) -> None:
        self.connects += 1
        for room in self.rooms:
            self._subscribe(room)

    def _subscribe(self, room: dict[str, str]) -> None:
        payload: dict[str, Any] = dict(room)
        if room["channel"] == "candles":
            with self.lock:
                held = self.view.get(f"c:{room['symbol']}:{room['timeframe']}", {})
                changing = [t for t, c in held.items()
                            if not (c["closed"] and c["source"] == "exchange")]  # fmt: skip
                since = min(changing, default=max(held, default=None))
            if since is not None:
                payload["since"] = since
        self.sio.emit("subscribe", payload, callback=lambda *ack: self._on_ack(room, *ack))

    def _on_ack(self, room: dict[str, str], ack: Any = None) -> None:
        if isinstance(ack, dict) and ack.get("error") == "unavailable":  # "try again", as the page
            self.retried += 1
            timer = threading.Timer(1.0, lambda: self.sio.connected and self._subscribe(room))
            timer.daemon = True
            timer.start()
        elif not (isinstance(ack, dict) and ack.get("ok")):
            self.refused.append(ack)

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnects += 1

    def _on_kicked(self, *_: Any) -> None:
        self.kicked += 1

    def _merge(self, room: str, candles: Any, *, snapshot: bool = False) -> None:
        if not room.startswith("c:") or not isinstance(candles, list):
            return
        with self.lock:
            held = self.view.setdefault(room, {})
            for c in candles:
                t = int(c["open_time"])
                if room not in self.first_open:
                    self.first_open[room] = t
                if t < self.first_open[room] and not snapshot:
                    continue  # a repair of a range not held
                held[t] = c
                self.first_open[room] = min(self.first_open[room], t)

    def _on_snapshot(self, data: Any) -> None:
        if isinstance(data, dict) and "candles" in data:
            room = str(data.get("room", ""))
            candles = data["candles"]
            with self.lock:  # the first snapshot of a room sets where its check starts
                if room not in self.first_open and candles:
                    self.first_open[room] = min(int(c["open_time"]) for c in candles)
                if data.get("truncated") and candles:  # what it held before is unchecked
                    first = int(candles[0]["open_time"])
                    held = self.view.get(room, {})
                    self.view[room] = {t: c for t, c in held.items() if t >= first}
                    self.first_open[room] = first
            self._merge(room, candles, snapshot=True)

    def _on_md(self, data: Any) -> None:
        self.md_messages += 1
        for room, part in (data.get("rooms") or {}).items():
            self._merge(room, part.get("data"))
        for name in data.get("resync") or ():
            self.resyncs += 1
            for room in self.rooms:
                if f"c:{room.get('symbol')}:{room.get('timeframe')}" == name:
                    self._subscribe(room)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sio.disconnect()


# --- the run ------------------------------------------------------------------------------------


class Chaos:
    """The whole stack, the load, the chaos loop and the checks."""

    def __init__(self, cfg: Config, log: Callable[[str], None] = print) -> None:
        self.cfg, self.log = cfg, log
        self.rng = random.Random(cfg.seed)  # noqa: S311 - chaos, not crypto
        self.work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.namespace = "chaos"
        self.faults: Counter[str] = Counter()
        self.fault_errors: Counter[str] = Counter()
        self.redis_restarts: Counter[str] = Counter()
        self.rss: dict[str, dict[str, float]] = {}
        self.our_orders: dict[int, dict[str, Order]] = {}
        self.our_fills: dict[int, set[str]] = {}
        self.events_cursor: bytes | str = "0-0"  # orders:events read up to here
        self.fill_lateness_ms: list[int] = []  # fill told to its owner - its time on the exchange
        self.done_dups: dict[int, set[str]] = {}
        self.traders: list[ChaosTrader] = []
        self.clients: list[MdClient] = []
        self.stop_trading = threading.Event()
        self.threads: list[threading.Thread] = []
        self.redis_server: RedisServer | None = None
        self.sim: RunningSim | None = None
        self.pipeline: Pipeline | None = None
        self.stack: TradeStack | None = None

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        self.redis_server = RedisServer(self.work / "redis", appendonly=True)
        self.redis_server.start()
        self.sim = sim = RunningSim(sim_config(
            rate=cfg.rate, symbol_count=cfg.symbols, seed=cfg.seed, trade_retention=1_000_000,
            bar_retention=1500))  # fmt: skip
        symbols = [i.symbol for i in sim.sim.model.instruments]
        assert set(TRADED) <= set(symbols), symbols
        port = free_port()
        signals_file = self.work / "signals.toml"
        signals_file.write_text(SIGNALS_TOML)
        env = {
            "TP_MARKET": "sim", "TP_JWT_KEYS": JWT_KEYS, "TP_KEY_ENCRYPTION_KEY": KEK,
            "TP_WEB_ORIGIN": f"http://127.0.0.1:{port}", "TP_LOGIN_PER_MINUTE_IP": "100000",
            "TP_LOGIN_PER_MINUTE_ADDRESS": "100000", "TP_ACCESS_TTL_S": "86400",
            "TP_SYMBOLS": ",".join(symbols), "TP_SIGNALS_FILE": str(signals_file),
            "TP_EXEC_TIMEOUT_MS": "1500", "TP_EXEC_RECONCILE_S": "15",
            "TP_TRADE_REPLY_TIMEOUT_MS": "4000", "TP_TRADE_PER_MINUTE": "600",
            "PYTHONPATH": str(ROOT),
        }  # fmt: skip
        self.pipeline = p = Pipeline(sim, self.redis_server.url, self.namespace, self.work, **env)
        control = redis.Redis.from_url(self.redis_server.url)
        keys = Keys(self.namespace, SHARDS)
        self.stack = stack = TradeStack(sim, control, keys, p.env, self.work, port)
        stack.seen = deque(maxlen=200)  # type: ignore[assignment]  # bounded over a long run
        stack.start_execution()
        stack.start_web()
        p.wait_for("the universe", lambda: p.redis.exists(p.keys.universe()) > 0)
        assert stack.execution is not None
        assert stack.web is not None
        self.services = {"feeder": p.feeder, "consumer": p.consumer, "worker": p.worker,
                         "signals": p.signals, "execution": stack.execution,
                         "web": stack.web}  # fmt: skip
        filters = httpx.get(f"{stack.base_url}/api/instruments").json()["instruments"]
        ticks = {s: Decimal(filters[s]["tick_size"]) for s in TRADED}
        for i in range(cfg.traders):
            rng = random.Random(cfg.seed * 100 + i)  # noqa: S311 - chaos, not crypto
            self.traders.append(ChaosTrader(i, stack, i % 3 == 2, ticks, rng))
            self.our_orders[i], self.our_fills[i], self.done_dups[i] = {}, set(), set()
        for k in range(cfg.md_clients):
            _, login = sign_in(httpx.Client(base_url=stack.base_url))
            a, b = symbols[k % len(symbols)], symbols[(k + 1) % len(symbols)]
            rooms = [{"channel": "candles", "symbol": s, "timeframe": tf}
                     for s in (a, b) for tf in ("15s", "1m")]  # fmt: skip
            rooms += [{"channel": "book", "symbol": a}, {"channel": "trades", "symbol": b}]
            self.clients.append(MdClient(stack.base_url, login.json()["access_token"], rooms))
        self.sample_rss("start")
        self.log(f"started: {len(symbols)} symbols, {cfg.traders} traders, "
                 f"{cfg.md_clients} md clients; logs in {self.work}")  # fmt: skip

    # -- chaos ----------------------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.cfg
        assert self.sim is not None
        assert self.redis_server is not None
        sup = self.supervisor = Supervisor(self.services, self.rng)
        for t in self.traders:
            th = threading.Thread(target=t.run, args=(self.stop_trading, cfg.order_every_s),
                                  daemon=True)  # fmt: skip
            th.start()
            self.threads.append(th)
        if cfg.warmup_s:
            self.log(f"warm-up: {cfg.warmup_s:.0f} s without chaos")
            time.sleep(cfg.warmup_s)
        start = time.monotonic()
        end = start + cfg.minutes * 60
        next_kill = start + cfg.kill_every_s * self.rng.uniform(0.5, 1.5)
        next_fault = start + cfg.fault_every_s * self.rng.uniform(0.5, 1.5)
        next_redis = start + cfg.redis_every_s
        next_read = next_report = start
        while (now := time.monotonic()) < end:
            sup.tick()
            if now >= next_kill:
                sup.kill_one()
                next_kill = now + cfg.kill_every_s * self.rng.uniform(0.5, 1.5)
            if now >= next_fault:
                self.inject_fault()
                next_fault = now + cfg.fault_every_s * self.rng.uniform(0.5, 1.5)
            if now >= next_redis:
                self.restart_redis()
                next_redis = time.monotonic() + cfg.redis_every_s
            if now >= next_read:
                self.read_our_records()
                self.sample_rss("max")
                next_read = now + 5
            if now >= next_report:
                self.log(f"[{now - start:6.0f} s] kills {dict(sup.kills)} unexpected "
                         f"{dict(sup.unexpected)} redis {dict(self.redis_restarts)} faults "
                         f"{sum(self.faults.values())} orders "
                         f"{sum(len(t.requests) for t in self.traders)}")  # fmt: skip
                next_report = now + 60
            time.sleep(0.2)
        self.duration_s = time.monotonic() - start

    def inject_fault(self) -> None:
        assert self.sim is not None
        sim = self.sim
        weights = [w for w, _ in FAULTS]
        make = self.rng.choices([m for _, m in FAULTS], weights)[0]
        symbols = [i.symbol for i in sim.sim.model.instruments]
        spec = make(self.rng, symbols)
        specs = [spec]
        if spec["type"] == "refuse":  # refused reconnects: drop the feeds so that they try
            specs.append({"type": "drop", "path": "/market"})
        for s in specs:
            try:  # in-process: the admin API is unreachable while the exchange is down
                sim.call(lambda s=s: sim.sim.apply_fault(s))
                self.faults[fault_name(s)] += 1
            except Exception as exc:
                self.fault_errors[f"{fault_name(s)}: {exc!r}"] += 1

    def restart_redis(self) -> None:
        assert self.redis_server is not None
        crash = self.redis_restarts["crash"] < self.redis_restarts["clean"]
        if crash:
            self.redis_server.kill()  # a crash: the append-only file is all that is left
        else:
            self.redis_server.stop()  # SHUTDOWN SAVE
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.redis_server.start(timeout_s=60)
        self.redis_restarts["crash" if crash else "clean"] += 1

    def read_our_records(self) -> None:
        """Accumulate our orders and fills from Redis (their lists are bounded per user)."""
        assert self.stack is not None
        r, keys = self.stack.redis, self.stack.keys
        for t in self.traders:
            try:
                live = r.hvals(keys.orders_live(t.address))
                done = r.lrange(keys.orders_done(t.address), 0, -1)
                fills = r.hkeys(keys.order_fills(t.address))
            except redis.RedisError:
                return
            mine = self.our_orders[t.index]
            for raw in live:
                o = Order.from_json(raw)
                if o.client_order_id not in mine or not mine[o.client_order_id].final:
                    mine[o.client_order_id] = o
            seen: set[str] = set()
            for raw in done:
                o = Order.from_json(raw)
                if o.client_order_id in seen:
                    self.done_dups[t.index].add(o.client_order_id)
                seen.add(o.client_order_id)
                mine[o.client_order_id] = o
            self.our_fills[t.index].update(f.decode() for f in fills)
        self._read_fill_events()

    def _read_fill_events(self) -> None:
        """Follow ``orders:events``: a fill told to its owner counts as recorded even if it was
        older than the newest FILLS_KEPT when it came (a catch-up after a long outage goes
        straight past that bound), and how late each fill was told is measured."""
        assert self.stack is not None
        r, keys = self.stack.redis, self.stack.keys
        index = {t.address.lower(): t.index for t in self.traders}
        while True:
            try:
                got: Any = r.xread({keys.order_events(): self.events_cursor}, count=5000)
            except redis.RedisError:
                return
            if not got:
                return
            for entry_id, fields in got[0][1]:
                self.events_cursor = entry_id
                event = orjson.loads(fields[b"d"])
                i = index.get(str(event.get("address", "")).lower())
                if event.get("kind") != "fill" or i is None:
                    continue
                fill = event["data"]
                self.our_fills[i].add(f"{fill['symbol']}:{fill['trade_id']}")
                told_ms = int(entry_id.split(b"-")[0])
                self.fill_lateness_ms.append(told_ms - int(fill["time"]))

    def sample_rss(self, when: str) -> None:
        for name, svc in self.services.items():
            mb = group_rss(svc) / 2**20
            row = self.rss.setdefault(name, {})
            if when == "max":
                row["max_mb"] = max(row.get("max_mb", 0.0), mb)
            else:
                row[f"{when}_mb"] = round(mb, 1)
                row["max_mb"] = max(row.get("max_mb", 0.0), mb)
        extra = {"redis": self._redis_rss(), "harness": psutil.Process().memory_info().rss}
        for name, b in extra.items():
            row = self.rss.setdefault(name, {})
            if when == "max":
                row["max_mb"] = max(row.get("max_mb", 0.0), b / 2**20)
            else:
                row[f"{when}_mb"] = round(b / 2**20, 1)

    def _redis_rss(self) -> int:
        server = self.redis_server
        if server is None or server._proc is None:
            return 0
        with contextlib.suppress(psutil.Error):
            return int(psutil.Process(server._proc.pid).memory_info().rss)
        return 0

    # -- finish ---------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Stop the chaos, let everything settle, and return what was not settled (if any)."""
        assert self.sim is not None
        assert self.pipeline is not None
        sim, p = self.sim, self.pipeline
        unsettled: dict[str, Any] = {}
        self.supervisor.restart_all_pending()
        if self.redis_server is not None and not self.redis_server.running:
            self.redis_server.start(timeout_s=60)
        sim.call(lambda: sim.sim.faults.clear())
        self.stop_trading.set()
        for th in self.threads:
            th.join(120)
        sim.call(lambda: sim.sim.model.set_rate(0))
        if self.cfg.wait_minute_close:  # the current minute closes; its kline arrives
            time.sleep(max(0.0, 60 - time.time() % 60) + 5)
        else:
            time.sleep(3)
        try:
            p.wait_for("pipeline settled", p.settled, timeout_s=180)
        except AssertionError as exc:
            unsettled["pipeline"] = str(exc)[:3000]
        try:
            self.wait_orders_resolved(timeout_s=120)
        except TimeoutError as exc:
            unsettled["orders"] = str(exc)
        time.sleep(1.5)  # the last candle updates reach the clients
        self.read_our_records()
        self.sample_rss("end")
        return unsettled

    def wait_orders_resolved(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.read_our_records()
            left = []
            for t in self.traders:
                exch = set(self._exchange_trade_keys(t))
                if not exch <= self.our_fills[t.index]:
                    left.append(f"trader {t.index}: {len(exch - self.our_fills[t.index])} fills")
                for o in self.our_orders[t.index].values():
                    if o.status in ("PENDING", "SENDING", "UNKNOWN"):
                        left.append(f"trader {t.index}: {o.client_order_id} {o.status}")
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("; ".join(left[:20]))
            time.sleep(1)

    # -- checks ---------------------------------------------------------------------------------

    def _exchange_orders(self, t: ChaosTrader) -> list[tuple[str, str, Decimal, str, int]]:
        assert self.sim is not None
        sim = self.sim

        def read() -> list[tuple[str, str, Decimal, str, int]]:
            acct = sim.sim.engine.accounts.get(t.api_key)
            return [(o.client_order_id, o.status, o.executed_qty, o.symbol, o.order_id)
                    for o in acct.orders.values()]  # fmt: skip

        return list(sim.call(read))

    def _exchange_trade_keys(self, t: ChaosTrader) -> list[str]:
        assert self.sim is not None
        sim = self.sim

        def read() -> list[str]:
            acct = sim.sim.engine.accounts.get(t.api_key)
            return [f"{row['symbol']}:{row['id']}" for row in sim.sim.engine.every_trade(acct)]

        return list(sim.call(read))

    def check_candles(self) -> dict[str, Any]:
        """Every closed candle against the simulator's ground truth (counted, not asserted)."""
        assert self.sim is not None
        assert self.pipeline is not None
        sim, p = self.sim, self.pipeline
        out: dict[str, Any] = {"compared": Counter(), "mismatched": Counter(),
                               "missing": Counter(), "never_repaired": Counter(),
                               "partial_15s": 0, "not_in_truth_15s": 0, "trades_lost": 0,
                               "repair_pending": 0, "examples": []}  # fmt: skip
        pending = self._pending_repairs()

        def bad(kind: str, tf: str, what: Any) -> None:
            out[kind][tf] += 1
            if len(out["examples"]) < 20:
                out["examples"].append(f"{kind} {tf}: {what}")

        for i, inst in enumerate(sim.sim.model.instruments):
            for tf in ("1m", "5m"):
                truth = truth_klines(sim, i, tf)
                stored = [c for c in p.candles(inst.symbol, tf) if c.closed]
                for c in stored:
                    if c.source == "partial":
                        if (inst.symbol, tf, c.open_time_ms) in pending:
                            out["repair_pending"] += 1  # not due yet: its period just ended
                        else:
                            bad("never_repaired", tf, c)
                        continue
                    if c.open_time_ms in truth:
                        out["compared"][tf] += 1
                        bar = as_bar(c, inst)
                        if bar != truth[c.open_time_ms]:
                            bad("mismatched", tf, (inst.symbol, bar, truth[c.open_time_ms]))
                        if tf == "1m":
                            out["trades_lost"] += max(0, truth[c.open_time_ms][7] - c.trades)
                if stored:
                    have = {c.open_time_ms for c in stored}
                    for t, bar in truth.items():
                        if t > stored[0].open_time_ms and bar[7] > 0 and t not in have:
                            bad("missing", tf, (inst.symbol, t))
                            if tf == "1m":
                                out["trades_lost"] += bar[7]
            truth15 = truth_from_trades(sim, i, 15_000)
            for c in p.candles(inst.symbol, "15s"):
                if not c.closed:
                    continue
                if c.source == "partial":  # sub-minute candles have no kline to repair them with
                    out["partial_15s"] += 1
                elif c.open_time_ms not in truth15:
                    out["not_in_truth_15s"] += 1
                else:
                    out["compared"]["15s"] += 1
                    bar = as_bar(c, inst)
                    if bar != truth15[c.open_time_ms]:
                        bad("mismatched", "15s", (inst.symbol, bar, truth15[c.open_time_ms]))
        for k in ("compared", "mismatched", "missing", "never_repaired"):
            out[k] = dict(out[k])
        out["metrics"] = p.metrics()
        return out

    def _pending_repairs(self) -> set[tuple[str, str, int]]:
        """Return the (symbol, timeframe, open time) of every period a queued repair covers."""
        assert self.pipeline is not None
        p, out = self.pipeline, set()
        for s in range(SHARDS):
            for member in p.redis.zrange(p.keys.repairs(s), 0, -1):
                symbol, tf, first, last = member.decode().split("|")[:4]
                step = {"1m": 60_000, "5m": 300_000}.get(tf)
                if step is None:
                    continue
                for t in range(int(first), int(last) + 1, step):
                    out.add((symbol, tf, t))
        return out

    def check_orders(self) -> dict[str, Any]:
        """Every request's order and every fill against the simulator's account records."""
        assert self.stack is not None
        r, keys = self.stack.redis, self.stack.keys
        out: dict[str, Any] = {"requests": 0, "places": 0, "cancels": 0, "orders_placed": 0,
                               "refused_by_web": Counter(), "unanswered": 0, "lost": 0,
                               "duplicated": 0, "unresolved": 0, "status_mismatch": 0,
                               "unexpected_exchange_orders": 0, "exchange_orders": 0,
                               "our_statuses": Counter(), "fills_exchange": 0, "fills_ours": 0,
                               "fills_missed": 0, "fills_phantom": 0, "examples": [],
                               "trader_reconnects": 0, "retried_requests": 0,
                               "rejected_reasons": Counter()}  # fmt: skip

        def bad(kind: str, what: Any) -> None:
            out[kind] += 1
            if len(out["examples"]) < 30:
                out["examples"].append(f"{kind}: {what}")

        for t in self.traders:
            out["trader_reconnects"] += t.reconnects
            exch = self._exchange_orders(t)
            out["exchange_orders"] += len(exch)
            by_cid: dict[str, list[tuple[str, str, Decimal, str, int]]] = {}
            for row in exch:
                by_cid.setdefault(row[0], []).append(row)
            ours = self.our_orders[t.index]
            asked: set[str] = set()
            for req in t.requests:
                out["requests"] += 1
                out["retried_requests"] += req.attempts > 1
                if req.action == "cancel":
                    out["cancels"] += 1
                    continue
                out["places"] += 1
                if not req.cids:  # the answer never came: what did the web store?
                    with contextlib.suppress(redis.RedisError):
                        raw = r.get(keys.order_request(t.address, req.rid))
                        if raw and not raw.startswith(b"cmd:"):
                            req.cids.add(raw.decode())
                if not req.cids:
                    ans = req.answer or {}
                    if ans.get("error"):
                        out["refused_by_web"][ans["error"]] += 1
                    else:
                        bad("unanswered", (t.index, req.rid, req.errors[-3:]))
                    continue
                if len(req.cids) > 1:
                    bad("duplicated", f"request {req.rid} answered with orders {req.cids}")
                for cid in req.cids:
                    asked.add(cid)
                    out["orders_placed"] += 1
                    rows = by_cid.get(cid, [])
                    if len(rows) > 1:
                        bad("duplicated", f"{cid}: {len(rows)} exchange orders {rows}")
                    o = ours.get(cid)
                    if o is None:
                        bad("lost", f"{cid} ({req.rid}): no record of ours; exchange {rows}")
                        continue
                    out["our_statuses"][o.status] += 1
                    if o.status == "REJECTED":
                        out["rejected_reasons"][o.error[:60]] += 1
                    if o.status in ("PENDING", "SENDING", "UNKNOWN"):
                        bad("unresolved", f"{cid} ({req.rid}) {o.status}; exchange {rows}")
                    elif not rows:
                        if o.status != "REJECTED":
                            bad("lost", f"{cid} ({req.rid}): ours {o.status}, exchange none")
                    elif o.status == "REJECTED":
                        bad("lost", f"{cid} ({req.rid}): ours REJECTED ({o.error}), "
                                    f"exchange {rows[0][1]}")  # fmt: skip
                    elif (o.status, Decimal(o.executed_qty)) != (rows[0][1], rows[0][2]):
                        bad("status_mismatch", f"{cid}: ours {o.status} {o.executed_qty}, "
                                               f"exchange {rows[0][1]} {rows[0][2]}")  # fmt: skip
            for cid, rows in by_cid.items():
                if cid not in asked:
                    bad("unexpected_exchange_orders", f"trader {t.index}: {rows}")
            for cid in self.done_dups[t.index]:
                bad("duplicated", f"{cid} twice in our done list")
            exch_fills = set(self._exchange_trade_keys(t))
            mine = self.our_fills[t.index]
            out["fills_exchange"] += len(exch_fills)
            out["fills_ours"] += len(mine)
            for key in sorted(exch_fills - mine):
                bad("fills_missed", f"trader {t.index} {key}")
            for key in sorted(mine - exch_fills):
                bad("fills_phantom", f"trader {t.index} {key}")
        late = sorted(self.fill_lateness_ms)
        if late:
            out["fill_told_after_ms"] = {
                "p50": late[len(late) // 2],
                "p99": late[min(len(late) - 1, len(late) * 99 // 100)],
                "max": late[-1],
                "over_60s": sum(x > 60_000 for x in late),
            }
        out["refused_by_web"] = dict(out["refused_by_web"])
        out["our_statuses"] = dict(out["our_statuses"])
        out["rejected_reasons"] = dict(out["rejected_reasons"])
        return out

    def check_clients(self) -> dict[str, Any]:
        """Each client's candles against the stored ones, from its first snapshot on."""
        assert self.stack is not None
        r, keys = self.stack.redis, self.stack.keys
        out: dict[str, Any] = {"clients": len(self.clients), "connects": 0, "disconnects": 0,
                               "kicked": 0, "refused_subscriptions": 0, "md_messages": 0,
                               "resyncs": 0, "retried_subscriptions": 0,
                               "candles_checked": 0, "missing": 0, "stale": 0,
                               "gaps_untold": 0, "examples": []}  # fmt: skip
        for n, c in enumerate(self.clients):
            out["connects"] += c.connects
            out["disconnects"] += c.disconnects
            out["kicked"] += c.kicked
            out["refused_subscriptions"] += len(c.refused)
            out["md_messages"] += c.md_messages
            out["resyncs"] += c.resyncs
            out["retried_subscriptions"] += c.retried
            with c.lock:
                views = {room: dict(v) for room, v in c.view.items()}
                first = dict(c.first_open)
            for room in [f"c:{x['symbol']}:{x['timeframe']}" for x in c.rooms
                         if x["channel"] == "candles"]:  # fmt: skip
                _, symbol, tf = room.split(":")
                held = views.get(room, {})
                for raw in r.zrange(keys.candles(symbol, tf), 0, -1):
                    stored = candle_json(orjson.loads(raw))
                    if stored is None or not stored["closed"]:
                        continue
                    if room not in first or stored["open_time"] < first[room]:
                        continue
                    out["candles_checked"] += 1
                    got = held.get(stored["open_time"])
                    if got == stored:
                        continue
                    kind = "missing" if got is None else "stale"
                    out[kind] += 1
                    out["gaps_untold"] += 1
                    if len(out["examples"]) < 20:
                        out["examples"].append(f"client {n} {room} {kind}: stored {stored}, "
                                               f"held {got}")  # fmt: skip
        return out

    def report(self, unsettled: dict[str, Any]) -> dict[str, Any]:
        assert self.sim is not None
        sim_state = self.sim.call(lambda: self.sim.sim.state())  # type: ignore[union-attr]
        return {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "config": {
                k: str(v) if isinstance(v, Path) else v for k, v in self.cfg.__dict__.items()
            },
            "duration_s": round(self.duration_s, 1),
            "kills": dict(self.supervisor.kills),
            "kills_total": sum(self.supervisor.kills.values()),
            "unexpected_exits": dict(self.supervisor.unexpected),
            "unexpected_exit_tails": self.supervisor.exit_tails[:10],
            "redis_restarts": dict(self.redis_restarts),
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "fault_errors": dict(self.fault_errors),
            "simulator": {
                "aggTrades": sim_state["model"]["aggTrades"],
                "skippedMs": sim_state["model"]["skippedMs"],
                "loopErrors": sim_state["loopErrors"],
            },
            "candles": self.check_candles(),
            "orders": self.check_orders(),
            "clients": self.check_clients(),
            "rss_mb": self.rss,
            "unsettled": unsettled,
            "logs": str(self.work),
        }

    def stop(self) -> None:
        self.stop_trading.set()
        for c in self.clients:
            c.close()
        for t in self.traders:
            with contextlib.suppress(Exception):
                t.trader.close()
        for svc in getattr(self, "services", {}).values():
            with contextlib.suppress(Exception):
                svc.stop()
        if self.sim is not None:
            with contextlib.suppress(Exception):
                self.sim.stop()
        if self.redis_server is not None:
            self.redis_server.stop(save=False)
        if not self.cfg.keep and self.cfg.work_dir is None:
            shutil.rmtree(self.work, ignore_errors=True)


def run(cfg: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the stack, run the chaos for ``cfg.minutes``, settle, check; return the report."""
    chaos = Chaos(cfg, log)
    try:
        chaos.start()
        chaos.run()
        unsettled = chaos.finish()
        return chaos.report(unsettled)
    finally:
        chaos.stop()


def failures(report: dict[str, Any]) -> list[str]:
    """Return what a run must not show: candle mismatches, lost or duplicated orders, gaps."""
    c, o, k = report["candles"], report["orders"], report["clients"]
    out = []
    for name, n in [
        ("candles mismatched", sum(c["mismatched"].values())),
        ("candles missing", sum(c["missing"].values())),
        ("candles never repaired", sum(c["never_repaired"].values())),
        ("trades lost", c["trades_lost"]),
        ("orders lost", o["lost"]),
        ("orders duplicated", o["duplicated"]),
        ("orders unresolved", o["unresolved"]),
        ("orders unanswered", o["unanswered"]),
        ("order status mismatches", o["status_mismatch"]),
        ("unexpected exchange orders", o["unexpected_exchange_orders"]),
        ("fills missed", o["fills_missed"]),
        ("fills phantom", o["fills_phantom"]),
        ("client gaps untold", k["gaps_untold"]),
        ("unexpected exits", sum(report["unexpected_exits"].values())),
        ("accounts lost (no_account)", o["refused_by_web"].get("no_account", 0)),
    ]:
        if n:
            out.append(f"{name}: {n}")
    if report["unsettled"]:
        out.append(f"not settled: {sorted(report['unsettled'])}")
    return out


def summary(report: dict[str, Any]) -> str:
    c, o, k = report["candles"], report["orders"], report["clients"]
    lines = [
        f"chaos run: {report['duration_s'] / 60:.1f} min on {report['machine']['cpus']} CPUs "
        f"({report['machine']['platform']})",
        f"kills: {report['kills_total']} {report['kills']}; unexpected exits "
        f"{report['unexpected_exits']}",
        f"redis restarts: {report['redis_restarts']}",
        f"faults: {report['faults_total']} {report['faults']}",
        f"candles compared {c['compared']}, mismatched {c['mismatched']}, missing {c['missing']}, "
        f"never repaired {c['never_repaired']} (repair not due yet: {c['repair_pending']}), 15s "
        f"partial {c['partial_15s']}, trades lost {c['trades_lost']}",
        f"orders: {o['places']} placed ({o['orders_placed']} reached the system, "
        f"{o['exchange_orders']} on the exchange), {o['cancels']} cancels, refused by web "
        f"{o['refused_by_web']}; lost {o['lost']}, duplicated {o['duplicated']}, unresolved "
        f"{o['unresolved']}, unanswered {o['unanswered']}, status mismatches "
        f"{o['status_mismatch']}, unexpected {o['unexpected_exchange_orders']}; our final "
        f"statuses {o['our_statuses']}; rejected because {o['rejected_reasons']}",
        f"fills: exchange {o['fills_exchange']}, ours {o['fills_ours']}, missed "
        f"{o['fills_missed']}, phantom {o['fills_phantom']}; told after (ms) "
        f"{o.get('fill_told_after_ms', {})}",
        f"clients: {k['clients']}, connects {k['connects']}, disconnects {k['disconnects']}, "
        f"kicked {k['kicked']}, resyncs {k['resyncs']}, candles checked {k['candles_checked']}, "
        f"gaps untold "
        f"{k['gaps_untold']} (missing {k['missing']}, stale {k['stale']})",
        "RSS MB (start / end / max): " + ", ".join(
            f"{n} {v.get('start_mb')}/{v.get('end_mb')}/{round(v.get('max_mb', 0), 1)}"
            for n, v in report["rss_mb"].items()),
    ]  # fmt: skip
    if report["unsettled"]:
        lines.append(f"NOT SETTLED: {report['unsettled']}")
    for what in (c["examples"], o["examples"], k["examples"]):
        lines.extend(f"  {e}" for e in what[:10])
    for name, tail in report["unexpected_exit_tails"][:5]:
        lines.append(f"  {name} exited:\n{tail[-800:]}")
    bad = failures(report)
    lines.append("FAILURES: " + "; ".join(bad) if bad else "no loss, no duplicate, no gap")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the chaos lasts")
    ap.add_argument("--kill-every", type=float, default=8.0, help="seconds between kills (±50%%)")
    ap.add_argument("--fault-every", type=float, default=6.0, help="seconds between faults")
    ap.add_argument("--redis-every", type=float, default=150.0, help="seconds between restarts")
    ap.add_argument("--traders", type=int, default=3)
    ap.add_argument("--order-every", type=float, default=2.0, help="seconds between a trader's")
    ap.add_argument("--md-clients", type=int, default=4)
    ap.add_argument("--symbols", type=int, default=6)
    ap.add_argument("--rate", type=float, default=30.0, help="simulator aggTrades/s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work-dir", type=Path, help="logs and Redis data (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    ap.add_argument(
        "--quick-finish",
        action="store_true",
        help="do not wait for the last minute to close (fewer 1m candles compared)",
    )
    a = ap.parse_args(argv)
    cfg = Config(minutes=a.minutes, kill_every_s=a.kill_every, fault_every_s=a.fault_every,
                 redis_every_s=a.redis_every, traders=a.traders, order_every_s=a.order_every,
                 md_clients=a.md_clients, symbols=a.symbols, rate=a.rate, seed=a.seed,
                 work_dir=a.work_dir, keep=a.keep,
                 wait_minute_close=not a.quick_finish)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    logging.getLogger("simulator").setLevel(logging.ERROR)  # its fault notices, in-process
    report = run(cfg, lambda m: print(m, flush=True))
    print(summary(report))
    print(orjson.dumps(report, default=str).decode())
    return 1 if failures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
