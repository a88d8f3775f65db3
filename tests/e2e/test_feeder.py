"""The feeder process against the simulator and a real Redis: every trade lands exactly once.

Each test runs `python -m feeds` as a real process, lets the simulated market trade, injects
faults through the simulator's admin API, then silences the market, waits for the feeder to
drain, and compares the trade ids in Redis with the simulator's record of what it emitted: every
emitted trade from the first one the feeder saw is in the streams exactly once and in order,
except where a gap record names its raw trade ids.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import redis

from core.keys import ENTRY_FIELD, Keys
from core.schemas import BookTicker, Gap, Kline, MarkPrice, Trade, decode
from demo.redis_server import RedisServer
from simulator.ws_server import WsLimits
from tests.e2e.conftest import RunningSim

ROOT = Path(__file__).resolve().parents[2]


class FeederProcess:
    def __init__(self, sim: RunningSim, redis_url: str, namespace: str, **env: str) -> None:
        self.keys = Keys(namespace, 4)
        self.redis = redis.Redis.from_url(redis_url)
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
            "REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_DEMO": "1",
            "TP_STREAM_SHARDS": "4", "TP_REST_URL": sim.rest_url, "TP_WS_URL": sim.ws_url,
            "TP_FEED_SILENCE_MS": "1500", "TP_FEED_REORDER_MS": "300", "TP_LOG_LEVEL": "INFO",
            **env,
        }  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "feeds"], cwd=ROOT, env=full_env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def health(self) -> dict[str, Any] | None:
        raw = self.redis.hget(self.keys.feed_health(), "feeder-1of1")
        return None if raw is None else orjson.loads(raw)

    def wait_live(self, timeout_s: float = 30) -> dict[str, Any]:
        """Wait until a snapshot taken from now on shows every connection live, trades written."""
        since_ms = time.time_ns() // 1_000_000
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            h = self.health()
            fresh = h is not None and h["updated_ms"] > since_ms
            live = (
                fresh and h["connections"] and all(c["state"] == "live" for c in h["connections"])
            )
            if live and h["counters"]["written"] > 0:
                return h
            assert self.proc.poll() is None, self.stderr()
            time.sleep(0.2)
        raise AssertionError(f"feeder not live: {self.health()}")

    def wait_drained(self, timeout_s: float = 30) -> dict[str, Any]:
        """Wait until the market is silent and the feeder has written everything it holds.

        Two health snapshots in a row (one each health period) must show it idle with the same
        counts. Mark prices go on every second whatever the market does: they are not counted."""
        deadline = time.monotonic() + timeout_s
        last_seen: tuple[int, ...] = ()
        last_ms = 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            h = self.health()
            assert h is not None
            if h["updated_ms"] == last_ms:
                continue  # the same snapshot: wait for the next one
            last_ms = h["updated_ms"]
            box = h["outbox"]
            idle = box["size"] == 0 and box["in_flight"] == 0 and box["held_for_reorder"] == 0
            c = h["counters"]
            seen = (c["trades"], c["klines"], c["book_tickers"], c["gaps_written"])
            if idle and box["pending_gaps"] == 0 and seen == last_seen:
                return h
            last_seen = seen
        raise AssertionError(f"feeder did not drain: {self.health()}")

    def stderr(self) -> str:
        self.stop()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def start_feeder(redis_url: str, namespace: str) -> Iterator[Callable[..., FeederProcess]]:
    started: list[FeederProcess] = []

    def start(sim: RunningSim, **env: str) -> FeederProcess:
        feeder = FeederProcess(sim, redis_url, namespace, **env)
        started.append(feeder)
        return feeder

    yield start
    for feeder in started:
        feeder.stop()


@pytest.fixture
def live_market(
    sim_factory: Callable[..., RunningSim], start_feeder: Callable[..., FeederProcess]
) -> Callable[..., tuple[RunningSim, FeederProcess]]:
    """Start a simulator with ``symbol_count`` symbols and a feeder on it, trading and live."""

    def start(symbol_count: int, *, limits: WsLimits | None = None, trade_retention: int = 100_000,
              **env: str) -> tuple[RunningSim, FeederProcess]:  # fmt: skip
        extra = {"limits": limits} if limits else {}
        sim = sim_factory(rate=0.0, trade_retention=trade_retention, symbol_count=symbol_count,
                          **extra)  # fmt: skip
        feeder = start_feeder(sim, **env)
        sim.admin("POST", "/sim/rate", {"rate": 300})
        feeder.wait_live()
        return sim, feeder

    return start


@dataclass
class Comparison:
    written: dict[str, list[int]]
    gaps: dict[str, list[Gap]]
    missing_in_gaps: int  # emitted ids absent from Redis but named by a gap
    symbols_checked: int


def read_stream(r: redis.Redis, key: str) -> list[bytes]:
    return [fields[ENTRY_FIELD] for _, fields in r.xrange(key)]


def compare(sim: RunningSim, feeder: FeederProcess, *, redis_failed: bool = False) -> Comparison:
    """Assert exactly-once delivery of every emitted trade, except where a gap says so.

    With ``redis_failed`` a batch retried after a half-landed pipeline may repeat entries (the
    writer is at least once across Redis failures): order and completeness are still checked.
    """
    keys, r = feeder.keys, feeder.redis
    written: dict[str, list[int]] = defaultdict(list)
    gaps: dict[str, list[Gap]] = defaultdict(list)
    for shard in range(keys.shards):
        for data in read_stream(r, keys.trades(shard)):
            t = decode(data, Trade)
            assert keys.shard_of(t.symbol) == shard
            written[t.symbol].append(t.trade_id)
        for data in read_stream(r, keys.gaps(shard)):
            g = decode(data, Gap)
            gaps[g.symbol].append(g)
    missing_in_gaps = 0
    for symbol, ids in written.items():
        if redis_failed:
            ids = sorted(set(ids))
        assert ids == sorted(set(ids)), f"{symbol}: duplicated or out-of-order trade ids"
        emitted = sim.http.get(
            "/sim/trades", params={"symbol": symbol, "fromId": ids[0], "limit": 100000}
        ).json()
        assert emitted, symbol
        assert emitted[0]["a"] == ids[0], f"{symbol}: ground truth starts after our first id"
        have = set(ids)
        for trade in emitted:
            if trade["a"] in have:
                continue
            covered = any(g.from_trade_id <= trade["f"] and (
                              trade["l"] <= g.to_trade_id if g.reason != "outage"
                              else trade["T"] <= g.end_time_ms)  # ids unknown: its time window
                          for g in gaps[symbol])  # fmt: skip
            assert covered, (
                f"{symbol}: trade {trade['a']} (raw {trade['f']}..{trade['l']}) lost without a gap "
                f"record; gaps {gaps[symbol]}; written around it "
                f"{[i for i in ids if abs(i - trade['a']) < 4]}"
            )
            missing_in_gaps += 1
    return Comparison(dict(written), dict(gaps), missing_in_gaps, len(written))


def run_market(sim: RunningSim, rate: float, seconds: float) -> None:
    sim.admin("POST", "/sim/rate", {"rate": rate})
    time.sleep(seconds)


def silence(sim: RunningSim) -> None:
    sim.admin("POST", "/sim/rate", {"rate": 0})
    sim.admin("DELETE", "/sim/faults")


# --- tests -----------------------------------------------------------------------------------


def test_full_universe_over_several_connections_lands_every_trade_once(
    sim_factory: Callable[..., RunningSim], start_feeder: Callable[..., FeederProcess]
) -> None:
    sim = sim_factory(rate=0.0, trade_retention=100_000, kline_lag_ms=(50, 100))
    feeder = start_feeder(sim, TP_FEED_MAX_STREAMS="100")
    sim.admin("POST", "/sim/rate", {"rate": 500})
    live = feeder.wait_live()
    assert len(live["connections"]) == 6  # 366 /market streams in 4, 122 /public in 2
    run_market(sim, 2000, 6)
    silence(sim)
    health = feeder.wait_drained()
    result = compare(sim, feeder)
    assert result.symbols_checked > 100
    assert result.gaps == {}  # no fault, no loss
    counters = health["counters"]
    assert counters["malformed"] == 0
    assert counters["book_tickers"] > 0
    assert counters["klines"] > 0
    assert counters["mark_prices"] > 0
    # Book tickers, mark prices and klines reach their streams too, decodable.
    r, keys = feeder.redis, feeder.keys
    books = [decode(d, BookTicker) for s in range(4) for d in read_stream(r, keys.book(s))]
    klines = [decode(d, Kline) for s in range(4) for d in read_stream(r, keys.klines(s))]
    assert len({b.symbol for b in books}) > 100
    assert {k.timeframe for k in klines} == {"1m"}
    marks = [decode(d, MarkPrice) for s in range(4) for d in read_stream(r, keys.mark(s))]
    assert len({m.symbol for m in marks}) > 100
    for m in marks:  # each in its symbol's shard, funding due on an 8-hour boundary
        assert keys.shard_of(m.symbol) in range(4)
        assert m.next_funding_time_ms % (8 * 3600_000) == 0
        assert m.next_funding_time_ms > m.event_time_ms


def test_dropped_and_refused_connections_lose_nothing_unrecorded(
    live_market: Callable[..., tuple[RunningSim, FeederProcess]],
) -> None:
    sim, feeder = live_market(20)
    run_market(sim, 1000, 2)
    seen = set(feeder.wait_live()["last_trade_id"])  # symbols traded before the drop
    sim.admin("POST", "/sim/faults", {"type": "drop"})
    time.sleep(2)
    sim.admin("POST", "/sim/faults", {"type": "refuse", "seconds": 3})
    sim.admin("POST", "/sim/faults", {"type": "drop", "path": "/market"})
    time.sleep(3.5)
    # A loss is revealed by the next trade of the symbol: trade on after reconnecting.
    feeder.wait_live()
    time.sleep(3)
    silence(sim)
    health = feeder.wait_drained()
    result = compare(sim, feeder)
    assert health["counters"]["reconnects"] >= 2
    assert result.missing_in_gaps > 0  # trades sent while we were away are named by gaps
    # Every symbol seen before the drop has an outage gap, whether it traded again or not.
    outages = {s for s, gs in result.gaps.items() if any(g.reason == "outage" for g in gs)}
    assert seen
    assert seen <= outages, seen - outages


def test_duplicated_and_reordered_frames_land_once_in_order_without_gaps(
    live_market: Callable[..., tuple[RunningSim, FeederProcess]],
) -> None:
    sim, feeder = live_market(20)
    sim.admin("POST", "/sim/faults", {"type": "duplicate", "every": 3, "seconds": 4})
    sim.admin("POST", "/sim/faults", {"type": "reorder", "seconds": 4})
    run_market(sim, 1000, 5)
    silence(sim)
    health = feeder.wait_drained()
    result = compare(sim, feeder)
    assert result.gaps == {}
    assert health["counters"]["duplicates"] > 0
    assert health["counters"]["reordered"] > 0


def test_rotation_before_the_servers_cut_off_is_make_before_break(
    live_market: Callable[..., tuple[RunningSim, FeederProcess]],
) -> None:
    # The simulator cuts connections at 12 s; the feeder replaces them from about 4.5 s of age.
    # It also pings every second and drops a connection that has not answered within 5 s.
    limits = WsLimits(lifetime_s=12, ping_interval_s=1, pong_timeout_s=5)
    # The suite's 1.5 s silence floor also takes quiet symbols' natural pauses (hot symbols,
    # quiet regimes) for stalls: those connections are replaced as well, and must lose nothing.
    sim, feeder = live_market(20, limits=limits, TP_FEED_ROTATE_S="5")
    run_market(sim, 1000, 14)
    silence(sim)
    health = feeder.wait_drained()
    result = compare(sim, feeder)
    counters = health["counters"]
    assert counters["rotations"] >= 2
    assert counters["replacements"] >= 2
    # Never cut off by the server: pings answered, rotated in time.
    assert counters["reconnects"] == 0, sim.admin("GET", "/sim/state")["counters"]
    # The overlaps' duplicates were removed, nothing was missed.
    assert result.gaps == {}, str(counters)


def test_a_stalled_stream_is_detected_repaired_and_its_loss_recorded(
    live_market: Callable[..., tuple[RunningSim, FeederProcess]],
) -> None:
    sim, feeder = live_market(10)
    run_market(sim, 500, 3)
    busiest = max(feeder.health()["last_trade_id"].items(), key=lambda kv: kv[1])[0]  # type: ignore[union-attr]
    sim.admin("POST", "/sim/faults",
              {"type": "stall", "stream": f"{busiest.lower()}@aggTrade", "seconds": 6})  # fmt: skip
    time.sleep(8)
    silence(sim)
    health = feeder.wait_drained()
    compare(sim, feeder)
    counters = health["counters"]
    assert counters["stalls"] >= 1
    assert counters["replacements"] >= 1


def test_redis_down_under_load_keeps_memory_bounded_and_resumes_by_itself(
    live_market: Callable[..., tuple[RunningSim, FeederProcess]],
    redis_control: RedisServer,
) -> None:
    # The byte bound binds first (entries vary in size; the entry bound has its unit test).
    sim, feeder = live_market(50, trade_retention=200_000, TP_FEED_BUFFER_BYTES="262144")
    run_market(sim, 3000, 2)
    rss_before = psutil.Process(feeder.proc.pid).memory_info().rss
    redis_control.stop()  # saves what it has, like a graceful restart
    time.sleep(6)
    rss_during = psutil.Process(feeder.proc.pid).memory_info().rss
    redis_control.start()
    time.sleep(3)
    silence(sim)
    health = feeder.wait_drained(timeout_s=60)
    result = compare(sim, feeder, redis_failed=True)
    box, counters = health["outbox"], health["counters"]
    assert box["high_water"] < box["max"]
    assert box["max_bytes"] <= box["high_water_bytes"] < box["max_bytes"] + 1024  # one record
    assert counters["shed_trades"] > 0
    assert counters["outages"] == 1
    assert result.missing_in_gaps > 0
    assert all(g.reason == "shed" for gs in result.gaps.values() for g in gs)
    # 6 s at ~9,000 events/s unbounded would be ~54,000 buffered entries (~25 MB).
    assert rss_during - rss_before < 15 * 2**20


def test_a_restarted_feeder_records_what_it_missed_while_stopped(
    sim_factory: Callable[..., RunningSim], start_feeder: Callable[..., FeederProcess]
) -> None:
    sim = sim_factory(rate=0.0, trade_retention=100_000, symbol_count=10)
    first = start_feeder(sim)
    sim.admin("POST", "/sim/rate", {"rate": 500})
    first.wait_live()
    time.sleep(2)
    first.proc.terminate()  # SIGTERM while trading: stop reading, drain, exit
    assert first.proc.wait(20) == 0
    time.sleep(2)  # the market trades on with no feeder
    second = start_feeder(sim)
    second.wait_live()
    time.sleep(3)
    silence(sim)
    second.wait_drained()
    result = compare(sim, second)  # one stream, both runs: once each, in order, gaps named
    assert result.missing_in_gaps > 0
    assert {g.reason for gs in result.gaps.values() for g in gs} == {"id_jump", "outage"}


class ScriptedExchange:
    """A websocket endpoint that acknowledges subscriptions and then sends fixed frames.

    It stands in for Binance sending bad input, which the simulator never does.
    """

    def __init__(self, frames: list[str]) -> None:
        import asyncio
        import threading

        from websockets.asyncio.server import serve

        self.frames = frames
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handler(ws: Any) -> None:
            async for msg in ws:
                request = orjson.loads(msg)
                await ws.send(orjson.dumps({"result": None, "id": request["id"]}).decode())
                if request["method"] == "SUBSCRIBE" and ws.request.path.startswith("/market"):
                    for frame in self.frames:
                        await ws.send(frame)

        async def start() -> None:
            self.server = await serve(handler, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self.loop)
        ready.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


def agg_frame(a: int, extra: str = "") -> str:
    data = (f'{{"e":"aggTrade","E":1,"s":"BTCUSDT","a":{a},"p":"100.5","q":"2","f":{a},"l":{a},'
            f'"T":1,"m":false{extra}}}')  # fmt: skip
    return f'{{"stream":"btcusdt@aggTrade","data":{data}}}'


def test_bad_frames_are_counted_and_skipped_and_ingestion_goes_on(
    sim: RunningSim, start_feeder: Callable[..., FeederProcess]
) -> None:
    frames = [
        agg_frame(1),
        "{this is not json",
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}',  # fields missing
        '{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1}}',  # a type we ignore
        agg_frame(2, ',"brandNew":1'),  # a field Binance may add tomorrow
        agg_frame(3).replace('"100.5"', "100.5"),  # a float price: refused, never rounded
        agg_frame(4),
    ]
    exchange = ScriptedExchange(frames)
    try:
        # exchangeInfo from the simulator, websockets from the scripted exchange
        feeder = start_feeder(sim, TP_SYMBOLS="BTCUSDT",
                              TP_WS_URL=f"ws://127.0.0.1:{exchange.port}")  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            h = feeder.health()
            if h and h["counters"]["written"] >= 3 and h["counters"]["gaps_written"] >= 1:
                break
            time.sleep(0.3)
        assert h is not None
        c = h["counters"]
        assert (c["malformed"], c["ignored"], c["unknown_fields"]) == (3, 1, 1)
        assert feeder.proc.poll() is None  # still running
        trades = [decode(d, Trade) for d in read_stream(feeder.redis, feeder.keys.trades(
            feeder.keys.shard_of("BTCUSDT")))]  # fmt: skip
        assert [t.trade_id for t in trades] == [1, 2, 4]
        assert trades[0].price == Decimal("100.5")
        shard = feeder.keys.shard_of("BTCUSDT")
        gaps = [decode(d, Gap) for d in read_stream(feeder.redis, feeder.keys.gaps(shard))]
        # The refused trade is a recorded gap, not a silent hole.
        assert [(g.from_trade_id, g.to_trade_id) for g in gaps] == [(3, 3)]
    finally:
        exchange.close()


def test_a_feeder_started_as_redis_goes_down_waits_for_it(
    redis_control: RedisServer, make_settings: Callable[..., Any]
) -> None:
    """Chaos: Redis restarted between the feeder's start-up check and its first read, and the
    feeder exited with a traceback (its supervisor restarted it)."""
    import asyncio
    import threading

    from core.redis_clients import async_client
    from feeds.feeder import Feeder

    settings = make_settings()
    keys = Keys.of(settings)
    sync = redis.Redis.from_url(redis_control.url)
    sync.hset(keys.feed_last_trade(keys.shard_of("BTCUSDT")), "BTCUSDT", "7:7:1000")
    sync.close()
    redis_control.stop()
    got: list[Any] = []

    async def first_read() -> None:
        client = async_client(redis_control.url)
        try:
            feeder = Feeder(settings, ["BTCUSDT"], client, feeder_id="feeder-test")
            got.append(await asyncio.wait_for(feeder._last_trades(), 20))
        except Exception as exc:
            got.append(exc)
        finally:
            await client.aclose()

    # The feeder's loop in a thread; the server is started from this one (a server started
    # from a thread that ends gets SIGTERM: demo/redis_server.py's parent-death signal).
    reader = threading.Thread(target=lambda: asyncio.run(first_read()))
    reader.start()
    time.sleep(1.5)
    assert got == []  # waiting, not failed
    redis_control.start()
    reader.join(25)
    assert got == [{"BTCUSDT": (7, 7, 1000)}]
