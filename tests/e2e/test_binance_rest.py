"""MarketRest against the simulator and a real Redis: klines, clocks, the shared budget, bans."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis

from binance.rest import JITTER_MS, MarketRest, klines_weight
from core.errors import Banned, RateLimited, RestError, RestUnavailable, Throttled
from core.keys import Keys
from core.redis_clients import sync_client
from simulator.app import SimConfig, Simulator
from simulator.ledger import close_time_ms
from tests.e2e.conftest import RunningSim, sim_config

MINUTE_MS = 60_000


class ShiftedClock:
    """Wall-clock time plus ``shift_ms``: the exchange's clock, ahead of ours when shifted."""

    def __init__(self) -> None:
        self.shift_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.shift_ms


class ClockedSim(RunningSim):
    """A RunningSim whose exchange clock the test moves."""

    def __init__(self, config: SimConfig, clock: ShiftedClock) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = Simulator(config, clock=clock)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self.sim.start())
        self.http = httpx.Client(base_url=self.sim.rest_url, timeout=10)


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = sync_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_rest(rds: redis.Redis, keys: Keys) -> Iterator[Callable[..., MarketRest]]:
    made: list[MarketRest] = []

    def make(base_url: str, **options: Any) -> MarketRest:
        client = MarketRest(base_url, redis=rds, keys=keys, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def used_weight(sim: RunningSim) -> int:
    """Return the weight the simulator charged this minute, over every client IP."""
    ips = sim.admin("GET", "/sim/state")["rest"]["ips"]
    return sum(ip["used"] for ip in ips.values())


def not_near_minute_end(sim: RunningSim, margin_ms: int = 3000) -> None:
    """Wait for the next minute if this one ends within ``margin_ms``: weights reset then."""
    left = MINUTE_MS - sim.sim.clock.now_ms() % MINUTE_MS
    if left < margin_ms:
        time.sleep(left / 1000 + 0.05)


def test_klines_are_the_ledgers_bars_closed_by_the_exchanges_clock(
    make_rest: Callable[..., MarketRest],
) -> None:
    clock = ShiftedClock()
    sim = ClockedSim(sim_config(symbols=("BTCUSDT",), rate=200.0, steady=True), clock)
    try:
        time.sleep(0.6)
        clock.shift_ms = 2 * MINUTE_MS  # the exchange is now 2 minutes ahead of this machine
        time.sleep(0.6)
        sim.admin("POST", "/sim/rate", {"rate": 0})  # freeze the market: both reads agree
        rest = make_rest(sim.rest_url)
        candles = rest.klines("BTCUSDT", "1m", limit=50)
        now = clock.now_ms()

        ledger = sim.sim.model.ledgers[sim.sim.model.index["BTCUSDT"]]
        inst = sim.sim.model.instruments[0]
        bars = sim.call(lambda: ledger.klines("1m", limit=50))
        ps, qs, qq = inst.price_str, inst.qty_str, inst.quote_str
        assert [
            (c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close, c.volume,
             c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume)
            for c in candles
        ] == [
            (b.t, close_time_ms("1m", b.t), Decimal(ps(b.o)), Decimal(ps(b.h)), Decimal(ps(b.l)),
             Decimal(ps(b.c)), Decimal(qs(b.v)), Decimal(qq(b.q)), b.n, Decimal(qs(b.V)),
             Decimal(qq(b.Q)))
            for b in bars
        ]  # fmt: skip
        assert all(c.symbol == "BTCUSDT" and c.timeframe == "1m" for c in candles)
        assert all(c.source == "exchange" and c.first_trade_id == -1 for c in candles)
        assert abs(rest.server_time_ms() - now) < 200  # measured, not this machine's clock
        # Bars from before the jump ended over a minute ago on the exchange's clock (this
        # machine's clock says they are still open); the last bar is the open one.
        before_jump = [c for c in candles if c.close_time_ms < now - MINUTE_MS]
        assert before_jump
        assert all(c.closed for c in before_jump)
        assert candles[-1].close_time_ms + rest.settle_ms > now
        assert not candles[-1].closed
    finally:
        sim.stop()


def test_reserved_weights_are_what_the_exchange_charges(
    sim: RunningSim, make_rest: Callable[..., MarketRest], rds: redis.Redis, keys: Keys
) -> None:
    not_near_minute_end(sim)
    rest = make_rest(sim.rest_url)
    rest.server_time_ms()
    for limit in (1, 99, 100, 499, 500, 1000, 1001, 1500):
        before = rest.stats["weight_used_last"]
        rest.klines("BTCUSDT", "1m", limit=limit)
        assert rest.stats["weight_used_last"] - before == klines_weight(limit), limit
    minute = sim.sim.clock.now_ms() // MINUTE_MS
    assert int(rds.hget(keys.rest_weight(), str(minute)) or 0) == used_weight(sim)
    assert rest.stats["requests"] == 9


def test_the_budget_is_shared_and_throttles_before_the_exchange_would(
    sim: RunningSim, make_rest: Callable[..., MarketRest], rds: redis.Redis, keys: Keys
) -> None:
    not_near_minute_end(sim)
    # Two worker processes on one IP; backfill is background work: 20 of the 28, 8 kept for users.
    a = make_rest(sim.rest_url, weight_budget=28, weight_reserve=8)
    b = make_rest(sim.rest_url, weight_budget=28, weight_reserve=8)
    throttled: Throttled | None = None
    for i in range(20):
        try:
            (a, b)[i % 2].klines("BTCUSDT", "5m", limit=100)  # weight 2 (+1 for /time, once)
        except Throttled as exc:
            throttled = exc
            break
    assert throttled is not None
    sent = used_weight(sim)
    assert 18 <= sent <= 20  # the budget was spent by both, and never exceeded
    assert a.stats["requests"] > 1
    assert b.stats["requests"] > 1
    assert 0 < throttled.retry_after_ms <= MINUTE_MS + JITTER_MS
    assert throttled.status is None
    assert throttled.retryable
    for client in (a, b):  # whoever asks next is refused too, and nothing reaches the exchange
        with pytest.raises(Throttled):
            client.klines("BTCUSDT", "5m", limit=100)
    assert used_weight(sim) == sent
    assert a.stats["rate_limited"] == b.stats["rate_limited"] == 0
    assert a.stats["throttled"] + b.stats["throttled"] == 3
    minute = sim.sim.clock.now_ms() // MINUTE_MS
    assert int(rds.hget(keys.rest_weight(), str(minute)) or 0) == sent
    # A smaller request still fits in what is left of the budget.
    if sent < 20:
        a.klines("BTCUSDT", "5m", limit=10)
        assert used_weight(sim) == sent + 1


def test_concurrent_callers_never_spend_more_than_the_budget(
    sim: RunningSim, make_rest: Callable[..., MarketRest]
) -> None:
    not_near_minute_end(sim)
    clients = [make_rest(sim.rest_url, weight_budget=40, weight_reserve=10) for _ in range(2)]
    for c in clients:
        c.server_time_ms()
    outcomes: list[str] = []

    def hammer(client: MarketRest) -> None:
        for _ in range(5):
            try:
                client.klines("BTCUSDT", "1m", limit=100)
                outcomes.append("ok")
            except Throttled:
                outcomes.append("throttled")

    threads = [threading.Thread(target=hammer, args=(clients[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes.count("ok") == 14  # (30 - 2 for /time) // 2
    assert outcomes.count("throttled") == 40 - 14
    assert used_weight(sim) == 30


def test_a_429_stops_every_process_until_retry_after(
    sim_factory: Callable[..., RunningSim], make_rest: Callable[..., MarketRest]
) -> None:
    sim = sim_factory(weight_limit=5, ban_after=100)
    not_near_minute_end(sim)
    a = make_rest(sim.rest_url, weight_budget=1000)  # a budget above the exchange's limit
    b = make_rest(sim.rest_url, weight_budget=1000)
    limited: RateLimited | None = None
    for _ in range(5):
        try:
            a.klines("BTCUSDT", "1m", limit=100)
        except RateLimited as exc:
            limited = exc
            break
    assert limited is not None
    assert (limited.status, limited.code) == (429, -1003)
    assert limited.msg.startswith("Too many requests; current limit is 5 requests per minute.")
    to_minute_end = MINUTE_MS - sim.sim.clock.now_ms() % MINUTE_MS
    assert to_minute_end - 1000 <= limited.retry_after_ms <= to_minute_end + 1000
    sent = used_weight(sim)
    for client in (a, b):  # b has never sent anything: the backoff is in Redis
        with pytest.raises(RateLimited) as caught:
            client.klines("BTCUSDT", "1m", limit=10)
        # Each process estimates the exchange's clock (half a round trip each way): a few ms apart.
        assert 0 < caught.value.retry_after_ms <= limited.retry_after_ms + 50
    assert used_weight(sim) == sent
    assert b.stats["requests"] == 0
    assert (a.stats["rate_limited"], b.stats["rate_limited"]) == (1, 0)
    assert a.stats["throttled"] == b.stats["throttled"] == 1


def test_a_418_ban_stops_every_process_until_it_lifts(
    sim_factory: Callable[..., RunningSim], make_rest: Callable[..., MarketRest]
) -> None:
    sim = sim_factory(weight_limit=3, ban_after=0, ban_base_s=1.5)
    not_near_minute_end(sim)
    a = make_rest(sim.rest_url, weight_budget=1000)
    b = make_rest(sim.rest_url, weight_budget=1000)
    banned: Banned | None = None
    for _ in range(5):
        try:
            a.klines("BTCUSDT", "1m", limit=100)
        except Banned as exc:
            banned = exc
            break
    assert banned is not None
    ips = sim.admin("GET", "/sim/state")["rest"]["ips"]
    assert banned.until_ms == max(ip["bannedUntil"] for ip in ips.values())  # from the message
    assert 1000 < banned.retry_after_ms <= 1500
    assert banned.status == 418
    assert banned.retryable
    assert a.stats["banned"] == 1
    sim.admin("POST", "/sim/reset")  # the exchange forgets; every request would now show
    for client in (a, b):
        with pytest.raises(Banned) as caught:
            client.klines("BTCUSDT", "1m", limit=10)
        assert caught.value.until_ms == banned.until_ms
    assert sim.admin("GET", "/sim/state")["rest"]["ips"] == {}
    time.sleep(max(0, banned.until_ms - sim.sim.clock.now_ms()) / 1000 + 0.05)
    assert b.klines("BTCUSDT", "1m", limit=10)
    assert used_weight(sim) > 0


@pytest.mark.parametrize("with_time", [True, False], ids=["until-in-msg", "retry-after-only"])
def test_a_418_takes_the_ban_end_from_the_message_else_retry_after(
    sim: RunningSim, make_rest: Callable[..., MarketRest], with_time: bool
) -> None:
    rest = make_rest(sim.rest_url)
    rest.server_time_ms()
    now = sim.sim.clock.now_ms()
    msg = (
        f"Way too many requests; IP(127.0.0.1) banned until {now + 5000}. "
        "Please use the websocket for live updates to avoid bans."
        if with_time
        else "Way too many requests."
    )  # the simulator's fault answers Retry-After: 120
    sim.admin("POST", "/sim/faults", {"type": "rest", "status": 418, "msg": msg, "count": 1})
    with pytest.raises(Banned) as caught:
        rest.klines("BTCUSDT", "1m", limit=10)
    expected = now + 5000 if with_time else now + 120_000
    assert abs(caught.value.until_ms - expected) < (1 if with_time else 1000)


def test_an_unknown_symbol_is_a_rest_error_not_worth_retrying(
    sim: RunningSim, make_rest: Callable[..., MarketRest]
) -> None:
    rest = make_rest(sim.rest_url)
    with pytest.raises(RestError) as caught:
        rest.klines("NOPEUSDT", "1m")
    exc = caught.value
    assert type(exc) is RestError
    assert (exc.status, exc.code, exc.msg) == (400, -1121, "Invalid symbol.")
    assert not exc.retryable
    assert rest.stats["errors"] == 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_is_unavailable_and_retryable(
    sim: RunningSim, make_rest: Callable[..., MarketRest], status: int
) -> None:
    rest = make_rest(sim.rest_url)
    fault = {"type": "rest", "status": status, "path": "/fapi/v1/klines", "count": 1}
    sim.admin("POST", "/sim/faults", fault)
    with pytest.raises(RestUnavailable) as caught:
        rest.klines("BTCUSDT", "1m", limit=10)
    assert (caught.value.status, caught.value.code) == (status, -1000)
    assert caught.value.retryable
    assert rest.klines("BTCUSDT", "1m", limit=10)  # the fault answered once


def test_a_connection_error_is_unavailable(make_rest: Callable[..., MarketRest]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest = make_rest(f"http://127.0.0.1:{port}", timeout_s=2.0)
    with pytest.raises(RestUnavailable) as caught:
        rest.server_time_ms()
    assert caught.value.status is None
    assert rest.stats["errors"] == 1


def test_intervals_and_limits_binance_refuses_are_refused_before_sending(
    make_rest: Callable[..., MarketRest],
) -> None:
    rest = make_rest("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="not a kline interval"):
        rest.klines("BTCUSDT", "1s")
    with pytest.raises(ValueError, match="out of range"):
        rest.klines("BTCUSDT", "1m", limit=1501)
    assert rest.stats["requests"] == 0
