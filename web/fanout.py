"""The fan-out pump: one greenlet per web process from the update streams to the clients.

It ``XREAD``s (no consumer group: every web process sees everything) each shard's
``candle-updates``, ``signal-updates`` and ``book`` from where it started, feeds only the rooms
someone is subscribed to (web/rooms.py), and sends each concerned client at most one message per
``TP_WEB_TICK_MS``, in rounds: every tick ÷ phases (~10 ms) one phase of the clients. The same
loop enforces token expiry and revocation on open connections and publishes its health every
2 s in ``<ns>:web:health``.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from core.clock import now_ms
from core.config import Settings
from core.keys import ENTRY_FIELD, Keys
from core.redis_clients import read_streams
from web.market import TRADE_PREFIX, book_json, candle_json, mark_json, signal_json, trade_json
from web.rooms import LATE_BYTES, NEWEST_ONLY, Client, Registry
from web.sessions import Sessions

log = logging.getLogger(__name__)

XREAD_COUNT = 200  # entries per stream per read (a candle-updates entry is a whole build)
HEALTH_EVERY_MS = 2000
AUTH_EVERY_MS = 2000
TICK_SLICE_MS = 2.0  # the tick's work between two pauses (what a trade command may wait)
PAUSE_MAX_S = 0.002  # a pause ends then even if other greenlets keep the loop busy
# The one-value-per-symbol streams: the symbol is read off the record's prefix, so that only
# records of subscribed symbols are decoded.
_SINGLE = {"b": (b'["book",1,"', book_json), "m": (b'["mark",1,"', mark_json),
           "t": (TRADE_PREFIX, trade_json)}  # fmt: skip


@dataclass(slots=True)
class PumpCounters:
    entries: int = 0
    malformed: int = 0
    ticks: int = 0  # rounds (a tick is phases rounds: web/rooms.py)
    sent: int = 0
    direct: int = 0  # md messages written straight to the socket, not through Engine.IO's queue
    skipped: int = 0
    resyncs: int = 0  # rooms clients were told to subscribe to again (web/rooms.py)
    kicked: int = 0
    expired: int = 0
    revoked: int = 0
    errors: int = 0
    max_queue: int = 0  # the longest client transport queue seen when sending
    lag_ms: int = 0  # now - Redis time of the last entry read, of the most-behind stream
    lag_ms_max: int = 0  # the largest lag_ms since the last health report
    full_reads: int = 0  # streams read that returned XREAD_COUNT entries (a backlog)
    conflated: int = 0  # skips ahead on a newest-only stream (book, mark, trades) that fell behind
    conflated_ms: int = 0  # the stream time they skipped, in all
    tick_ms_max: int = 0  # the longest round since the last health report (pauses included)


class GcPauses:
    """Times the interpreter's garbage collections (``gc.callbacks``): one stops every greenlet."""

    def __init__(self) -> None:
        self.started = self.started_cpu = 0.0
        self.full = 0  # generation-2 collections since the start
        self.max_ms = 0.0  # the longest since the last health report
        self.gen_max_ms = [0.0, 0.0, 0.0]  # the same, per generation collected
        self.cpu_max_ms = 0.0  # the most CPU time one collection took, since the same

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            self.started_cpu = time.thread_time()
            return
        ms = (time.perf_counter() - self.started) * 1000
        gen = info["generation"]
        self.max_ms = max(self.max_ms, ms)
        self.gen_max_ms[gen] = max(self.gen_max_ms[gen], ms)
        # CPU time tells the collection's own work from the time the process waited for a core.
        self.cpu_max_ms = max(self.cpu_max_ms, (time.thread_time() - self.started_cpu) * 1000)
        self.full += gen == 2

    def reset(self) -> None:
        """Start the maxima of the next health report."""
        self.max_ms = self.cpu_max_ms = 0.0
        self.gen_max_ms = [0.0, 0.0, 0.0]


class FreezeSurvivors:
    """A ``gc.callbacks`` entry: after each full collection, freeze what survived it.

    The connections' objects live long, so every full collection scanned them all again
    (~230 ms of CPU at 2,000 clients, a pause of every greenlet: trade commands included).
    Frozen, they are skipped by every later collection, which then scans only what was promoted
    since. Frozen objects are still freed by reference counting; only cyclic garbage among them
    (say, a closed connection's cycles) waits: every ``unfreeze_every_s`` the next full
    collection scans everything again instead (one long pause), so that garbage is bounded by
    what that long accumulates.
    """

    def __init__(self, unfreeze_every_s: float, *, freeze: Callable[[], None] = gc.freeze,
                 unfreeze: Callable[[], None] = gc.unfreeze,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.unfreeze_every_s = unfreeze_every_s
        self.freeze, self.unfreeze, self.clock = freeze, unfreeze, clock
        self.unfrozen_at = clock()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        now = self.clock()
        if now - self.unfrozen_at >= self.unfreeze_every_s:
            self.unfreeze()  # the next full collection scans everything (and frees its cycles)
            self.unfrozen_at = now
        else:
            self.freeze()


class Slicer:
    """Lets other greenlets run whenever the tick has worked ``slice_ms`` since it last did.

    A tick to 2,000 clients is ~20-30 ms of work, and more of wall time on a busy machine; without
    a pause no trade command or order event of the process is handled meanwhile (bench/RESULTS.md,
    Execution). ``wait`` should let every greenlet whose I/O is ready run first (``gevent.idle``,
    bounded): a ``sleep(0)`` does not poll for I/O.
    """

    def __init__(self, slice_ms: float, wait: Callable[[], object],
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self.slice_s = slice_ms / 1000
        self.wait = wait
        self.clock = clock
        self.since = clock()
        self.pauses = 0
        self.paused_s = 0.0  # in all pauses so far: the tick's wall time that is not its work

    def start(self) -> None:
        self.since = self.clock()

    def __call__(self) -> None:
        now = self.clock()
        if now - self.since >= self.slice_s:
            self.pauses += 1
            self.wait()
            self.since = self.clock()
            self.paused_s += self.since - now


class Pump:
    """Reads the update streams into the registry and runs the ticks."""

    def __init__(self, client: redis.Redis, settings: Settings, registry: Registry,
                 sessions: Sessions, *, queued: Callable[[str], int],
                 send: Callable[[Client, bytes], bool], notify: Callable[[Client, str, str], None],
                 name: str | None = None, market: redis.Redis | None = None) -> None:  # fmt: skip
        self.client = client  # the control Redis: health
        self.market = client if market is None else market  # the streams
        self.registry = registry
        self.sessions = sessions
        self.keys = Keys.of(settings)
        self.tick_ms = settings.web.tick_ms
        # A round every tick_ms / phases: each sends to the connections of one phase.
        self.round_ms = settings.web.tick_ms / registry.phases
        self.backlog = settings.web.client_backlog
        self._queued = queued
        self._send = send
        self.notify = notify  # (client, event, reason): tell then disconnect
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.counters = PumpCounters()
        self.running = True
        k = self.keys
        self.kinds: dict[bytes, str] = {}
        for s in range(settings.stream_shards):
            self.kinds[k.candle_updates(s).encode()] = "c"
            self.kinds[k.signal_updates(s).encode()] = "s"
            self.kinds[k.book(s).encode()] = "b"
            self.kinds[k.mark(s).encode()] = "m"
        self.ids: dict[bytes, bytes] = {}
        # Set once the streams' start positions are read: a snapshot read before would miss the
        # updates written between it and them (web/sockets.py waits for it).
        self.positioned = threading.Event()
        # A shard's trade stream is read only while a tape room of one of its symbols exists:
        # every trade of the market would otherwise pass through every web process.
        self.trade_keys = {k.trades(s).encode(): s for s in range(settings.stream_shards)}
        self.kinds.update(dict.fromkeys(self.trade_keys, "t"))
        self._layout = -1
        self.gc = GcPauses()
        wait = _ready_first()
        self.slicer = Slicer(TICK_SLICE_MS, wait) if wait is not None else None

    def start_positions(self) -> None:
        """Read from the newest entry of each stream on (what is older comes with snapshots)."""
        keys = [key for key in self.kinds if key not in self.trade_keys]
        with self.market.pipeline(transaction=False) as p:
            for key in keys:
                p.xrevrange(key, count=1)
            last = p.execute()
        self.ids = {key: (e[0][0] if e else b"0-0") for key, e in zip(keys, last, strict=True)}
        self._layout = -1  # the trade streams followed are added again
        self.positioned.set()

    def run(self) -> None:
        """Loop until :attr:`running` is False; errors are logged, counted and retried."""
        gc.callbacks.append(self.gc)
        while self.running:
            try:
                if not self.ids:
                    self.start_positions()
                self._loop()
            except Exception:
                self.counters.errors += 1
                log.exception("fan-out pump failed; retrying in 1 s")
                time.sleep(1)

    def _follow_trades(self) -> None:
        """Add the trade streams of the shards with tape rooms to what is read (from their newest
        entry: the snapshot brought what is older), drop the others."""
        self._layout = self.registry.layout
        shards = {self.keys.shard_of(name[2:]) for name in self.registry.rooms
                  if name.startswith("t:")}  # fmt: skip
        wanted = [key for key, s in self.trade_keys.items() if s in shards]
        for key in [key for key in self.ids if key in self.trade_keys and key not in wanted]:
            del self.ids[key]
        new = [key for key in wanted if key not in self.ids]
        if new:
            with self.market.pipeline(transaction=False) as p:
                for key in new:
                    p.xrevrange(key, count=1)
                last = p.execute()
            for key, e in zip(new, last, strict=True):
                self.ids[key] = e[0][0] if e else b"0-0"

    def _loop(self) -> None:
        next_round = time.monotonic() * 1000 + self.round_ms
        next_health = next_auth = 0
        read = True  # read once more before a round: what came during the last one
        while self.running:
            if self.registry.layout != self._layout:
                self._follow_trades()
            wait = int(next_round - time.monotonic() * 1000)
            if wait > 0 or read:
                read = False
                resp = read_streams(self.market, self.ids, count=XREAD_COUNT,
                                    block=wait if wait > 0 else None)  # fmt: skip
                if resp:
                    self._apply(resp)
                    continue  # read until the round is due
                if wait > 0:
                    continue
            t = now_ms()
            self._tick(t)
            # The next round is one period after this one was due, or at once if this one ran
            # past it (after one read): rounds keep their pace as long as they fit in it.
            next_round = max(next_round + self.round_ms, time.monotonic() * 1000)
            read = True
            if t >= next_auth:
                self._check_auth(t)
                next_auth = t + AUTH_EVERY_MS
            if t >= next_health:
                self.publish_health(t)
                next_health = t + HEALTH_EVERY_MS

    def _apply(self, resp: list[Any]) -> None:
        reg = self.registry
        rooms = reg.rooms
        c = self.counters
        now = now_ms()
        lag = 0
        behind: list[tuple[bytes, int]] = []
        for key, entries in resp:
            kind = self.kinds[key]
            last = self.ids[key] = entries[-1][0]
            last_ms = _entry_ms(last)
            lag = max(lag, now - last_ms)  # (a fresh stream in the reply must not hide a late one)
            c.entries += len(entries)
            if len(entries) >= XREAD_COUNT:
                c.full_reads += 1
                if kind in NEWEST_ONLY:
                    behind.append((key, last_ms))
            if not rooms:
                continue
            for entry_id, fields in entries:
                at = _entry_ms(entry_id)
                data = fields.get(ENTRY_FIELD)
                if data is None:
                    self.counters.malformed += 1
                    continue
                single = _SINGLE.get(kind)
                if single is not None:
                    prefix, to_json = single
                    if not data.startswith(prefix):
                        self.counters.malformed += 1
                        continue
                    end = data.find(b'"', len(prefix))
                    name = f"{kind}:{data[len(prefix) : end].decode()}"
                    if name in rooms:
                        value = to_json(orjson.loads(data))
                        if value is None:
                            self.counters.malformed += 1
                        else:  # a book or mark room keeps one value; a tape, the last trades
                            reg.update(name, value["id"] if kind == "t" else 0, value, at)
                    continue
                try:
                    records = orjson.loads(data)
                except orjson.JSONDecodeError:
                    records = None
                if not isinstance(records, list):  # counted and skipped: the rest goes on
                    self.counters.malformed += 1
                    continue
                for w in records:
                    if not isinstance(w, list) or len(w) < 4:
                        self.counters.malformed += 1
                        continue
                    name = f"{kind}:{w[2]}:{w[3]}"
                    if name not in rooms:
                        continue
                    if kind == "c":
                        value = candle_json(w)
                        key2: Any = value and value["open_time"]
                    else:
                        value = signal_json(w)
                        key2 = value and (value["open_time"], value["signal"])
                    if value is None:
                        self.counters.malformed += 1
                    else:
                        reg.update(name, key2, value, at)
        c.lag_ms = lag
        c.lag_ms_max = max(c.lag_ms_max, lag)
        if behind:
            self._skip_ahead(behind)

    def _skip_ahead(self, behind: list[tuple[bytes, int]]) -> None:
        """Move the read of each stream in ``behind`` (key, time of the last entry read) on to
        its newest tick's worth of entries, if it is further behind than that.

        Past the pump's capacity, reading every book ticker in order would show each one later
        and later (until the stream's MAXLEN trims them, seconds); what a book room shows is the
        newest ticker, and a tape the newest trades, so the pump drops the older ones instead
        (conflation). A symbol whose newest ticker is among those dropped keeps its previous one
        until its next; a tape shows a jump in trade ids."""
        with self.market.pipeline(transaction=False) as p:
            for key, _ in behind:
                p.xrevrange(key, count=1)
            newest = p.execute()
        c = self.counters
        for (key, last_ms), top in zip(behind, newest, strict=True):
            target = _entry_ms(top[0][0]) - self.tick_ms if top else 0
            if target > last_ms:
                self.ids[key] = b"%d-0" % target
                c.conflated += 1
                c.conflated_ms += target - last_ms

    def _tick(self, t: int) -> None:
        queued = self._queued
        c = self.counters

        def measured(eio_sid: str) -> int:
            n = queued(eio_sid)
            if n > c.max_queue:
                c.max_queue = n
            return n

        if self.slicer is not None:
            self.slicer.start()
        stats = self.registry.tick(t, measured, self._send, self.slicer, now_ms)
        c.ticks += 1
        c.sent += stats.sent
        c.direct += stats.direct
        c.skipped += stats.skipped
        c.resyncs += stats.resyncs
        for client in stats.slow:
            c.kicked += 1
            log.warning("client %s stayed behind: disconnected", client.sid,
                        extra={"sid": client.sid})  # fmt: skip
            self.notify(client, "kicked", "slow_consumer")
        c.tick_ms_max = max(c.tick_ms_max, now_ms() - t)

    def _check_auth(self, t: int) -> None:
        for client in self.registry.expired(t // 1000):
            self.counters.expired += 1
            self.notify(client, "auth_expired", "token_expired")
        signed = [c for c in self.registry.clients.values() if c.family]
        if not signed:
            return
        families = sorted({c.family for c in signed if c.family})
        alive = dict(zip(families, self.sessions.alive_many(families), strict=True))
        for client in signed:
            if client.family and not alive[client.family]:
                self.counters.revoked += 1
                self.notify(client, "auth_revoked", "token_revoked")

    def health(self, t: int) -> dict[str, Any]:
        reg = self.registry
        c = self.counters
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "name": self.name, "at_ms": t, "clients": len(reg.clients), "rooms": len(reg.rooms),
            "subscriptions": reg.subscriptions(), "backlog_bound": self.backlog,
            "max_rss_mib": round(rss_kib / 1024, 1), "rss_mib": _rss_mib(),
            "gc_ms_max": round(self.gc.max_ms, 1), "gc_full": self.gc.full,
            "gc_ms_max_gen": [round(ms, 1) for ms in self.gc.gen_max_ms],
            "gc_cpu_ms_max": round(self.gc.cpu_max_ms, 1),
            "trade_streams": sum(key in self.trade_keys for key in self.ids),
            "late": reg.late, "late_dropped": reg.late_dropped, "late_bound_bytes": LATE_BYTES,
            "tick_pauses": self.slicer.pauses if self.slicer is not None else 0,
            "tick_paused_ms": round(self.slicer.paused_s * 1000) if self.slicer is not None else 0,
            **{k: getattr(c, k) for k in c.__slots__},
        }  # fmt: skip

    def publish_health(self, t: int) -> None:
        self.client.hset(self.keys.web_health(), self.name, orjson.dumps(self.health(t)))
        self.counters.lag_ms_max = 0
        self.counters.tick_ms_max = 0
        self.gc.reset()


def _entry_ms(entry_id: bytes) -> int:
    """Return the Redis time (ms) in a stream entry id."""
    return int(entry_id[: entry_id.index(b"-")])


def _ready_first() -> Callable[[], object] | None:
    """Return a pause that lets every greenlet with ready I/O run first (at most PAUSE_MAX_S),
    or None when the process is not under gevent (unit tests, scripts)."""
    import sys

    if "gevent.monkey" not in sys.modules:
        return None
    import gevent
    import gevent.monkey

    if not gevent.monkey.is_module_patched("socket"):
        return None

    def wait() -> None:
        # idle() resumes once the loop has polled and nothing is pending: a sleep(0) would be
        # resumed before the loop polls for I/O (gevent.sleep's docstring).
        with gevent.Timeout(PAUSE_MAX_S, False):
            gevent.idle()

    return wait


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except OSError:  # not Linux
        return 0.0
