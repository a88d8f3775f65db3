"""Users' calls before background work, in one IP weight budget (issue 16, chaos finding 2).

The real clients against the simulator and a real Redis: MarketRest (the candle backfill) and
AccountClient with the SharedWeight execution uses. Background work (klines, reconciliation
reads) stops at budget - reserve; the users' cancels and lookups may use the reserve; orders
weigh 0 on the IP and stop only for a 418 ban, or for a 429 answered to an order itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from binance.account import AccountClient, SharedWeight
from binance.rest import MarketRest
from binance.signing import hmac_signer
from binance.user_stream import UserStream
from core.errors import RateLimited, RestError, Throttled
from core.keys import Keys
from core.redis_clients import async_client, sync_client
from simulator.trading import sign
from tests.e2e.conftest import RunningSim

MINUTE_MS = 60_000
BUDGET, RESERVE = 60, 20  # background work may use 40 of each minute


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = sync_client(redis_url)
    yield client
    client.close()


def used_weight(sim: RunningSim) -> int:
    """Return the weight the simulator charged this minute, over every client IP."""
    ips = sim.admin("GET", "/sim/state")["rest"]["ips"]
    return sum(ip["used"] for ip in ips.values())


def exchange_orders(sim: RunningSim, account: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the account's BTCUSDT orders as the exchange has them (asked as their owner)."""
    query = urlencode({"symbol": "BTCUSDT", "timestamp": sim.sim.clock.now_ms()})
    query += "&signature=" + sign(account["secretKey"], query)
    resp = sim.http.get(f"/fapi/v1/allOrders?{query}",
                        headers={"X-MBX-APIKEY": account["apiKey"]})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return list(resp.json())


def not_near_minute_end(sim: RunningSim, margin_ms: int = 5000) -> None:
    """Wait for the next minute if this one ends within ``margin_ms``: weights reset then."""
    left = MINUTE_MS - sim.sim.clock.now_ms() % MINUTE_MS
    if left < margin_ms:
        time.sleep(left / 1000 + 0.05)


def far_buy(sim: RunningSim, cid: str) -> dict[str, str]:
    """A resting limit buy 10 % under the last close (inside PERCENT_PRICE)."""
    rows = sim.http.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m",
                                                   "limit": 1}).json()  # fmt: skip
    price = (Decimal(rows[-1][4]) * Decimal("0.9")).quantize(Decimal("0.1"))
    return {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.010", "price": str(price), "newClientOrderId": cid}  # fmt: skip


MARKET_BUY = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010"}


class Parties:
    """One IP's processes: the backfill's MarketRest and one account's AccountClient."""

    def __init__(self, sim: RunningSim, redis_url: str, rds: redis.Redis, keys: Keys) -> None:
        self.sim = sim
        self.backfill = MarketRest(sim.rest_url, redis=rds, keys=keys, weight_budget=BUDGET,
                                   weight_reserve=RESERVE)  # fmt: skip
        self._redis_url, self._keys = redis_url, keys

    def client(self, account: dict[str, Any]) -> tuple[AccountClient, redis.asyncio.Redis]:
        r = async_client(self._redis_url)
        shared = SharedWeight(r, self._keys, BUDGET, RESERVE)
        signer = hmac_signer(account["apiKey"], account["secretKey"])
        return AccountClient(self.sim.rest_url, signer, weight=shared), r

    def spend(self) -> Throttled:
        """Backfill as much as the background share allows; return the refusal that ends it."""
        for _ in range(BUDGET):
            try:
                self.backfill.klines("BTCUSDT", "1m", limit=100)  # weight 2
            except Throttled as exc:
                return exc
        raise AssertionError("the backfill was never throttled")


@pytest.fixture
def parties(sim: RunningSim, redis_url: str, rds: redis.Redis, keys: Keys) -> Iterator[Parties]:
    p = Parties(sim, redis_url, rds, keys)
    yield p
    p.backfill.close()


def test_users_calls_use_the_reserve_background_work_leaves(
    sim: RunningSim, parties: Parties, rds: redis.Redis, keys: Keys
) -> None:
    account = sim.admin("POST", "/sim/accounts", {"balance": "100000"})
    not_near_minute_end(sim)

    async def run() -> None:
        client, r = parties.client(account)
        try:
            await client.sync_time()
            resting = await client.place_order(far_buy(sim, "rest-1"))
            assert resting["status"] == "NEW"

            throttled = parties.spend()  # the backfill has spent its share of the minute
            assert "20 kept for users' orders" in throttled.msg
            with pytest.raises(Throttled):  # ... and so has reconciliation's, the same share
                await client.account(background=True)

            # The user's lookup and cancel use the reserve; their orders weigh nothing.
            looked_up = await client.query_order("BTCUSDT", "rest-1")
            assert looked_up["status"] == "NEW"
            canceled = await client.cancel_order("BTCUSDT", "rest-1")
            assert canceled["status"] == "CANCELED"
            filled = await client.place_order(MARKET_BUY)
            assert filled["status"] == "FILLED"
            with pytest.raises(Throttled):  # background work still waits for the next minute
                parties.backfill.klines("BTCUSDT", "1m", limit=10)
        finally:
            await client.aclose()
            await r.aclose()

    asyncio.run(run())
    minute = sim.sim.clock.now_ms() // MINUTE_MS
    assert int(rds.hget(keys.rest_weight(), str(minute)) or 0) <= BUDGET
    assert used_weight(sim) <= BUDGET + 1  # ours and the test's one price read
    statuses = sorted(o["status"] for o in exchange_orders(sim, account))
    assert statuses == ["CANCELED", "FILLED"]


def test_a_429_stops_weighted_calls_not_orders_unless_an_order_gets_one(
    sim: RunningSim, parties: Parties
) -> None:
    account = sim.admin("POST", "/sim/accounts", {"balance": "100000"})

    async def run() -> None:
        client, r = parties.client(account)
        try:
            await client.sync_time()
            resting = await client.place_order(far_buy(sim, "rest-2"))
            assert resting["status"] == "NEW"
            sim.admin("POST", "/sim/faults", {"type": "rest", "status": 429, "count": 1,
                                              "path": "/fapi/v1/klines"})  # fmt: skip
            with pytest.raises(RateLimited):
                parties.backfill.klines("BTCUSDT", "1m", limit=10)

            # Every process's weighted calls wait out the backoff, unsent ...
            sent = used_weight(sim)
            with pytest.raises(RateLimited, match="backing off until"):
                await client.cancel_order("BTCUSDT", "rest-2")
            with pytest.raises(RateLimited, match="backing off until"):
                parties.backfill.klines("BTCUSDT", "1m", limit=10)
            assert used_weight(sim) == sent
            # ... but an order, 0 on the IP's weight, reaches the exchange.
            assert (await client.place_order(MARKET_BUY))["status"] == "FILLED"

            # Were orders refused as well, they would wait too, from the first one refused.
            sim.admin("POST", "/sim/faults", {"type": "rest", "status": 429, "count": 1,
                                              "path": "/fapi/v1/order"})  # fmt: skip
            with pytest.raises(RateLimited):
                await client.place_order(MARKET_BUY)
            with pytest.raises(RateLimited, match="backing off until"):
                await client.place_order(MARKET_BUY)
        finally:
            await client.aclose()
            await r.aclose()

    asyncio.run(run())
    statuses = sorted(o["status"] for o in exchange_orders(sim, account))
    assert statuses == ["FILLED", "NEW"]  # the refused orders never existed


def test_an_accounts_order_limit_holds_only_that_accounts_orders(
    sim: RunningSim, parties: Parties
) -> None:
    one = sim.admin("POST", "/sim/accounts", {"balance": "100000"})
    other = sim.admin("POST", "/sim/accounts", {"balance": "100000"})
    too_many = "Too many new orders; current limit is 300 orders per 10 SECOND."

    async def run() -> None:
        a, ra = parties.client(one)
        b, rb = parties.client(other)
        try:
            sim.admin("POST", "/sim/faults", {"type": "rest", "status": 429, "code": -1015,
                                              "msg": too_many, "count": 1,
                                              "path": "/fapi/v1/order"})  # fmt: skip
            with pytest.raises(RestError) as caught:
                await a.place_order(MARKET_BUY)
            assert (caught.value.status, caught.value.code) == (429, -1015)
            with pytest.raises(RestError) as held:  # held here until its Retry-After
                await a.place_order(MARKET_BUY)
            assert held.value.code == -1015
            assert 50_000 < (held.value.retry_after_ms or 0) <= 60_000
            # Not the IP's limit: other accounts and the backfill carry on.
            assert (await b.place_order(MARKET_BUY))["status"] == "FILLED"
            assert (await b.cancel_all("BTCUSDT"))["code"] == 200
            assert parties.backfill.klines("BTCUSDT", "1m", limit=10)
        finally:
            for client, r in ((a, ra), (b, rb)):
                await client.aclose()
                await r.aclose()

    asyncio.run(run())
    assert exchange_orders(sim, one) == []
    assert len(exchange_orders(sim, other)) == 1


def test_a_user_stream_waits_out_a_429_backoff_and_says_so_once(
    sim: RunningSim, parties: Parties, caplog: pytest.LogCaptureFixture
) -> None:
    """Chaos finding: user streams retried a new listenKey every 1-30 s through a back-off."""
    account = sim.admin("POST", "/sim/accounts", {"balance": "100000"})
    backoff_s = 5
    sim.admin("POST", "/sim/faults", {"type": "rest", "status": 429, "count": 1, "retry_after":
                                      backoff_s, "path": "/fapi/v1/klines"})  # fmt: skip
    with pytest.raises(RateLimited):
        parties.backfill.klines("BTCUSDT", "1m", limit=10)
    refused_at = time.monotonic()
    sent = used_weight(sim)
    resynced: list[float] = []

    async def resync() -> None:
        resynced.append(time.monotonic())

    async def nothing(event: dict[str, Any]) -> None:
        return None

    async def run() -> UserStream:
        client, r = parties.client(account)
        stream = UserStream(client, f"{sim.ws_url}/private", on_event=nothing, on_resync=resync,
                            label="acct-1")  # fmt: skip
        task = asyncio.create_task(stream.run())
        try:
            await asyncio.sleep(backoff_s - 1.5)
            assert used_weight(sim) == sent  # no listenKey was asked for during the back-off
            assert not resynced
            for _ in range(100):
                if stream.connected:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()
            await r.aclose()
        return stream

    with caplog.at_level(logging.WARNING, logger="binance.user_stream"):
        stream = asyncio.run(run())
    assert stream.stats["connects"] == 1, stream.stats
    assert stream.stats["drops"] == 0, stream.stats
    assert stream.stats["key_deferred"] >= 1
    assert len(resynced) == 1
    assert backoff_s - 0.5 < resynced[0] - refused_at < backoff_s + 3  # at the back-off's end
    said = [r.getMessage() for r in caplog.records if r.name == "binance.user_stream"]
    assert len(said) == 1, said
    assert "waits for the IP's REST weight" in said[0]
