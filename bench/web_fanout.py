"""Web fan-out benchmark: one web process, thousands of Socket.IO clients, latency and memory.

Run by hand (not part of the test suite)::

    .venv/bin/python bench/web_fanout.py --clients 200 --seconds 20 --repeat 1    # smoke
    .venv/bin/python bench/web_fanout.py --clients 2000 --seconds 60 --repeat 3   # latency
    .venv/bin/python bench/web_fanout.py --clients 2000 --rss-minutes 30          # memory

The pipeline of ``bench/candles_rate.py e2e`` (redis-server, simulator ``--steady`` with
``--symbols`` instruments at ``--rate`` aggTrades/s: 9,500 is about 20,000 events/s written by the
feeder, consumer, the candle worker; the product's stream bounds) plus ONE web process started
from the Procfile's ``web:`` line (gunicorn, gevent worker) with ``TP_WEB_ANONYMOUS=1``, bound to
127.0.0.1. ``--procs`` load processes (asyncio, no Socket.IO library) speak Engine.IO 4 /
Socket.IO 5 directly over a websocket: open packet, ``40`` connect without auth, answer each ping
``2`` with ``3``, then ``--symbols-per-client`` ``subscribe`` events (channel ``candles``,
``--timeframe``) with acks (one refused as ``unavailable``, "try again", is sent again after
``--retry-s``), and read ``snapshot`` and ``md`` messages. Client i subscribes to a
random sample of the universe (``<ns>:universe``) drawn with seed ``--seed`` + i, so rooms overlap
as they happen to (about clients x symbols-per-client / universe clients per room).

The load processes stand in for browsers on the users' machines: their CPU on this box must not
be charged to the web. So the websocket client is picows by default (``--client picows``,
Cython, ~0.5 us a frame; every frame handled synchronously in its read's callback, no task per
frame, the receive time taken there). The ``websockets`` library's asyncio client (``--client
websockets``, ~5 us a frame plus a task wake-up per message) needed ~29 us of CPU per md message,
~85 % of a core for 2,000 clients at 50-ms ticks, and its own delay made ``transit`` p99
250-630 ms; picows needs ~22 us (~60 %; ``transit`` p99 ~40 ms). What is left is mostly the
event loop's and the kernel's per read and :meth:`Load.md`'s accounting (~9 us). The websockets
client is kept to compare the two in one session.

Latency of an md room: this machine's wall clock when the load process reads the message, minus
the room's ``at`` (the Redis time of the newest update included; same clock). ``server`` is the
message's ``t`` (when the web process built it) minus ``at``: the pump, the tick wait, encoding;
``transit`` is the receive time minus ``t``: the web process's send queue, the socket and the load
process's own scheduling (a busy load process inflates it). Rooms are read with a regex; a message
it cannot read is parsed as JSON.

Clients ramp at ``--ramp-per-s``; after every client is subscribed (or none progressed for 60 s)
and ``--warmup`` seconds, ``--repeat`` windows of ``--seconds`` each report messages/s, latency
p50/p90/p99/max, clients kept, kicked and closed (totals since the start), the candle trades
applied/s and shed (the upstream really at rate), the CPU% of every process (``other CPU`` is what
this process and processes outside the benchmark used: this machine is shared; ``machine CPU`` is
out of cpus x 100 %) and the web worker's RSS, then
``<ns>:web:health``; last, the medians over the windows. ``--rss-minutes M`` keeps the same load
for M minutes instead, samples the web worker's RSS every 10 s, prints latency once a minute, and
reports the growth after the first ``--rss-warmup`` minutes.

``--replay S`` measures the web without the pipeline on its CPU (in production they are separate
processes, on separate dynos): after ``--record-warmup`` seconds of pipeline it records S seconds
of every stream the web reads (``candle-updates``, ``signal-updates``, ``book`` of every shard;
their entries, with their times), stops the feeder, consumer and worker (Redis keeps the candles
the snapshots read; the simulator stays, idle), and a replay process ``XADD``s the recording in
a loop at its recorded pace, each stream bounded as the product bounds it. The windows then
report ``replayed/s`` and ``replay late max`` (how far the replay fell behind its schedule, ms)
instead of the pipeline's trades/s and shed. The web reads exactly what the pipeline wrote.

``--replay-speeds 1,4,8,12`` (with ``--replay``) is the overload ladder (issue 19 goal 1): the
replay runs at each multiple of the recorded pace for ``--seconds``, each speed above 1 followed
by ``--recover`` seconds at 1x (``--replay-procs`` processes share the streams; a replay that
cannot keep up moves its schedule on rather than bursting later). Per phase: entries offered
(and of them the candle and signal builds), entries the pump read (``entries`` of
``<ns>:web:health``), md/s, the pump's ``lag_ms`` (p50 over the reports) and ``lag_ms_max``, the
clients' latency, of candle and of book rooms apart (``--channels candles,book`` subscribes each
symbol to both, so that the pump decodes every book ticker), CPU, the web's RSS, Redis's memory,
skipped and kicked clients, ``GET /livez`` and Redis ``PING`` times (does the pump let other
greenlets run; does Redis keep up), and after a burst the seconds until ``lag_ms_max`` is back
under the first phase's worst (to within a 2-s report); last, a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import multiprocessing
import os
import pickle
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

sys.path.insert(0, str(Path(__file__).resolve().parent))
import candles_rate
from candles_rate import ROOT, SHARDS, Pipeline, calibrate, free_port, pin

from core.config import Settings
from feeds.writer import XADD_MANY

DEFAULT_WEB = (
    "gunicorn -k gevent -w 1 --worker-connections 4000 --keep-alive 95 --graceful-timeout 25 "
    "-b 0.0.0.0:$PORT web.wsgi:app"
)
HIST_MS = 60_000  # latency histogram range; the last bucket holds everything slower
# One md room: '"c:BTCUSDT:1m":{"at":1732400000123,' (the contract puts "at" before "data").
ROOM_AT = re.compile(rb'"([cbs]):[^"]+":\s*\{\s*"at":\s*(\d+)')
SENT_AT = re.compile(rb'"t":\s*(\d+)')
KINDS = ("e2e", "server", "transit", "e2e c", "e2e b")  # e2e of candle rooms, of book rooms
CLIENTS = ("picows", "websockets")  # --client: the load processes' websocket library
# Where a picows client is: waiting for the Engine.IO open packet, for the Socket.IO connect
# (``40``); connected and subscribing or subscribed; ended by itself (refused, disconnected...).
OPENING, CONNECTING, LIVE, ENDED = range(4)


# --- the load processes ----------------------------------------------------------------------


class Load:
    """Socket.IO clients in one asyncio loop, counting what they receive."""

    def __init__(self, url: str, origin: str, timeframe: str, retry_s: float,
                 channels: tuple[str, ...] = ("candles",),
                 client: str = "picows") -> None:  # fmt: skip
        self.url, self.origin, self.timeframe, self.retry_s = url, origin, timeframe, retry_s
        self.channels = channels
        self.client_lib = client  # one of CLIENTS
        self.totals: Counter[str] = Counter()  # since the start
        self.errors: Counter[str] = Counter()  # connect / protocol failures by kind
        self.live = 0  # connections past the Socket.IO connect, still open
        self.ack_ms: list[float] = []  # subscribe -> ack, every subscription
        self.conns: set[ClientConnection | WSTransport] = set()  # open, closed at stop
        self.stopping = False
        self.reset()

    def reset(self) -> None:
        self.window: Counter[str] = Counter()
        self.hist = {k: [0] * (HIST_MS + 1) for k in KINDS}
        self.window_start = time.time()

    def collect(self) -> dict[str, Any]:
        out = {
            "seconds": time.time() - self.window_start,
            "counts": dict(self.window),
            "hist": {k: {i: n for i, n in enumerate(h) if n} for k, h in self.hist.items()},
            **self.status(),
        }
        self.reset()
        return out

    def status(self) -> dict[str, Any]:
        return {"totals": dict(self.totals), "errors": dict(self.errors), "live": self.live,
                "ack_ms": self.ack_ms}  # fmt: skip

    def _add(self, kind: str, ms: int) -> None:
        self.hist[kind][min(max(ms, 0), HIST_MS)] += 1
        if ms < 0:
            self.window[f"negative {kind}"] += 1

    def md(self, raw: bytes) -> None:
        now_ms = time.time_ns() // 1_000_000
        self.window["md"] += 1
        self.window["bytes"] += len(raw)
        sent = SENT_AT.search(raw)
        ats = [(k, int(a)) for k, a in ROOM_AT.findall(raw)]
        if not ats or not sent:  # not the expected layout: read it properly
            self.window["parsed as JSON"] += 1
            body = orjson.loads(raw[2:])[1]
            sent_ms = body["t"]
            ats = [(n[:1].encode(), r["at"]) for n, r in body["rooms"].items()]
        else:
            sent_ms = int(sent.group(1))
        self._add("transit", now_ms - sent_ms)
        for kind, at in ats:
            self.window["rooms"] += 1
            self._add("e2e", now_ms - at)
            if kind in (b"c", b"b"):
                self._add(f"e2e {kind.decode()}", now_ms - at)
            self._add("server", sent_ms - at)

    async def client(self, symbols: list[str]) -> None:
        """One client subscribed to ``symbols``, until the connection ends."""
        if self.client_lib == "picows":
            await self.client_picows(symbols)
        else:
            await self.client_websockets(symbols)

    async def client_picows(self, symbols: list[str]) -> None:
        """:class:`SocketIOListener` does the protocol in picows's callbacks; this connects,
        then waits for the end to count it (the same counters as :meth:`client_websockets`)."""
        try:
            ws, listener = await ws_connect(
                lambda: SocketIOListener(self, symbols), self.url, use_aiofastnet=False,
                extra_headers={"Origin": self.origin}, websocket_handshake_timeout=60,
                enable_auto_ping=False, max_frame_size=sys.maxsize,  # no limit, as websockets'
            )  # fmt: skip
        except (OSError, TimeoutError, WSError) as exc:
            self.errors[f"connect: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            return
        assert isinstance(listener, SocketIOListener)
        self.conns.add(ws)
        try:
            await ws.wait_disconnected()
            if listener.state != ENDED and not self.stopping:  # the server or the network ended it
                self.totals["closed"] += 1
                self.errors[f"closed: {listener.close_code or 'no close frame'}"] += 1
        except Exception as exc:  # picows failed the connection (a protocol violation): counted
            self.totals["client errors"] += 1
            self.errors[f"client error: {type(exc).__name__}: {str(exc)[:80]}"] += 1
        finally:
            if listener.connected:
                self.live -= 1
            self.conns.discard(ws)

    async def client_websockets(self, symbols: list[str]) -> None:
        """The same client on the ``websockets`` library (``--client websockets``)."""
        try:
            ws = await connect(self.url, origin=self.origin, compression=None,
                               ping_interval=None, max_size=None, max_queue=64, open_timeout=60,
                               close_timeout=2, proxy=None, user_agent_header=None)  # fmt: skip
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.errors[f"connect: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            return
        self.conns.add(ws)
        connected = False
        try:
            if not (await ws.recv(decode=False)).startswith(b"0"):
                self.errors["no Engine.IO open packet"] += 1
                return
            await ws.send("40")
            while True:
                raw = await ws.recv(decode=False)
                if raw.startswith(b"40"):
                    break
                if raw.startswith(b"44"):  # connect_error
                    self.errors[f"refused: {raw[2:120].decode(errors='replace')}"] += 1
                    return
                if raw == b"2":
                    await ws.send("3")
            connected = True
            self.live += 1
            self.totals["connected"] += 1
            sent: dict[int, tuple[float, tuple[str, str]]] = {}  # ack id -> (sent at, sub)
            ack_ids = itertools.count()

            async def subscribe(sub: tuple[str, str], delay_s: float = 0) -> None:
                await asyncio.sleep(delay_s)
                channel, symbol = sub
                req = {"channel": channel, "symbol": symbol, "timeframe": self.timeframe}
                i = next(ack_ids)
                sent[i] = (time.monotonic(), sub)
                await ws.send(f'42{i}["subscribe",{orjson.dumps(req).decode()}]')

            subs = [(channel, symbol) for symbol in symbols for channel in self.channels]
            for sub in subs:
                await subscribe(sub)
            acked, retries = 0, set()
            while True:
                raw = await ws.recv(decode=False)
                if raw.startswith(b'42["md"'):
                    self.md(raw)
                elif raw == b"2":
                    await ws.send("3")
                elif raw.startswith(b"43"):
                    bracket = raw.index(b"[")
                    t0, sub = sent.pop(int(raw[2:bracket]))
                    self.ack_ms.append((time.monotonic() - t0) * 1000)
                    reply = orjson.loads(raw[bracket:])[0]
                    if reply.get("ok"):
                        acked += 1
                        if acked == len(subs):
                            self.totals["subscribed"] += 1
                    else:
                        self.errors[f"subscribe refused: {reply.get('error')}"] += 1
                        if reply.get("error") == "unavailable" and self.retry_s:  # "try again"
                            self.totals["subscribe retries"] += 1
                            task = asyncio.create_task(subscribe(sub, self.retry_s))
                            retries.add(task)  # a reference, until it is done
                            task.add_done_callback(retries.discard)
                elif raw.startswith(b'42["snapshot"'):
                    self.window["snapshots"] += 1
                    self.window["snapshot bytes"] += len(raw)
                elif raw.startswith(b'42["kicked"'):
                    self.totals["kicked"] += 1
                elif raw.startswith((b"41", b"1")):  # Socket.IO disconnect, Engine.IO close
                    self.totals["disconnected by server"] += 1
                    return
                else:
                    self.window[f"other {raw[:12]!r}"] += 1
        except ConnectionClosed as exc:
            if not self.stopping:
                self.totals["closed"] += 1
                self.errors[f"closed: {exc.rcvd.code if exc.rcvd else 'no close frame'}"] += 1
        except Exception as exc:  # anything unexpected ends this client: counted, with its kind
            self.totals["client errors"] += 1
            self.errors[f"client error: {type(exc).__name__}: {str(exc)[:80]}"] += 1
        finally:
            if connected:
                self.live -= 1
            self.conns.discard(ws)
            if not self.stopping:
                await ws.close()

    async def run(self, conn: Connection, plan: list[list[str]], ramp_per_s: float) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def command() -> None:
            try:
                what = conn.recv()
            except (EOFError, OSError):  # the benchmark process is gone: stop, never spin
                what = "stop"
            if what == "collect":
                conn.send(self.collect())
            elif what == "status":
                conn.send(self.status())
            else:  # stop
                self.stopping = True
                done.set()

        loop.add_reader(conn.fileno(), command)
        start = time.monotonic()
        tasks = set()
        for i, symbols in enumerate(plan):
            await asyncio.sleep(max(0.0, start + i / ramp_per_s - time.monotonic()))
            tasks.add(asyncio.create_task(self.client(symbols)))
            if done.is_set():
                break
        await done.wait()
        await asyncio.gather(*(self.close(ws) for ws in list(self.conns)), return_exceptions=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send("stopped")

    @staticmethod
    async def close(ws: ClientConnection | WSTransport) -> None:
        """Close one connection: the close handshake, or after 2 s the socket."""
        if isinstance(ws, ClientConnection):
            await ws.close()  # close_timeout=2
            return
        ws.send_close(WSCloseCode.OK)  # the server answers; SocketIOListener then disconnects
        try:
            await asyncio.wait_for(ws.wait_disconnected(), 2)
        except TimeoutError:
            ws.disconnect(graceful=False)


class SocketIOListener(WSListener):
    """One Socket.IO client on picows: what :meth:`Load.client_websockets` does, as callbacks.

    picows calls :meth:`on_ws_frame` for every frame of a socket read, synchronously, in the
    read's callback (no task, no queue): an ``md`` message goes straight to :meth:`Load.md`,
    which takes its receive time first thing; anything else goes through :meth:`message`, the
    handshake's small state machine (``state``: OPENING, CONNECTING, LIVE, ENDED) and the rest.
    """

    def __init__(self, load: Load, symbols: list[str]) -> None:
        self.load = load
        self.subs = [(channel, symbol) for symbol in symbols for channel in load.channels]
        self.state = OPENING
        self.connected = False  # past the Socket.IO connect: counted in load.live until the end
        self.close_code: int | None = None  # the server's, from its close frame
        self.sent: dict[int, tuple[float, tuple[str, str]]] = {}  # ack id -> (sent at, sub)
        self.ack_ids = itertools.count()
        self.acked = 0
        self.fragments: list[bytes] = []  # a message split over frames (the server sends none)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        try:
            kind = frame.msg_type
            if frame.fin and not self.fragments and kind is WSMsgType.TEXT:
                raw = frame.get_payload_as_bytes()
            elif kind is WSMsgType.CLOSE:  # the server closes: answer, drop the socket
                self.close_code = frame.get_close_code().value or 1005  # none: 1005, as websockets
                if not transport.is_close_frame_sent:
                    transport.send_close(WSCloseCode.OK)
                transport.disconnect()
                return
            elif kind in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
                self.fragments.append(frame.get_payload_as_bytes())
                if not frame.fin:
                    return
                raw = b"".join(self.fragments)
                self.fragments.clear()
            else:  # a pong: we send no pings (picows answers websocket pings itself)
                return
            if self.state == LIVE and raw.startswith(b'42["md"'):
                self.load.md(raw)
            else:
                self.message(transport, raw)
        except Exception as exc:  # anything unexpected ends this client: counted, with its kind
            self.load.totals["client errors"] += 1
            self.load.errors[f"client error: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            self.end(transport)

    def message(self, transport: WSTransport, raw: bytes) -> None:
        """Every message but md: the Engine.IO / Socket.IO handshake, pings, acks, the rest."""
        load = self.load
        if self.state == LIVE:
            if raw == b"2":
                transport.send(WSMsgType.TEXT, b"3")
            elif raw.startswith(b"43"):
                self.ack(transport, raw)
            elif raw.startswith(b'42["snapshot"'):
                load.window["snapshots"] += 1
                load.window["snapshot bytes"] += len(raw)
            elif raw.startswith(b'42["kicked"'):
                load.totals["kicked"] += 1
            elif raw.startswith((b"41", b"1")):  # Socket.IO disconnect, Engine.IO close
                load.totals["disconnected by server"] += 1
                self.end(transport)
            else:
                load.window[f"other {raw[:12]!r}"] += 1
        elif self.state == OPENING:
            if not raw.startswith(b"0"):
                load.errors["no Engine.IO open packet"] += 1
                self.end(transport)
                return
            transport.send(WSMsgType.TEXT, b"40")
            self.state = CONNECTING
        elif self.state == CONNECTING:
            if raw.startswith(b"40"):
                self.state, self.connected = LIVE, True
                load.live += 1
                load.totals["connected"] += 1
                for sub in self.subs:
                    self.subscribe(transport, sub)
            elif raw.startswith(b"44"):  # connect_error
                load.errors[f"refused: {raw[2:120].decode(errors='replace')}"] += 1
                self.end(transport)
            elif raw == b"2":
                transport.send(WSMsgType.TEXT, b"3")
        # ENDED: what followed in the same read is dropped

    def subscribe(self, transport: WSTransport, sub: tuple[str, str]) -> None:
        """Send one subscribe event with an ack id (a retry comes from loop.call_later)."""
        if self.state != LIVE or transport.is_disconnected:  # a retry after the end
            return
        channel, symbol = sub
        req = {"channel": channel, "symbol": symbol, "timeframe": self.load.timeframe}
        i = next(self.ack_ids)
        self.sent[i] = (time.monotonic(), sub)
        transport.send(WSMsgType.TEXT, b'42%d["subscribe",%b]' % (i, orjson.dumps(req)))

    def ack(self, transport: WSTransport, raw: bytes) -> None:
        """A subscribe's ack, ``43<id>[reply]``."""
        load = self.load
        bracket = raw.index(b"[")
        t0, sub = self.sent.pop(int(raw[2:bracket]))
        load.ack_ms.append((time.monotonic() - t0) * 1000)
        reply = orjson.loads(raw[bracket:])[0]
        if reply.get("ok"):
            self.acked += 1
            if self.acked == len(self.subs):
                load.totals["subscribed"] += 1
        else:
            load.errors[f"subscribe refused: {reply.get('error')}"] += 1
            if reply.get("error") == "unavailable" and load.retry_s:  # "try again"
                load.totals["subscribe retries"] += 1
                asyncio.get_running_loop().call_later(load.retry_s, self.subscribe, transport, sub)

    def end(self, transport: WSTransport) -> None:
        """End this client (refused, disconnected by the server, an error): not "closed"."""
        self.state = ENDED
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        transport.disconnect()


def load_process(conn: Connection, cfg: dict[str, Any]) -> None:
    """Entry point of one load process: hold ``cfg['plan']``'s clients until told to stop."""
    pin(os.getpid(), cfg["cpu"])
    load = Load(cfg["url"], cfg["origin"], cfg["timeframe"], cfg["retry_s"], cfg["channels"],
                cfg["client"])  # fmt: skip
    asyncio.run(load.run(conn, cfg["plan"], cfg["ramp_per_s"]))


# --- replay: the pipeline's output without the pipeline ------------------------------------------

REPLAYED = ("candle_updates", "signal_updates", "book")  # what the web's pump reads
REPLAY_BATCH = 5000  # entries per pipeline at most
CATCHUP_MS = 1000  # the replay's schedule debt at most (wall time)


def record(p: Pipeline, seconds: float, path: Path) -> dict[str, float]:
    """XREAD every stream the web reads for ``seconds`` while the pipeline runs; pickle
    ``(ms since the first entry, stream, payload)`` rows to ``path``; return what was recorded."""
    keys = [getattr(p.keys, kind)(s).encode() for kind in REPLAYED for s in range(SHARDS)]
    with p.r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xrevrange(key, count=1)
        ids = {k: (e[0][0] if e else b"0-0") for k, e in zip(keys, pipe.execute(), strict=True)}
    rows: list[tuple[int, bytes, bytes]] = []
    w0, end = p.snapshot(), time.time() + seconds
    while time.time() < end:
        for key, entries in p.r.xread(ids, count=2000, block=100) or []:  # type: ignore[arg-type]
            ids[key] = entries[-1][0]
            for entry_id, fields in entries:
                if set(fields) != {b"d"}:  # core.keys.ENTRY_FIELD, the only field written
                    raise SystemExit(f"unexpected fields in {key!r}: {list(fields)}")
                rows.append((int(entry_id.split(b"-")[0]), key, fields[b"d"]))
    w1 = p.snapshot()
    if not rows:
        raise SystemExit("nothing recorded: is the pipeline running?")
    rows.sort(key=lambda r: r[0])
    first = rows[0][0]
    path.write_bytes(pickle.dumps([(at - first, key, data) for at, key, data in rows]))
    dt = w1["t"] - w0["t"]
    kinds = Counter(key.decode().split(":")[2] for _, key, _ in rows)  # tp:{sN}:<kind>
    return {
        "seconds": dt,
        "entries/s": len(rows) / dt,
        "MB/s": sum(len(r[2]) for r in rows) / dt / 1e6,
        **{f"{k}/s": n / dt for k, n in sorted(kinds.items())},
        "trades/s": (w1["applied"] - w0["applied"]) / dt,
        "shed": w1["shed"] - w0["shed"],
    }


def replay_process(conn: Connection, cfg: dict[str, Any], counters: Any, speed: Any) -> None:
    """Entry point of a replay process: XADD the recording's rows (those of ``cfg['part']`` of
    ``cfg['parts']`` streams) at their recorded pace times ``speed.value`` (read afresh every
    turn: the bench changes it), in a loop, each stream bounded as the product bounds it, until
    told to stop. ``counters[0]`` counts the entries written, ``counters[1]`` holds the largest
    lateness behind the schedule in ms of wall time (the bench reads and resets it),
    ``counters[2]`` counts the entries written that are not book tickers (candle and signal
    builds). Behind by more than ``CATCHUP_MS`` of wall time, the schedule is moved up: what the
    replay could not write when asked is not written in a burst later (at 1x after a fast
    phase, say)."""
    pin(os.getpid(), cfg["cpu"])
    rows: list[tuple[int, bytes, bytes]] = pickle.loads(  # noqa: S301  # our own file
        Path(cfg["path"]).read_bytes()
    )
    period = rows[-1][0] + 1
    keys = sorted({key for _, key, _ in rows})
    mine = set(keys[cfg["part"] :: cfg["parts"]])
    rows = [row for row in rows if row[1] in mine]
    client = redis.Redis.from_url(cfg["url"])
    xadd = client.register_script(XADD_MANY)
    vt, last, i = 0.0, time.monotonic(), 0  # vt: the schedule's position in the lap, ms
    while not conn.poll():
        now_wall = time.monotonic()
        k = max(speed.value, 1e-3)
        vt += (now_wall - last) * 1000 * k
        last = now_wall
        batch: dict[bytes, list[bytes]] = {}
        n = 0
        while i < len(rows) and rows[i][0] <= vt and n < REPLAY_BATCH:
            batch.setdefault(rows[i][1], []).append(rows[i][2])
            i += 1
            n += 1
        if batch:
            with client.pipeline(transaction=False) as pipe:
                for key, datas in batch.items():
                    maxlen = cfg["book_maxlen"] if key.endswith(b":book") else cfg["updates_maxlen"]
                    xadd(keys=[key], args=[maxlen, *datas], client=pipe)
                pipe.execute()
            counters[0] += n
            counters[2] += sum(len(d) for k, d in batch.items() if not k.endswith(b":book"))
            counters[1] = max(counters[1], int((vt - rows[i - 1][0]) / k))
            if i < len(rows) and (vt - rows[i][0]) / k > CATCHUP_MS:
                vt = rows[i][0] + CATCHUP_MS * k
        if i == len(rows):
            i, vt = 0, vt - period
        elif not batch:
            time.sleep(min(0.005, max(0.0, (rows[i][0] - vt) / k / 1000)))
    conn.send("stopped")


# --- the benchmark process ---------------------------------------------------------------------


def web_command(port: int, override: str) -> tuple[list[str], dict[str, str]]:
    """Return the Procfile's ``web:`` command (or ``override``) as python arguments, and its env."""
    procfile = (ROOT / "Procfile").read_text().splitlines()
    line = override or next((x[4:] for x in procfile if x.startswith("web:")), DEFAULT_WEB)
    line = line.replace("${PORT}", str(port)).replace("$PORT", str(port))
    line = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line)  # ${VAR:-default}, as a shell would
    words = shlex.split(line)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words[0] != "gunicorn":
        raise SystemExit(f"the web command does not start with gunicorn: {line!r}")
    return ["-m", "gunicorn", *(w.replace("0.0.0.0:", "127.0.0.1:") for w in words[1:])], env


def tail(path: Path, lines: int = 40) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def start_web(p: Pipeline, args: argparse.Namespace) -> tuple[int, list[str]]:
    """Start the web process, wait until it serves ``/api/symbols``; return its port and command."""
    port = free_port()
    argv, env = web_command(port, args.web_cmd)
    rest = str(p.http.base_url).rstrip("/")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
           "REDIS_URL": p.redis.url, "TP_DEMO": "1", "TP_NAMESPACE": "tp",
           "TP_STREAM_SHARDS": str(candles_rate.SHARDS), "TP_LOG_LEVEL": "WARNING",
           "TP_REST_URL": rest, "TP_WEB_ANONYMOUS": "1", "PORT": str(port),
           "TP_WEB_ORIGIN": f"http://127.0.0.1:{port}", **env,
           **dict(kv.split("=", 1) for kv in args.web_env)}  # fmt: skip
    p.spawn("web", argv, env)
    deadline = time.time() + 60
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, trust_env=False) as http:
        while True:
            if p.procs["web"].poll() is not None:
                raise SystemExit(f"the web process exited ({p.procs['web'].returncode}):\n"
                                 + tail(p.tmp / "web.log"))  # fmt: skip
            with contextlib.suppress(httpx.HTTPError):
                got = http.get("/api/symbols")
                if got.status_code == 200:
                    for proc in candles_rate.tree(p.procs["web"].pid):  # gunicorn and its worker
                        os.setpriority(os.PRIO_PROCESS, proc.pid, args.web_nice)
                    return port, argv
                if time.time() > deadline:
                    raise SystemExit(f"/api/symbols answers {got.status_code}: {got.text[:300]}\n"
                                     + tail(p.tmp / "web.log"))  # fmt: skip
            if time.time() > deadline:
                raise SystemExit("the web process does not answer:\n" + tail(p.tmp / "web.log"))
            time.sleep(0.5)


def universe(p: Pipeline) -> list[str]:
    for _ in range(300):
        raw = p.r.get(p.keys.universe())
        if raw:
            return list(orjson.loads(raw))
        time.sleep(0.2)
    raise SystemExit("the consumer wrote no <ns>:universe in 60 s")


def percentile(hist: dict[int, int], q: float) -> int:
    n = sum(hist.values())
    rank, seen = min(n - 1, int(n * q)), 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen > rank:
            return ms
    return -1


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the load processes' windows (or statuses) into one."""
    out: dict[str, Any] = {"seconds": max(x.get("seconds", 0) for x in parts), "counts": Counter(),
                           "totals": Counter(), "errors": Counter(), "live": 0, "ack_ms": [],
                           "hist": {k: Counter() for k in KINDS}}  # fmt: skip
    for x in parts:
        for key in ("counts", "totals", "errors"):
            out[key].update(x.get(key, {}))
        out["live"] += x["live"]
        out["ack_ms"] += x["ack_ms"]
        for k, h in x.get("hist", {}).items():
            out["hist"][k].update(h)
    return out


class Bench:
    """The pipeline, the web process and the load processes, and how each window is measured."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.p = Pipeline(args.symbols, tmp, {})  # the product's stream bounds
        self.loads: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        self.replayers: list[tuple[multiprocessing.process.BaseProcess, Connection, Any]] = []
        self.speed: Any = None  # the replay's speed, shared with its processes
        try:
            self.p.rate(args.rate)
            if args.replay:
                self.start_replay(tmp)
            self.port, argv = start_web(self.p, args)
            print(f"# web: python {' '.join(argv)}  (log {tmp / 'web.log'})", flush=True)
            self.symbols = universe(self.p)
        except BaseException:
            self.close()
            raise

    def start_replay(self, tmp: Path) -> None:
        """Record the pipeline's output for ``--replay`` seconds, stop the pipeline (all but
        Redis and an idle simulator), and replay the recording in a process of its own."""
        a, path = self.args, tmp / "replay.pickle"
        time.sleep(a.record_warmup)
        got = record(self.p, a.replay, path)
        print(f"# recorded {path.stat().st_size / 2**20:.0f} MiB: "
              + "  ".join(f"{k}={v:,.1f}" for k, v in got.items()), flush=True)  # fmt: skip
        self.recorded = got
        self.p.rate(0)
        for name in ("worker", "consumer", "feeder"):
            self.p.procs[name].terminate()
            self.p.procs[name].wait(30)
            del self.p.procs[name], self.p.pids[name]
        bounds = Settings.from_env({"TP_DEMO": "1"})
        cfg = {"path": str(path), "url": self.p.redis.url, "cpu": candles_rate.PIN.get("replay"),
               "updates_maxlen": bounds.candles.updates_maxlen,
               "book_maxlen": bounds.stream_maxlen}  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        self.speed = ctx.Value("d", 1.0)
        parts = max(1, a.replay_procs)
        for part in range(parts):
            ours, theirs = ctx.Pipe()
            counters = ctx.Array("q", 3)
            name = "replay" if parts == 1 else f"replay-{part}"
            proc = ctx.Process(target=replay_process, name=name,
                               args=(theirs, {**cfg, "part": part, "parts": parts}, counters,
                                     self.speed))  # fmt: skip
            proc.start()
            self.replayers.append((proc, ours, counters))
            self.p.pids[name] = proc.pid

    def snapshot(self) -> dict[str, Any]:
        """The pipeline's counters, or the replay's."""
        snap = self.p.snapshot()
        if self.replayers:
            snap["replayed"] = sum(counters[0] for _, _, counters in self.replayers)
            snap["replay late"] = max(counters[1] for _, _, counters in self.replayers)
            snap["replayed builds"] = sum(counters[2] for _, _, counters in self.replayers)
            for _, _, counters in self.replayers:
                counters[1] = 0
        return snap

    def web_procs(self) -> tuple[psutil.Process, list[psutil.Process]]:
        master = psutil.Process(self.p.pids["web"])
        return master, master.children(recursive=True)

    def web_rss_mib(self) -> float:
        """RSS of the gunicorn worker(s), the process holding the sockets."""
        _, workers = self.web_procs()
        return sum(w.memory_info().rss for w in workers) / 2**20

    def check_web(self) -> None:
        if self.p.procs["web"].poll() is not None:
            raise SystemExit(f"the web process exited ({self.p.procs['web'].returncode}):\n"
                             + tail(self.p.tmp / "web.log"))  # fmt: skip

    def start_load(self) -> None:
        a = self.args
        procs = a.procs or max(1, min(4, math.ceil(a.clients / 1000)))
        plan = [random.Random(a.seed + i).sample(self.symbols, a.symbols_per_client)  # noqa: S311
                for i in range(a.clients)]  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        for k in range(procs):
            ours, theirs = ctx.Pipe()
            cfg = {"url": f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket",
                   "origin": f"http://127.0.0.1:{self.port}", "timeframe": a.timeframe,
                   "plan": plan[k::procs], "ramp_per_s": a.ramp_per_s / procs,
                   "retry_s": a.retry_s, "cpu": candles_rate.PIN.get("load"),
                   "channels": tuple(a.channels.split(",")), "client": a.client}  # fmt: skip
            proc = ctx.Process(target=load_process, args=(theirs, cfg), name=f"load-{k}")
            proc.start()
            self.loads.append((proc, ours))
        self.p.pids.update({f"load-{k}": proc.pid for k, (proc, _) in enumerate(self.loads)})
        print(f"# load: {a.clients} {a.client} clients in {procs} processes, "
              f"{a.symbols_per_client} symbols of {len(self.symbols)} each ({a.channels}), "
              f"ramp {a.ramp_per_s:g}/s",
              flush=True)  # fmt: skip

    def ask(self, what: str) -> dict[str, Any]:
        for _, conn in self.loads:
            conn.send(what)
        return merge([conn.recv() for _, conn in self.loads])

    def ramp(self) -> dict[str, Any]:
        """Wait until every client is subscribed, or until none progressed for 60 s."""
        t0, best, best_at = time.time(), -1, time.time()
        while True:
            time.sleep(2)
            self.check_web()
            s = self.ask("status")
            done = s["totals"]["subscribed"]
            if done > best:
                best, best_at = done, time.time()
            print(f"  ramp t={time.time() - t0:4.0f}s connected={s['totals']['connected']} "
                  f"subscribed={done} live={s['live']} errors={sum(s['errors'].values())} "
                  f"retries={s['totals']['subscribe retries']} "
                  f"rss={self.web_rss_mib():.0f} MiB", flush=True)  # fmt: skip
            if done >= self.args.clients or time.time() - best_at > 60:
                break
        acks = sorted(s["ack_ms"]) or [0.0]
        print(f"ramp: {done}/{self.args.clients} subscribed in {time.time() - t0:.0f} s; "
              f"subscribe->ack p50={acks[len(acks) // 2]:.0f} ms "
              f"p99={acks[min(len(acks) - 1, int(len(acks) * 0.99))]:.0f} ms max={acks[-1]:.0f} ms",
              flush=True)  # fmt: skip
        for err, n in s["errors"].items():
            print(f"  error x{n}: {err}")
        return s

    def window(
        self, w0: dict[str, Any], w1: dict[str, Any], got: dict[str, Any]
    ) -> dict[str, float]:
        """Return one window's row: rates, latency percentiles, CPU and RSS."""
        dt = w1["t"] - w0["t"]
        cpu: dict[str, float] = Counter()
        for name in w0["cpu"]:
            group = "load" if name.startswith("load-") else name.partition("-")[0]
            cpu[f"{group} CPU"] += (w1["cpu"][name] - w0["cpu"][name]) / dt
        e2e = got["hist"]["e2e"]
        if not e2e:
            counts, errors = dict(got["counts"]), dict(got["errors"])
            raise SystemExit(f"no md message in the window; counts {counts}, errors {errors}\n"
                             + tail(self.p.tmp / "web.log"))  # fmt: skip
        row = {"kept": got["live"], "md/s": got["counts"]["md"] / got["seconds"],
               "rooms/s": got["counts"]["rooms"] / got["seconds"],
               "MB/s": got["counts"]["bytes"] / got["seconds"] / 1e6,
               **{f"p{q}": percentile(e2e, q / 100) for q in (50, 90, 99)},
               "max": max(e2e), "server p50": percentile(got["hist"]["server"], 0.5),
               "server p99": percentile(got["hist"]["server"], 0.99),
               "transit p99": percentile(got["hist"]["transit"], 0.99),
               **({"replayed/s": (w1["replayed"] - w0["replayed"]) / dt,
                   "replay late max": w1["replay late"]} if "replayed" in w1 else
                  {"trades/s": (w1["applied"] - w0["applied"]) / dt,
                   "shed": w1["shed"] - w0["shed"]}),
               "kicked": got["totals"]["kicked"],
               "closed": got["totals"]["closed"] + got["totals"]["disconnected by server"],
               **cpu, "other CPU": (w1["busy"] - w0["busy"]) / dt - sum(cpu.values()),
               "machine CPU": (w1["busy"] - w0["busy"]) / dt, "load avg": os.getloadavg()[0],
               "web RSS MiB": self.web_rss_mib()}  # fmt: skip
        odd = {
            k: v for k, v in got["counts"].items() if k.startswith(("negative", "parsed", "other"))
        }
        if odd:
            print(f"  note: {odd}")
        return row

    def health(self) -> None:
        for name, raw in self.p.r.hgetall(self.p.keys.web_health()).items():
            print(f"  web health {name.decode()}: {raw.decode()[:600]}")

    def watch(self, seconds: float) -> dict[str, float]:
        """Sleep ``seconds`` reading the web's health each second (it reports every 2 s the
        longest pump lag and garbage-collection pause since its last report); return the
        window's longest of each and its number of full collections."""
        end, seen, first, last = time.time() + seconds, Counter[str](), None, None
        while (left := end - time.time()) > 0:
            time.sleep(min(1.0, left))
            reports = self.p.r.hvals(self.p.keys.web_health())  # one web process
            h = orjson.loads(reports[0]) if reports else {}
            for k in ("lag_ms_max", "gc_ms_max"):
                seen[k] = max(seen[k], h.get(k, 0))
            first = first if first is not None else h.get("gc_full", 0)
            last = h.get("gc_full", 0)
        return {"pump lag max": seen["lag_ms_max"], "GC pause max": seen["gc_ms_max"],
                "full GCs": (last or 0) - (first or 0)}  # fmt: skip

    def close(self) -> None:
        for _, conn in self.loads:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for proc, conn in self.loads:
            with contextlib.suppress(OSError, EOFError):
                if conn.poll(20):
                    conn.recv()
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        for _, conn, _ in self.replayers:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for proc, _, _ in self.replayers:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        web = self.p.procs.get("web")
        if web:
            web.terminate()  # gunicorn: graceful stop, --graceful-timeout
            try:
                web.wait(40)
            except subprocess.TimeoutExpired:
                web.kill()
        self.p.close()


def show(row: dict[str, float]) -> str:
    def fmt(k: str, v: float) -> str:
        if k.endswith("CPU"):
            return f"{k}={v:.0%}"
        return f"{k}={v:,.1f}" if k in ("MB/s", "load avg", "web RSS MiB") else f"{k}={v:,.0f}"

    return "  ".join(fmt(k, v) for k, v in row.items())


def latency_run(b: Bench, args: argparse.Namespace) -> None:
    rows = []
    time.sleep(args.warmup)
    b.ask("collect")  # discard the ramp and the warm-up
    for _ in range(args.repeat):
        w0 = b.snapshot()
        pauses = b.watch(args.seconds)
        b.check_web()
        got = b.ask("collect")
        rows.append({**b.window(w0, b.snapshot(), got), **pauses})
        print("  " + show(rows[-1]), flush=True)
        b.health()
    print(f"median of {len(rows)}: " + show({k: statistics.median(r[k] for r in rows)
                                             for k in rows[0]}))  # fmt: skip
    final = b.ask("status")
    print(f"clients: {args.clients} started, {final['totals']['connected']} connected, "
          f"{final['totals']['subscribed']} fully subscribed "
          f"({final['totals']['subscribe retries']} subscribes retried), {final['live']} kept; "
          f"kicked {final['totals']['kicked']}, closed {final['totals']['closed']}, "
          f"disconnected by server {final['totals']['disconnected by server']}")  # fmt: skip
    for err, n in final["errors"].items():
        print(f"  error x{n}: {err}")


def web_health(b: Bench) -> dict[str, Any]:
    reports = b.p.r.hvals(b.p.keys.web_health())  # one web process
    return orjson.loads(reports[0]) if reports else {}


def overload_phase(
    b: Bench, speed: float, seconds: float, before: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Replay at ``speed`` for ``seconds``; return the phase's row and the web's health reports
    (every 2 s) that came during it. ``before`` is the last report before the phase."""
    b.speed.value = speed
    w0, start = b.snapshot(), time.time()
    reports: list[dict[str, Any]] = []
    redis_max = 0
    livez: list[float] = []  # ms per GET /livez: how long a request waits for the pump to yield
    pings: list[float] = []  # ms per Redis PING: how long a command waits for Redis
    http = httpx.Client(base_url=f"http://127.0.0.1:{b.port}", timeout=30, trust_env=False)
    while (left := start + seconds - time.time()) > 0:
        time.sleep(min(0.5, left))
        t0 = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            if http.get("/livez").status_code == 200:
                livez.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        b.p.r.ping()
        pings.append((time.perf_counter() - t0) * 1000)
        h = web_health(b)
        if h and h["at_ms"] > (reports[-1] if reports else before)["at_ms"]:
            h["replayed"] = sum(counters[0] for _, _, counters in b.replayers)
            h["t"] = time.time()
            reports.append(h)
        redis_max = max(redis_max, int(b.p.r.info("memory")["used_memory"]))
    http.close()
    b.check_web()
    got = b.ask("collect")
    w1 = b.snapshot()
    row = {"speed": speed, **b.window(w0, w1, got)}
    row["builds/s"] = (w1["replayed builds"] - w0["replayed builds"]) / (w1["t"] - w0["t"])
    livez.sort()
    row["livez p50"] = livez[len(livez) // 2] if livez else -1
    row["livez max"] = livez[-1] if livez else -1
    pings.sort()
    row["ping p50"] = pings[len(pings) // 2] if pings else -1
    row["ping max"] = pings[-1] if pings else -1
    for kind in ("c", "b"):
        if got["hist"][f"e2e {kind}"]:
            row[f"{kind} p99"] = percentile(got["hist"][f"e2e {kind}"], 0.99)
    # Rates between the first and the last report of the phase (both inside it), if two came.
    first, last = (reports[0], reports[-1]) if len(reports) > 1 else (before, [*reports, before][0])
    dt = (last["at_ms"] - first["at_ms"]) / 1000 or 1
    row.update({"read/s": (last["entries"] - first["entries"]) / dt,
                "lag p50": statistics.median(h["lag_ms"] for h in reports) if reports else -1,
                "lag max": max((h["lag_ms_max"] for h in reports), default=-1),
                "tick max": max((h["tick_ms_max"] for h in reports), default=-1),
                "sent/s": (last["sent"] - first["sent"]) / dt,
                "skipped": last["skipped"] - before["skipped"],
                "web kicked": last["kicked"] - before["kicked"],
                "health RSS max": max((h["rss_mib"] for h in reports), default=-1),
                "redis MiB max": redis_max / 2**20})  # fmt: skip
    row["read/offered"] = row["read/s"] / row["replayed/s"] if row["replayed/s"] else 0
    prev = before
    for h in reports:
        h["since_s"] = h["at_ms"] / 1000 - start
        h["read/s"] = (h["entries"] - prev["entries"]) / max(h["at_ms"] - prev["at_ms"], 1) * 1000
        if "replayed" in prev:
            h["offered/s"] = (h["replayed"] - prev["replayed"]) / max(h["t"] - prev["t"], 1e-3)
        prev = h
    if speed != 1:
        print(f"  {speed:g}x per report (s: offered/s read/s lag_ms_max): "
              + " ".join(f"{h['since_s']:.0f}:{h.get('offered/s', 0) / 1000:.0f}k/"
                         f"{h['read/s'] / 1000:.0f}k/{h['lag_ms_max']}"
                         for h in reports))  # fmt: skip
    return row, reports


def overload_run(b: Bench, args: argparse.Namespace) -> None:
    """Replay at each of ``--replay-speeds`` for ``--seconds``, each speed above 1 followed by
    ``--recover`` seconds at 1x; report per phase what was offered, read, sent, the pump's lag,
    and after each burst how long the lag took to come back to its level of the first 1x phase."""
    speeds = [float(x) for x in args.replay_speeds.split(",")]
    plan = [(speeds[0], args.seconds, "")]
    for k in speeds[1:]:
        plan.append((k, args.seconds, ""))
        if args.recover and k != 1:
            plan.append((1.0, args.recover, f"after {k:g}x"))
    b.speed.value = speeds[0]
    time.sleep(args.warmup)
    b.ask("collect")  # discard the ramp and the warm-up
    before = web_health(b)
    rows: list[dict[str, Any]] = []
    base_lag = -1.0
    for k, seconds, label in plan:
        row, reports = overload_phase(b, k, seconds, before)
        before = reports[-1] if reports else before
        if base_lag < 0:  # the first phase sets the normal level
            base_lag = max(row["lag max"], 50)
        if label:
            # Drained by the first health report after the last one whose lag_ms_max (the
            # worst read of its 2 s) is over the first phase's worst lag: an upper bound, to
            # within a report (0: none was over).
            bad = [j for j, h in enumerate(reports) if h["lag_ms_max"] > base_lag]
            row["drain s"] = 0.0
            if bad:
                after = bad[-1] + 1
                row["drain s"] = reports[after]["since_s"] if after < len(reports) else math.inf
            lags = " ".join(f"{h['since_s']:.0f}s:{h['lag_ms_max']}" for h in reports)
            print(f"  recovery {label}: lag_ms_max per report (threshold {base_lag:.0f}): {lags}")
        row["phase"] = label or f"{k:g}x"
        rows.append(row)
        print(f"  {row['phase']}: " + show({k2: v for k2, v in row.items() if k2 != "phase"}),
              flush=True)  # fmt: skip
        b.health()
    final = b.ask("status")
    print(f"clients: {args.clients} started, {final['totals']['connected']} connected, "
          f"{final['totals']['subscribed']} fully subscribed, {final['live']} kept; "
          f"kicked {final['totals']['kicked']}, closed {final['totals']['closed']}, "
          f"disconnected by server {final['totals']['disconnected by server']}")  # fmt: skip
    for err, n in final["errors"].items():
        print(f"  error x{n}: {err}")
    cols = [("phase", "phase", "{}"), ("offered entries/s", "replayed/s", "{:,.0f}"),
            ("of which builds/s", "builds/s", "{:,.0f}"),
            ("read entries/s", "read/s", "{:,.0f}"), ("read/offered", "read/offered", "{:.0%}"),
            ("md/s", "md/s", "{:,.0f}"), ("lag p50 ms", "lag p50", "{:,.0f}"),
            ("lag max ms", "lag max", "{:,.0f}"), ("tick max ms", "tick max", "{:,.0f}"),
            ("e2e p50", "p50", "{:,.0f}"), ("e2e p99", "p99", "{:,.0f}"),
            ("candle p99", "c p99", "{:,.0f}"), ("book p99", "b p99", "{:,.0f}"),
            ("web CPU", "web CPU", "{:.0%}"), ("redis CPU", "redis CPU", "{:.0%}"),
            ("replay CPU", "replay CPU", "{:.0%}"), ("load CPU", "load CPU", "{:.0%}"),
            ("machine", "machine CPU", "{:.0%}"), ("web RSS MiB", "web RSS MiB", "{:.0f}"),
            ("redis MiB", "redis MiB max", "{:.0f}"), ("skipped", "skipped", "{:,.0f}"),
            ("kicked", "web kicked", "{:,.0f}"),
            ("livez p50 / max ms", "livez", "{}"), ("redis ping p50 / max ms", "ping", "{}"),
            ("replay late max ms", "replay late max", "{:,.0f}"),
            ("drain s", "drain s", "{:.0f}")]  # fmt: skip
    print("\n| " + " | ".join(c[0] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        row["livez"] = f"{row['livez p50']:,.0f} / {row['livez max']:,.0f}"
        row["ping"] = f"{row['ping p50']:,.1f} / {row['ping max']:,.0f}"
        print("| " + " | ".join(fmt.format(row[key]) if key in row else "-"
                                for _, key, fmt in cols) + " |")  # fmt: skip


def rss_run(b: Bench, args: argparse.Namespace) -> None:
    start = time.time()
    samples: list[tuple[float, float]] = []
    b.ask("collect")
    w0 = b.snapshot()
    while time.time() - start < args.rss_minutes * 60:
        time.sleep(10)
        b.check_web()
        samples.append((time.time() - start, b.web_rss_mib()))
        if len(samples) % 6 == 0:  # once a minute: that minute's latency
            w1 = b.snapshot()
            row = b.window(w0, w1, b.ask("collect"))
            w0 = w1
            print(f"t={samples[-1][0]:5.0f}s " + show(row), flush=True)
        else:
            print(f"t={samples[-1][0]:5.0f}s web RSS={samples[-1][1]:6.1f} MiB", flush=True)
    warm = [s for s in samples if s[0] >= args.rss_warmup * 60] or samples
    mib = [m for _, m in warm]
    slope = statistics.linear_regression([t for t, _ in warm], mib).slope if len(warm) > 1 else 0
    print(f"web worker RSS after {args.rss_warmup:g} min warm-up: first={mib[0]:.1f} "
          f"last={mib[-1]:.1f} min={min(mib):.1f} max={max(mib):.1f} MiB, growth "
          f"{mib[-1] - mib[0]:+.1f} MiB, trend {slope * 3600:+.1f} MiB/h")  # fmt: skip
    b.health()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--symbols-per-client", type=int, default=5)
    parser.add_argument("--timeframe", default="1m")
    parser.add_argument("--symbols", type=int, default=300, help="simulator instruments")
    parser.add_argument("--rate", type=float, default=9500, help="simulator aggTrades/s")
    parser.add_argument("--procs", type=int, default=0, help="load processes (0: 1 per 1000)")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="picows",
        help="the load processes' websocket client (websockets: the old, costlier one)",
    )
    parser.add_argument("--ramp-per-s", type=float, default=100, help="new clients per second")
    parser.add_argument(
        "--retry-s",
        type=float,
        default=2,
        help="resend a subscribe refused as 'unavailable' after this (0: never)",
    )
    parser.add_argument("--warmup", type=float, default=20, help="after the ramp, before windows")
    parser.add_argument("--seconds", type=float, default=60, help="measured window")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-minutes", type=float, default=0, help="sample RSS instead")
    parser.add_argument("--rss-warmup", type=float, default=5, help="minutes left out of growth")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pin", default="none",
                        help="'none' (default) or e.g. worker=0,feeder=1,web=0,load=1 (see "
                             "candles_rate.PIN; web and load are this script's)")  # fmt: skip
    parser.add_argument("--web-cmd", default="", help="instead of the Procfile's web: line")
    parser.add_argument("--web-env", action="append", default=[], help="KEY=VALUE for the web")
    parser.add_argument("--web-nice", type=int, default=0,
                        help="the web's nice value (-10: before the pipeline)")  # fmt: skip
    parser.add_argument(
        "--replay",
        type=float,
        default=0,
        help="record the pipeline's output for this many seconds, stop the "
        "pipeline, and feed the web that recording, looped, at its pace",
    )
    parser.add_argument(
        "--record-warmup",
        type=float,
        default=20,
        help="seconds of pipeline before recording starts",
    )
    parser.add_argument(
        "--replay-speeds",
        default="",
        help="with --replay: replay at each of these multiples of the recorded pace "
        "(e.g. 1,2,4,8) for --seconds, each above 1 followed by --recover seconds at 1x",
    )
    parser.add_argument("--recover", type=float, default=30, help="1x seconds after a burst")
    parser.add_argument("--replay-procs", type=int, default=1,
                        help="replay processes (the streams split between them)")  # fmt: skip
    parser.add_argument(
        "--channels", default="candles", help="channels subscribed per symbol, e.g. candles,book"
    )
    parser.add_argument("--logs", default="", help="keep the processes' logs in this directory")
    args = parser.parse_args()
    if args.replay_speeds and not args.replay:
        parser.error("--replay-speeds needs --replay")
    candles_rate.PIN.update(web=None, load=None, replay=None)
    for part in filter(None, args.pin.split(",")):
        name, _, cpu = part.partition("=")
        candles_rate.PIN.update(dict.fromkeys(candles_rate.PIN) if name == "none"
                                else {name: int(cpu)})  # fmt: skip
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
          f"python={platform.python_version()} pin={candles_rate.PIN} "
          f"calibration={calibrate():.2f} us/decode loadavg={os.getloadavg()}",
          flush=True)  # fmt: skip
    # Killed (SIGTERM, Ctrl-C): stop the load processes and the pipeline on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        if args.logs:
            tmp = Path(args.logs)
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        b = Bench(args, tmp)
        try:
            b.start_load()
            b.ramp()
            run = overload_run if args.replay_speeds else latency_run
            (rss_run if args.rss_minutes else run)(b, args)
        finally:
            b.close()


if __name__ == "__main__":
    main()
