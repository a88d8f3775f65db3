"""Candles end to end: simulator -> feeder -> streams -> consumer (builds) -> candles, and the
Dramatiq worker's backfill.

Real processes (`python -m feeds`, `python -m workers.consumer`, `python -m tasks worker ...`), a
real Redis and the simulator as the exchange. After the run, every closed candle in Redis is
compared with the simulator's ground truth: its klines for 1m and 5m, and for 15 s (which Binance
does not have) a fold of the simulator's own record of every trade it emitted.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest

from core.keys import ENTRY_FIELD, GROUP_CANDLES
from core.schemas import Candle, Gap, decode, encode
from demo.redis_server import RedisServer
from simulator.instruments import Instrument
from tests.e2e.conftest import RunningSim
from tests.e2e.pipeline import SHARDS, Pipeline

_DIFF = re.compile(r"(\w+) (\w+) (\d+) differs from the exchange's kline")


def unexplained_diffs(p: Pipeline) -> list[tuple[str, str, int]]:
    """Return the candles the exchange's kline corrected with no recorded loss to explain it.

    A trade lost at a minute's end is revealed only by the next trade's id (a ``Gap`` written
    after the reorder wait), which can come after the minute's kline has been reconciled: the
    exchange's kline then replaces our candle (counted ``reconcile_diff``), rightly. Any other
    difference is a defect.
    """
    gaps = [decode(f[ENTRY_FIELD], Gap) for s in range(SHARDS)
            for _, f in p.redis.xrange(p.keys.gaps(s))]  # fmt: skip
    out = []
    for symbol, tf, open_ms in _DIFF.findall(p.consumer.log_path.read_text(errors="replace")):
        start, end = int(open_ms), int(open_ms) + 60_000
        if not any(g.symbol == symbol and g.start_time_ms < end and g.end_time_ms >= start
                   for g in gaps):  # fmt: skip
            out.append((symbol, tf, start))
    return out


def units(d: Decimal, dp: int) -> int:
    scaled = d.scaleb(dp)
    assert scaled == scaled.to_integral_value(), (d, dp)
    return int(scaled)


def as_bar(c: Candle, inst: Instrument) -> tuple[int, ...]:
    p, q, qq = inst.price_dp, inst.qty_dp, inst.quote_dp
    return (c.open_time_ms, units(c.open, p), units(c.high, p), units(c.low, p),
            units(c.close, p), units(c.volume, q), units(c.quote_volume, qq), c.trades,
            units(c.taker_buy_volume, q), units(c.taker_buy_quote_volume, qq))  # fmt: skip


def truth_klines(sim: RunningSim, i: int, tf: str) -> dict[int, tuple[int, ...]]:
    bars = sim.call(lambda: sim.sim.model.ledgers[i].klines(tf, limit=1500))
    return {b[0]: tuple(b)[:10] for b in bars[:-1]}  # the last bar is still open


def truth_from_trades(sim: RunningSim, i: int, tf_ms: int) -> dict[int, tuple[int, ...]]:
    """Fold the simulator's record of emitted trades the simplest way (integer units)."""
    trades = sim.call(lambda: sim.sim.model.ledgers[i].agg_trades(start_ms=0, limit=1_000_000))
    inst = sim.sim.model.instruments[i]
    shift = 10 ** (inst.price_dp + inst.qty_dp - inst.quote_dp)
    out: dict[int, list[int]] = {}
    for t in trades:
        k = t.T // tf_ms * tf_ms
        n = t.l - t.f + 1
        buy = 0 if t.m else 1
        if k not in out:
            out[k] = [k, t.p, t.p, t.p, t.p, 0, 0, 0, 0, 0]
        b = out[k]
        b[2], b[3], b[4] = max(b[2], t.p), min(b[3], t.p), t.p
        b[5] += t.q
        b[6] += t.p * t.q
        b[7] += n
        b[8] += t.q * buy
        b[9] += t.p * t.q * buy
    for b in out.values():
        assert b[6] % shift == 0
        assert b[9] % shift == 0
        b[6] //= shift
        b[9] //= shift
    return {k: tuple(v) for k, v in sorted(out.items())[:-1]}


def check_against_truth(p: Pipeline, sim: RunningSim) -> dict[str, int]:
    """Assert every closed candle equals the ground truth; return how many were compared.

    Sub-minute candles have no exchange kline: the ones flagged ``partial`` (they may miss trades
    lost in an outage) are counted, not compared. Every other closed candle must be exact.
    """
    compared = {"1m": 0, "5m": 0, "15s": 0, "15s partial": 0, "15s not in truth": 0}
    for i, inst in enumerate(sim.sim.model.instruments):
        for tf in ("1m", "5m"):
            truth = truth_klines(sim, i, tf)
            stored = [c for c in p.candles(inst.symbol, tf) if c.closed]
            for c in stored:
                assert c.source != "partial", f"{c} was never repaired"
                if c.open_time_ms in truth:
                    assert as_bar(c, inst) == truth[c.open_time_ms], (inst.symbol, tf, c)
                    compared[tf] += 1
            # No period the market traded in is missing once we have seen the symbol.
            if stored:
                missing = [t for t, bar in truth.items()
                           if t > stored[0].open_time_ms and bar[7] > 0
                           and t not in {c.open_time_ms for c in stored}]  # fmt: skip
                assert not missing, (inst.symbol, tf, missing)
        truth15 = truth_from_trades(sim, i, 15_000)
        for c in p.candles(inst.symbol, "15s"):
            if not c.closed:
                continue
            if c.source == "partial":  # sub-minute candles have no kline to repair them with
                compared["15s partial"] += 1
            elif c.open_time_ms not in truth15:
                compared["15s not in truth"] += 1
            else:
                assert as_bar(c, inst) == truth15[c.open_time_ms], (inst.symbol, "15s", c)
                compared["15s"] += 1
    return compared


def run_market(sim: RunningSim, p: Pipeline, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s in p.services():
            assert s.alive(), f"{s.name} died:\n{s.tail()}"
        time.sleep(0.5)


def finish(sim: RunningSim, p: Pipeline) -> None:
    """Silence the market, let the last minute close and every repair land."""
    sim.admin("POST", "/sim/rate", {"rate": 0})
    now = time.time()
    time.sleep(max(0.0, 60 - now % 60) + 5)  # the current minute closes; its kline arrives
    p.wait_for("pipeline settled", p.settled, timeout_s=90)


@pytest.mark.timeout(420)
def test_candles_equal_the_exchanges_klines_through_crashes_restarts_and_an_outage(
    sim_factory: Callable[..., RunningSim],
    start_pipeline: Callable[..., Pipeline],
    redis_control: RedisServer,
) -> None:
    sim = sim_factory(rate=0.0, symbol_count=10, trade_retention=200_000, bar_retention=1500)
    p = start_pipeline(sim)
    sim.admin("POST", "/sim/rate", {"rate": 150})
    p.wait_for("first candles", lambda: p.metrics().get("trades_applied", 0) > 500)

    first_full_minute_end = (time.time() // 60 + 2) * 60  # a minute seen whole, from its start
    for victim in (p.worker, p.consumer, p.worker, p.consumer):  # kill -9 mid-batch, 4 times
        run_market(sim, p, 2)
        victim.kill9()
        time.sleep(0.5)
        victim.start()

    # The feeder's writes are at least once: replay a stretch of entries as duplicates.
    entries = p.redis.xrevrange(p.keys.trades(0), count=300)
    for _, fields in reversed(entries):
        p.redis.xadd(p.keys.trades(0), {ENTRY_FIELD: fields[ENTRY_FIELD]})

    run_market(sim, p, 2)
    redis_control.restart(down_s=2)  # everything reconnects on its own
    run_market(sim, p, first_full_minute_end + 3 - time.time())  # its kline is in

    # A feed outage longer than a minute: the trades of it exist only on the exchange.
    # (A 20 s outage was tried to save suite time: one clean-clone run counted 9 reconcile_diff,
    # not explained yet; see the issue 7 note.)
    sim.admin("POST", "/sim/faults", {"type": "refuse", "seconds": 65})
    sim.admin("POST", "/sim/faults", {"type": "drop"})
    run_market(sim, p, 66)
    p.wait_for("feed back", lambda: p.metrics().get("gaps", 0) > 0, timeout_s=30)
    run_market(sim, p, 15)
    finish(sim, p)

    m = p.metrics()
    assert not unexplained_diffs(p), str(m)  # str: pytest would truncate the dict
    assert m.get("backfill_diff", 0) == 0, str(m)
    assert m.get("dead", 0) == 0, m
    # The replayed entries were skipped (the candle comparison below proves none counted twice).
    # Seen once: 264 counted instead of 300, not explained yet (see the issue 5 note).
    assert m["duplicates"] > 0, m
    assert m.get("reconcile_equal", 0) > 0, m  # our own candles were checked, and agreed
    assert m.get("backfill_repaired", 0) + m.get("backfill_filled", 0) > 0, m  # the outage
    # Every symbol came back with an outage gap; its candles in the window were flagged.
    assert m.get("outage_marked", 0) > 0, m
    compared = check_against_truth(p, sim)
    assert compared["1m"] >= 20, compared  # 10 symbols, 2 minutes at least
    # The minute seen whole has 10 x 4 windows; a quiet symbol's window without trades has no
    # candle (one run counted 39), so the bound leaves room for a few.
    assert compared["15s"] >= 10 * 4 - 5, compared
    assert compared["15s partial"] > 0, compared  # the outage's, never presented as exact


def test_a_poison_entry_is_dead_lettered_with_its_error_and_the_rest_goes_on(
    sim_factory: Callable[..., RunningSim], start_pipeline: Callable[..., Pipeline]
) -> None:
    sim = sim_factory(rate=0.0, symbol_count=4)
    p = start_pipeline(sim, TP_CANDLE_MAX_DELIVERIES="3")
    sim.admin("POST", "/sim/rate", {"rate": 100})
    p.wait_for("first candles", lambda: p.metrics().get("trades_applied", 0) > 50)
    bad = b'["trade",1,"not a symbol",1,1,1,"1","1",false,1,1,1]'
    poison = p.redis.xadd(p.keys.trades(1), {ENTRY_FIELD: bad}).decode()
    before = p.metrics()["trades_applied"]
    p.wait_for("dead letter", lambda: p.redis.xlen(p.keys.dead(1)) > 0, timeout_s=30)
    (_, dead), = p.redis.xrange(p.keys.dead(1))  # fmt: skip
    assert dead[b"id"].decode() == poison
    assert dead[b"stream"].decode() == p.keys.trades(1)
    assert b"symbol" in dead[b"error"]
    assert dead[b"d"] == bad
    p.wait_for("more trades", lambda: p.metrics()["trades_applied"] > before + 100)
    pending = {g["name"]: g["pending"] for g in p.redis.xinfo_groups(p.keys.trades(1))}
    assert pending[GROUP_CANDLES.encode()] < 1000  # the shard moved past it
    assert p.metrics()["dead"] == 1
    cursor = p.redis.hgetall(p.keys.candle_cursor(1))
    assert b"fail:trades" not in cursor


def test_an_unreadable_candle_state_restarts_its_symbol_and_stops_nothing(
    sim_factory: Callable[..., RunningSim], start_pipeline: Callable[..., Pipeline]
) -> None:
    sim = sim_factory(rate=0.0, symbol_count=4)
    p = start_pipeline(sim)
    sim.admin("POST", "/sim/rate", {"rate": 100})
    p.wait_for("first candles", lambda: p.metrics().get("trades_applied", 0) > 50)
    # Every symbol's: the market's busy and quiet spells move between symbols, and a symbol
    # that stops trading is never read again (a CI run waited a minute on a quiet one).
    symbols = [i.symbol for i in sim.sim.model.instruments]
    for symbol in symbols:
        p.redis.hset(p.keys.candle_state(symbol), "1m", b"not a candle")
    p.consumer.kill9()  # a fresh consumer reads the state from Redis
    p.consumer.start()
    p.wait_for("the record skipped", lambda: p.metrics().get("state_corrupt", 0) >= 1)
    before = p.metrics()["trades_applied"]
    p.wait_for("trades applied again", lambda: p.metrics()["trades_applied"] > before + 50)
    rewritten = [s for s in symbols
                 if p.redis.hget(p.keys.candle_state(s), "1m") != b"not a candle"]  # fmt: skip
    assert rewritten, symbols  # the symbols that traded restarted with a state of their own


@pytest.mark.timeout(180)
def test_backfill_answers_a_429_by_stopping_and_is_never_banned(
    sim_factory: Callable[..., RunningSim], start_pipeline: Callable[..., Pipeline]
) -> None:
    """History for 40 symbols x 3 timeframes, with our budget set above the exchange's limit.

    The exchange's weight window is shortened from a minute to 5 s to keep the test short (the
    history still needs several windows, so the budget runs into the limit).
    """
    sim = sim_factory(rate=0.0, symbol_count=40, weight_limit=60, ban_after=2,
                      weight_window_s=5)  # fmt: skip
    p = start_pipeline(sim, TP_REST_WEIGHT_BUDGET="1000", TP_TIMEFRAMES="1m,3m,5m")
    p.wait_for("history fetched", lambda: p.metrics().get("backfill_requests", 0) >= 120,
               timeout_s=90)  # fmt: skip
    rest = sim.admin("GET", "/sim/state")["rest"]
    (ip,) = rest["ips"].values()
    assert ip["bans"] == 0, rest  # never a 418
    assert p.metrics().get("backfill_deferred", 0) > 0  # the 429 stopped every request
    assert p.redis.zcard(p.keys.repairs(0)) == 0


def test_candles_need_no_dramatiq_worker_and_a_consumer_outage_loses_no_trade(
    sim_factory: Callable[..., RunningSim], start_pipeline: Callable[..., Pipeline]
) -> None:
    """The consumer builds the candles itself: with the Dramatiq worker down, trades still reach
    them. With the consumer down too, trades wait in their streams; a new consumer (another name:
    the old one's deliveries stay pending under its name) applies every one of them."""
    sim = sim_factory(rate=0.0, symbol_count=8)
    p = start_pipeline(sim)
    p.worker.stop()
    sim.admin("POST", "/sim/rate", {"rate": 200})
    deadline = time.monotonic() + 60
    while p.metrics().get("trades_applied", 0) <= 200:  # (p.wait_for wants every process up)
        assert time.monotonic() < deadline, f"no candles without a worker: {p.consumer.tail()}"
        time.sleep(0.5)
    p.worker.start()
    p.consumer.kill9()
    before = p.metrics()["trades_applied"]
    time.sleep(3)
    assert p.metrics()["trades_applied"] == before  # nobody else builds
    sim.admin("POST", "/sim/rate", {"rate": 0})
    p.consumer.args = [*p.consumer.args[:-1], "c1-again"]
    p.consumer.start()
    p.wait_for("every trade of the outage applied", p.settled, timeout_s=60)
    written = sum(p.redis.xlen(p.keys.trades(s)) for s in range(SHARDS))
    assert p.metrics()["trades_applied"] + p.metrics().get("duplicates", 0) >= written > 0
    assert p.redis.llen(p.keys.dramatiq_queue("candles")) == 0  # no build message exists


def test_repairs_wait_in_their_set_while_the_backfill_queue_is_full(
    sim_factory: Callable[..., RunningSim], start_pipeline: Callable[..., Pipeline]
) -> None:
    """3,000 due repairs that cannot be merged, no worker: the consumer fills the backfill queue
    to its bound and leaves the rest due in the repairs set, unleased, for a later round."""
    sim = sim_factory(rate=0.0, symbol_count=8)
    p = start_pipeline(sim)
    p.worker.stop()
    bound = 2_000  # tasks/broker.py BACKFILL_QUEUE_MAX
    symbols = [i.symbol for i in sim.sim.model.instruments]
    start = (time.time_ns() // 1_000_000 // 60_000 - 20_000) * 60_000
    pipe = p.redis.pipeline(transaction=False)
    for n in range(3_000):  # windows two minutes apart: never adjacent, one request each
        sym = symbols[n % len(symbols)]
        t = start + (n // len(symbols)) * 120_000
        pipe.zadd(p.keys.repairs(p.keys.shard_of(sym)), {f"{sym}|1m|{t}|{t}": 0})
    pipe.execute()
    queue = p.keys.dramatiq_queue("backfill")

    def held() -> int:
        raw = p.redis.hget(p.keys.consumer_health(), "c1")
        return orjson.loads(raw)["repairs_held"] if raw else 0

    deadline = time.monotonic() + 30
    while held() == 0:
        assert time.monotonic() < deadline, "no repair was held back"
        assert p.redis.llen(queue) <= bound
        time.sleep(0.2)
    time.sleep(2)  # more rounds: the queue stays at its bound
    assert p.redis.llen(queue) == bound
    due = sum(p.redis.zcount(p.keys.repairs(s), 0, 0) for s in range(SHARDS))
    assert due >= 3_000 - bound  # never leased: sent as soon as the queue has room


def test_a_flood_of_gaps_grows_the_repairs_by_the_periods_they_touch_not_by_their_number(
    sim_factory: Callable[..., RunningSim], start_pipeline: Callable[..., Pipeline]
) -> None:
    """10,000 id-jump gaps over five minutes of four symbols, no worker to fetch them: each
    becomes one repair per (symbol, timeframe, first period, last period), so the set holds what
    five minutes of periods can make, however many gaps name them."""
    sim = sim_factory(rate=0.0, symbol_count=4)
    p = start_pipeline(sim)
    p.worker.stop()
    symbols = [i.symbol for i in sim.sim.model.instruments]
    rng = random.Random(7)
    t0 = (time.time_ns() // 1_000_000 // 300_000 - 2) * 300_000
    expected = set()
    pipe = p.redis.pipeline(transaction=False)
    for n in range(10_000):
        sym = symbols[n % len(symbols)]
        start = t0 + rng.randrange(300_000)
        end = start + rng.randrange(2_000)  # a jump between two trades: milliseconds apart
        gap = Gap(sym, 10 * n, 10 * n + 3, start, end, "id_jump", end)
        pipe.xadd(p.keys.gaps(p.keys.shard_of(sym)), {ENTRY_FIELD: encode(gap)})
        for tf, ms in (("1m", 60_000), ("5m", 300_000)):  # TIMEFRAMES' klines (not 15s)
            expected.add(f"{sym}|{tf}|{start // ms * ms}|{end // ms * ms}")
    pipe.execute()

    def health() -> dict[str, Any]:
        raw = p.redis.hget(p.keys.consumer_health(), "c1")
        return orjson.loads(raw) if raw else {}

    deadline = time.monotonic() + 60
    while health().get("gaps", 0) < 10_000:
        assert time.monotonic() < deadline, f"gaps not taken: {health()}\n{p.consumer.tail()}"
        time.sleep(0.3)
    members = {m.decode() for s in range(SHARDS) for m in p.redis.zrange(p.keys.repairs(s), 0, -1)}
    assert expected <= members
    # The rest are the start-up history windows (TP_CANDLE_HISTORY), one per series.
    assert len(members - expected) <= health()["history_windows"]
    assert len(expected) <= 4 * (5 * 2 + 1 + 2)  # minutes, their seams, 5m: per symbol


@pytest.mark.timeout(300)
def test_a_burst_the_feeder_cannot_write_sheds_into_gaps_that_backfill_repairs_exactly(
    sim_factory: Callable[..., RunningSim],
    start_pipeline: Callable[..., Pipeline],
) -> None:
    """Issue 19's overload, on the writing side: for 5 s Redis takes no writes (CLIENT PAUSE
    WRITE) while the market trades at full speed, so the feeder reads far more than it can
    write. Its outbox stops at its byte bound and sheds trades as gap records; once writes
    resume the backlog drains by itself, and the exchange's klines (or backfill) make every
    closed candle equal the exchange's again."""
    sim = sim_factory(rate=0.0, symbol_count=8, trade_retention=200_000, bar_retention=1500)
    p = start_pipeline(sim, TP_FEED_BUFFER_BYTES="65536")
    sim.admin("POST", "/sim/rate", {"rate": 300})
    p.wait_for("first candles", lambda: p.metrics().get("trades_applied", 0) > 300)
    minute_end = (time.time() // 60 + 1) * 60
    run_market(sim, p, 2)
    p.redis.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    run_market(sim, p, 6)
    run_market(sim, p, max(3.0, minute_end + 3 - time.time()))  # a minute closes after it
    finish(sim, p)

    feeder = orjson.loads(p.redis.hget(p.keys.feed_health(), "feeder-1of1") or b"{}")
    box, counters = feeder["outbox"], feeder["counters"]
    assert counters["shed_trades"] > 0, counters  # the burst did overflow the outbox
    # Bounded in bytes: never more than the bound plus the one record that crossed it.
    assert box["high_water_bytes"] < box["max_bytes"] + 1024, box
    shed = [decode(f[ENTRY_FIELD], Gap) for s in range(SHARDS)
            for _, f in p.redis.xrange(p.keys.gaps(s))]  # fmt: skip
    assert any(g.reason == "shed" for g in shed), shed[:5]
    m = p.metrics()
    # The candles missing the shed trades were marked partial and replaced by the exchange's:
    # its closed kline (reconcile_partial) or a REST backfill (backfill_repaired / _filled).
    repaired = ("reconcile_partial", "backfill_repaired", "backfill_filled")
    assert sum(m.get(k, 0) for k in repaired) > 0, str(m)
    assert not unexplained_diffs(p), str(m)
    assert m.get("dead", 0) == 0, str(m)
    compared = check_against_truth(p, sim)
    assert compared["1m"] >= 4, compared


def test_two_consumers_split_the_shards_and_one_takes_over_the_others(
    sim_factory: Callable[..., RunningSim], start_pipeline: Callable[..., Pipeline]
) -> None:
    """Two consumers on the same shards build half each (their leases, workers/leases.py):
    no shard is built twice. Killed, one's shards are built by the other once its leases
    expire, and every trade reaches the candles."""
    sim = sim_factory(rate=0.0, symbol_count=8)
    p = start_pipeline(sim, per_role=2)
    sim.admin("POST", "/sim/rate", {"rate": 150})

    def owned() -> dict[str, list[int]]:
        raw = p.redis.hgetall(p.keys.consumer_health())
        return {n.decode(): orjson.loads(v).get("owned", []) for n, v in raw.items()}

    def split() -> bool:
        now = owned()
        every = sorted(s for shards in now.values() for s in shards)
        return sorted(map(len, now.values())) == [2, 2] and every == list(range(SHARDS))

    p.wait_for("the shards split", split)
    before = p.metrics()["trades_applied"]
    p.wait_for("both building", lambda: p.metrics()["trades_applied"] > before + 300)
    assert sorted(map(len, owned().values())) == [2, 2]  # it stays split
    for s in range(SHARDS):
        owner = p.redis.get(p.keys.builder_lease(s))
        assert owner is not None
        assert s in owned()[owner.decode()]
    p.retire(p.consumer)  # c1, for good
    p.wait_for("c2 builds every shard", lambda: owned()["c2"] == list(range(SHARDS)),
               timeout_s=30)  # fmt: skip
    sim.admin("POST", "/sim/rate", {"rate": 0})
    p.wait_for("every trade applied", p.settled, timeout_s=60)
    written = sum(p.redis.xlen(p.keys.trades(s)) for s in range(SHARDS))
    assert p.metrics()["trades_applied"] + p.metrics().get("duplicates", 0) >= written > 0
    assert p.metrics().get("dead", 0) == 0
