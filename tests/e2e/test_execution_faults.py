"""Orders stay right when the exchange is not: retries, lost answers, a killed process, a lost
user stream. Each test counts the orders on the exchange itself (the simulator)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from binance.rest import MarketRest
from core.errors import RateLimited, Throttled
from tests.e2e.conftest import RunningSim
from tests.e2e.tradestack import SYMBOLS, Trader, TradeStack, rid, start_trade_stack


@pytest.fixture
def stack_factory(
    sim_factory: Callable[..., RunningSim], redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., TradeStack]]:
    started: list[TradeStack] = []

    def start(**env: str) -> TradeStack:
        sim = sim_factory(rate=50.0, symbols=SYMBOLS)
        stack = start_trade_stack(sim, redis_url, namespace, tmp_path, **env)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def linked_trader(stack: TradeStack) -> tuple[Trader, dict[str, Any]]:
    trader = Trader(stack)
    exchange = stack.exchange_account()
    resp = trader.link_hmac(exchange)
    assert resp.status_code == 200, resp.text
    return trader, exchange


def exchange_orders(stack: TradeStack, exchange: dict[str, Any]) -> list[dict[str, Any]]:
    return list(stack.signed(exchange, "GET", "/fapi/v1/allOrders", symbol="BTCUSDT"))


def market_buy(trader: Trader, request_id: str | None = None) -> Any:
    return trader.call("POST", "/api/orders", {
        "request_id": request_id or rid(), "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
        "quantity": "0.010"})  # fmt: skip


def far_limit(trader: Trader) -> dict[str, Any]:
    """Place a resting limit buy 10 % under the last close (inside PERCENT_PRICE)."""
    rows = trader.stack.sim.http.get("/fapi/v1/klines", params={
        "symbol": "BTCUSDT", "interval": "1m", "limit": 1}).json()  # fmt: skip
    price = (Decimal(rows[-1][4]) * Decimal("0.9")).quantize(Decimal("0.1"))
    resp = trader.post("/api/orders", symbol="BTCUSDT", side="BUY", type="LIMIT",
                       quantity="0.010", price=str(price))  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json()["order"]["status"] == "NEW", resp.text
    return dict(resp.json()["order"])


def test_one_request_id_sent_five_times_concurrently_places_one_order(
    stack_factory: Callable[..., TradeStack],
) -> None:
    stack = stack_factory()
    trader, exchange = linked_trader(stack)
    request_id = rid()
    answers: list[Any] = []
    start = threading.Barrier(5)

    def send() -> None:
        start.wait()
        answers.append(market_buy(trader, request_id))

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    cids = {a.json()["order"]["client_order_id"] for a in answers}
    assert len(cids) == 1, [a.text for a in answers]
    assert sum(1 for a in answers if a.json().get("duplicate")) == 4
    # ... and later retries of it too, over REST or the socket.
    assert market_buy(trader, request_id).json()["duplicate"] is True
    ack = trader.trade({"action": "place", "request_id": request_id, "symbol": "BTCUSDT",
                        "side": "BUY", "type": "MARKET", "quantity": "0.010"})  # fmt: skip
    assert ack["duplicate"] is True
    assert ack["order"]["client_order_id"] in cids
    stack.wait("the fill", lambda: trader.order(cids.pop() if False else next(iter(cids))))
    orders = exchange_orders(stack, exchange)
    assert len(orders) == 1, orders
    assert orders[0]["status"] == "FILLED", orders


@pytest.mark.parametrize("mode", ["503", "408", "timeout"])
def test_an_order_whose_answer_is_lost_is_resolved_never_resent(
    stack_factory: Callable[..., TradeStack], mode: str
) -> None:
    stack = stack_factory()
    trader, exchange = linked_trader(stack)
    stack.fault(type="order_unknown", mode=mode, ms=4000)
    resp = market_buy(trader)
    assert resp.status_code in (200, 202), resp.text  # unknown at first, or already resolved
    cid = resp.json()["order"]["client_order_id"]
    final = stack.wait("resolution", lambda: (trader.order(cid) or {}).get("status") == "FILLED")
    assert final
    orders = exchange_orders(stack, exchange)
    assert len(orders) == 1, orders
    assert orders[0]["clientOrderId"] == cid, orders
    assert trader.order(cid)["executed_qty"] == "0.01"  # type: ignore[index]


def test_an_order_unknown_to_the_exchange_past_its_recv_window_is_rejected_not_resent(
    stack_factory: Callable[..., TradeStack],
) -> None:
    stack = stack_factory(TP_EXEC_RECV_WINDOW_MS="500")
    trader, exchange = linked_trader(stack)
    # The answer is lost and lookups say "does not exist" for 2 s: a read lag, not an absence.
    stack.fault(type="lookup_lag", ms=2000)
    stack.fault(type="order_unknown", mode="503")
    cid = market_buy(trader).json()["order"]["client_order_id"]
    stack.wait("resolution", lambda: (trader.order(cid) or {}).get("status") == "FILLED")
    assert len(exchange_orders(stack, exchange)) == 1


def test_execution_killed_between_sending_and_the_answer_places_exactly_one_order(
    stack_factory: Callable[..., TradeStack],
) -> None:
    stack = stack_factory(TP_EXEC_TIMEOUT_MS="20000")
    trader, exchange = linked_trader(stack)
    stack.fault(type="order_unknown", mode="timeout", ms=15000)
    # ... and its user stream down, so that nothing tells the process before it dies.
    stack.fault(type="refuse", seconds=15)
    stack.fault(type="drop", path="/private")
    result: list[Any] = []

    def send() -> None:
        try:
            result.append(market_buy(trader))
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=send)
    thread.start()

    def sending() -> bool:
        live = stack.redis.hvals(stack.keys.orders_live(trader.address))
        return any(orjson.loads(v)["status"] == "SENDING" for v in live)

    stack.wait("the order in flight", lambda: sending() or result)
    assert not result, result
    assert stack.execution is not None
    stack.execution.kill9()  # the exchange has it; we never saw the answer
    stack.start_execution()
    thread.join(30)
    cid = result[0].json()["order"]["client_order_id"]
    stack.wait("reconciled", lambda: (trader.order(cid) or {}).get("status") == "FILLED")
    orders = exchange_orders(stack, exchange)
    assert [o["clientOrderId"] for o in orders] == [cid]

    def resolved_by_lookup() -> bool:
        raw = stack.redis.hget(stack.keys.execution_health(), "exec-test")
        stats = orjson.loads(raw or b"{}").get("accounts", {}).get(trader.address.lower(), {})
        return bool(stats.get("resolved", 0) >= 1 or stats.get("reconciles", 0) >= 1)

    stack.wait("the restarted process's own lookup", resolved_by_lookup)
    # Having found its own pending command at start, the process goes on to new ones (it once
    # kept re-reading its empty pending list, and every later order stayed PENDING).
    after = market_buy(trader)
    assert after.status_code == 200, after.text
    assert after.json()["order"]["status"] == "FILLED"
    assert len(exchange_orders(stack, exchange)) == 2


def test_a_command_read_again_during_a_429_back_off_is_resolved_not_left_pending(
    stack_factory: Callable[..., TradeStack],
) -> None:
    """Chaos finding: after a restart, a queued place command is checked on the exchange before
    sending; a 429 back-off refused that lookup, the command failed and its order stayed PENDING
    for good (nothing resolves a PENDING order)."""
    stack = stack_factory(TP_EXEC_TIMEOUT_MS="20000")
    trader, exchange = linked_trader(stack)
    stack.fault(type="order_unknown", mode="timeout", ms=15000)  # the first order hangs ...
    stack.fault(type="refuse", seconds=15)  # (no user stream to tell its fill meanwhile)
    stack.fault(type="drop", path="/private")
    results: list[Any] = []

    def send() -> None:
        try:
            results.append(market_buy(trader))
        except Exception as exc:
            results.append(exc)

    def live() -> list[dict[str, Any]]:
        return [orjson.loads(v) for v in stack.redis.hvals(stack.keys.orders_live(trader.address))]

    first = threading.Thread(target=send)
    first.start()
    stack.wait("the first order in flight", lambda: any(o["status"] == "SENDING" for o in live()))
    second = threading.Thread(target=send)  # ... so the second waits in the account's queue
    second.start()
    stack.wait("the second order queued", lambda: any(o["status"] == "PENDING" for o in live()))
    time.sleep(1.0)  # delivered to the execution process, not acked
    pending = next(o["client_order_id"] for o in live() if o["status"] == "PENDING")
    # A 429 (to the backfill): every process holds its weighted calls for 20 s.
    stack.fault(type="rest", status=429, path="/fapi/v1/klines", count=1, retry_after=20)
    backfill = MarketRest(stack.sim.rest_url, redis=stack.redis, keys=stack.keys)
    try:
        with pytest.raises(RateLimited):
            backfill.klines("BTCUSDT", "1m", limit=10)
    finally:
        backfill.close()
    assert stack.execution is not None
    stack.execution.kill9()
    stack.start_execution()  # reads both commands again while the back-off lasts
    first.join(30)
    second.join(30)
    final = stack.wait("the second order resolved", lambda: (
        o if (o := trader.order(pending)) and o["status"] not in ("PENDING", "UNKNOWN") else None
    ), timeout_s=90)  # fmt: skip
    assert final["status"] == "REJECTED", final
    assert "never reached the exchange" in final["error"], final
    placed = [o["clientOrderId"] for o in exchange_orders(stack, exchange)]
    assert pending not in placed
    assert len(placed) == 1  # the first order, resolved by lookup once the back-off ended


def test_execution_restarted_during_a_429_back_off_hears_its_fills_at_once(
    stack_factory: Callable[..., TradeStack],
) -> None:
    """Chaos finding: restarted during a chain of 429 back-offs, execution could not ask for a
    listenKey (REST), so user streams stayed down and fills were told minutes late. The key is
    now kept, encrypted, and a restarted process reconnects with it without REST."""
    stack = stack_factory()
    trader, _ = linked_trader(stack)
    first = market_buy(trader)
    assert first.json()["order"]["status"] == "FILLED", first.text

    def fills() -> int:
        return len(trader.call("GET", "/api/fills").json()["fills"])

    before = stack.wait("the first order's fills", fills)
    token = stack.redis.hget(stack.keys.account_state(trader.address), "listen_key")
    assert token is not None
    assert token.startswith(b"v1."), token  # a vault ciphertext, not the key
    # A 429: every process holds its weighted calls (a new listenKey among them) for 40 s.
    stack.fault(type="rest", status=429, path="/fapi/v1/klines", count=1, retry_after=40)
    backfill = MarketRest(stack.sim.rest_url, redis=stack.redis, keys=stack.keys)
    try:
        with pytest.raises(RateLimited):
            backfill.klines("BTCUSDT", "1m", limit=10)
    finally:
        backfill.close()
    assert stack.execution is not None
    stack.execution.kill9()
    stack.start_execution()
    # Orders weigh nothing on the IP's limit: this one is placed during the back-off, and its
    # fill comes back on the user stream, reconnected with the kept key.
    second = market_buy(trader)
    assert second.status_code == 200, second.text
    assert second.json()["order"]["status"] == "FILLED", second.text
    stack.wait("the second order's fills, during the back-off", lambda: fills() > before,
               timeout_s=20)  # fmt: skip


@pytest.mark.owned_redis
def test_execution_waits_out_a_redis_restart_and_trades_on(
    stack_factory: Callable[..., TradeStack], redis_control: Any
) -> None:
    stack = stack_factory()
    trader, exchange = linked_trader(stack)
    assert market_buy(trader).status_code == 200
    redis_control.restart(down_s=2)  # the linked account and the orders are on disk
    assert stack.execution is not None

    request = rid()  # one intent, however often it is sent while Redis comes back

    def taken() -> bool:
        try:
            return market_buy(trader, request).status_code in (200, 202)
        except Exception:  # the web process is reconnecting too
            return False

    stack.wait("the web takes a command after Redis came back", taken, timeout_s=60)
    stack.wait("the order on the exchange", lambda: len(exchange_orders(stack, exchange)) == 2,
               timeout_s=60, service=stack.execution)  # fmt: skip
    assert stack.execution.alive(), stack.execution.tail()
    time.sleep(1)
    assert len(exchange_orders(stack, exchange)) == 2  # and only one for the retried request


def test_no_fill_is_missed_when_the_user_stream_drops_or_its_key_expires(
    stack_factory: Callable[..., TradeStack],
) -> None:
    # Only the stream and its resyncs (no periodic reconciliation); keepalives every second and a
    # make-before-break replacement of the connection every 3 s go on throughout.
    stack = stack_factory(
        TP_EXEC_RECONCILE_S="600", TP_EXEC_KEEPALIVE_S="1", TP_EXEC_STREAM_ROTATE_S="3"
    )
    trader, exchange = linked_trader(stack)

    def stat(name: str) -> int:
        raw = stack.redis.hget(stack.keys.execution_health(), "exec-test")
        stats = orjson.loads(raw or b"{}").get("accounts", {}).get(trader.address.lower(), {})
        return int(stats.get(name, 0))

    def connects() -> int:
        return stat("stream_connects") - stat("stream_replaced")  # new keys, not rotations

    def buy(n: int) -> None:
        for _ in range(n):
            assert market_buy(trader).status_code in (200, 202)

    buy(3)
    stack.fault(type="drop", path="/private")
    buy(3)  # while the stream is down: fills only REST can tell
    stack.wait("the stream back after the drop", lambda: connects() >= 2)
    stack.fault(type="listenkey_expire", apiKey=exchange["apiKey"])
    stack.fault(type="listenkey_expire", apiKey=exchange["apiKey"])  # twice: harmless
    buy(3)
    stack.wait("a new key after the expiry", lambda: connects() >= 3)
    stack.wait("a rotation, then more trades across it", lambda: stat("stream_replaced") >= 1)
    buy(4)
    assert stat("stream_keepalives") >= 1
    truth = stack.exchange_trades(exchange["apiKey"])
    assert len(truth) >= 13

    def ours() -> set[int]:
        return {f["trade_id"] for f in trader.call("GET", "/api/fills?limit=500").json()["fills"]}

    stack.wait("every fill", lambda: ours() >= {int(t["id"]) for t in truth}, timeout_s=60)
    fills = trader.call("GET", "/api/fills?limit=500").json()["fills"]
    assert len(fills) == len(truth)  # none twice
    assert sum(Decimal(f["qty"]) for f in fills) == sum(Decimal(t["qty"]) for t in truth)


def test_users_see_and_touch_only_their_own_orders(
    stack_factory: Callable[..., TradeStack],
) -> None:
    stack = stack_factory()
    alice, _ = linked_trader(stack)
    bob, _ = linked_trader(stack)
    resp = alice.post("/api/orders", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    cid = resp.json()["order"]["client_order_id"]
    price = resp.json()["order"]["avg_price"]
    resting = alice.post(
        "/api/orders",
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        quantity="0.010",
        price=str(round(Decimal(price) * Decimal("0.9"), 1)),
    )
    assert resting.status_code == 200, resting.text
    resting_cid = resting.json()["order"]["client_order_id"]
    stack.wait("alice's events", lambda: alice.order_events())
    time.sleep(0.5)
    assert bob.events == [] or all(e["kind"] != "order" for e in bob.events)
    assert bob.call("GET", "/api/orders/open").json()["orders"] == []
    assert bob.call("GET", "/api/fills").json()["fills"] == []
    steal = bob.post("/api/orders/cancel", symbol="BTCUSDT", client_order_id=resting_cid)
    assert steal.status_code == 404
    assert steal.json()["error"] == "unknown_order"
    assert alice.order(resting_cid)["status"] == "NEW"  # type: ignore[index]
    assert cid not in repr(bob.call("GET", "/api/orders/history").json())
    assert bob.call("GET", "/api/audit").json()["entries"][0]["address"] == bob.address.lower()


def test_tokens_accounts_and_bad_commands_are_refused_before_the_exchange(
    stack_factory: Callable[..., TradeStack],
) -> None:
    stack = stack_factory()
    trader, exchange = linked_trader(stack)
    forged = trader.http.post("/api/orders", headers={"Authorization": "Bearer x.y.z"},
                              json={"request_id": rid()})  # fmt: skip
    assert forged.status_code == 401
    # A well-signed token that expired, for the same user and session: refused too.
    from web.tokens import Keyring

    claims = Keyring([("k2", "b" * 40)], issuer=stack.env["TP_WEB_ORIGIN"]).verify(
        trader.token, audience="web")  # fmt: skip
    expired, _ = Keyring([("k2", "b" * 40)], issuer=stack.env["TP_WEB_ORIGIN"]).issue(
        address=trader.address, audience="web", family=claims.family, ttl_s=60,
        now_s=int(time.time()) - 3600)  # fmt: skip
    late = trader.http.post("/api/orders", headers={"Authorization": f"Bearer {expired}"},
                            json={"request_id": rid(), "symbol": "BTCUSDT", "side": "BUY",
                                  "type": "MARKET", "quantity": "0.010"})  # fmt: skip
    assert late.status_code == 401
    assert late.json()["error"] == "token_expired"
    anonymous = Trader.__new__(Trader)  # noqa: F841  # (a socket without a token: below)
    import socketio

    sio = socketio.Client(reconnection=False)
    sio.connect(stack.base_url, transports=["websocket"])
    assert sio.call("trade", {"action": "place"}, timeout=10)["error"] == "unauthorized"
    sio.disconnect()
    unlinked = Trader(stack)
    no = unlinked.post("/api/orders", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1")
    assert no.status_code == 409
    assert "link a Binance account" in no.json()["message"]

    bad: list[tuple[dict[str, Any], str]] = [
        ({"symbol": "NOPEUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"},
         "unknown_symbol"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0"}, "bad_quantity"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "-1"}, "bad_quantity"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "NaN"}, "bad_quantity"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1e30"},
         "bad_quantity"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": 0.01}, "bad_quantity"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "99999"}, "max_qty"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0101"},
         "step_size"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010",
          "price": "30000.001"}, "tick_size"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.001",
          "price": "1000.0"}, "min_notional"),
        ({"symbol": "BTCUSDT", "side": "HOLD", "type": "MARKET", "quantity": "1"}, "bad_side"),
        ({"symbol": ["BTCUSDT"], "side": "BUY", "type": "MARKET", "quantity": "1"}, "bad_symbol"),
    ]  # fmt: skip
    for body, code in bad:
        resp = trader.call("POST", "/api/orders", {"request_id": rid(), **body})
        assert resp.status_code in (400, 404), (body, resp.text)
        assert resp.json()["error"] == code, (body, resp.text)
        assert resp.json()["message"]
    for body in ([1, 2], "text", None):
        resp = trader.call("POST", "/api/orders", body)
        assert resp.status_code == 400
        assert resp.json()["error"] in ("bad_request", "bad_request_id")
    assert exchange_orders(stack, exchange) == []  # nothing reached the exchange


def test_a_user_over_their_command_rate_is_refused_with_the_limit_named(
    stack_factory: Callable[..., TradeStack],
) -> None:
    stack = stack_factory(TP_TRADE_PER_MINUTE="3")
    trader, exchange = linked_trader(stack)
    answers = [trader.post("/api/leverage", symbol="BTCUSDT", leverage=5 + i) for i in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200], [a.text for a in answers]
    assert answers[3].status_code == 429
    assert answers[3].json()["error"] == "rate_limited"
    assert "3 trade commands per minute" in answers[3].json()["message"]
    # the refused command never reached the exchange: the leverage is the third one's
    rows = stack.signed(exchange, "GET", "/fapi/v2/positionRisk")
    assert next(r for r in rows if r["symbol"] == "BTCUSDT")["leverage"] == "7"


def test_an_order_that_waited_too_long_for_execution_is_not_sent(
    stack_factory: Callable[..., TradeStack],
) -> None:
    stack = stack_factory(TP_TRADE_COMMAND_TTL_MS="2000", TP_TRADE_REPLY_TIMEOUT_MS="500")
    trader, exchange = linked_trader(stack)
    assert stack.execution is not None
    stack.execution.stop()  # a deploy, an outage
    late = market_buy(trader)
    assert late.status_code == 202, late.text
    cid = late.json()["order"]["client_order_id"]
    time.sleep(2.5)
    stack.start_execution()
    final = stack.wait("the expiry", lambda: (trader.order(cid) or {}).get("status") == "REJECTED")
    assert final
    assert "expired" in trader.order(cid)["error"]  # type: ignore[index]
    assert exchange_orders(stack, exchange) == []


def test_users_orders_and_cancels_go_through_while_background_work_waits(
    stack_factory: Callable[..., TradeStack],
) -> None:
    """Issue 16 (chaos finding 2): backfill and reconciliation spent the IP's weight, then a 429
    stopped every process, and users' orders were refused "backing off until ..."."""
    stack = stack_factory(TP_REST_WEIGHT_BUDGET="200")  # background work may use 150 of it
    trader, exchange = linked_trader(stack)
    resting = far_limit(trader)
    # The worker's backfill client, on the same IP and Redis, with the same settings.
    backfill = MarketRest(stack.sim.rest_url, redis=stack.redis, keys=stack.keys,
                          weight_budget=200)  # fmt: skip
    try:
        left_ms = 60_000 - time.time_ns() // 1_000_000 % 60_000
        if left_ms < 10_000:  # the budget is per minute: spend it in the minute it is checked
            time.sleep(left_ms / 1000 + 0.05)
        for _ in range(100):  # it fetches what background work may, then waits
            try:
                backfill.klines("BTCUSDT", "1m", limit=100)
            except Throttled:
                break
        else:
            raise AssertionError("the backfill was never throttled")

        # The user's cancel takes the weight background work left; orders weigh nothing.
        ack = trader.trade({"action": "cancel", "request_id": rid(), "symbol": "BTCUSDT",
                            "client_order_id": resting["client_order_id"]})  # fmt: skip
        assert ack["ok"] is True, ack
        assert ack["order"]["status"] == "CANCELED", ack

        # The exchange answers 429 (to a cancel-all): every process holds its weighted calls ...
        stack.fault(type="rest", status=429, path="/fapi/v1/allOpenOrders", count=1)
        refused = trader.post("/api/orders/cancel-all", symbol="BTCUSDT").json()
        assert refused["ok"] is False, refused
        with pytest.raises(RateLimited):
            backfill.klines("BTCUSDT", "1m", limit=10)
        # ... but not orders: they weigh 0 on the IP's limit, which the 429 is about.
        resp = market_buy(trader)
        assert resp.status_code == 200, resp.text
        assert resp.json()["order"]["status"] == "FILLED", resp.text
    finally:
        backfill.close()
    statuses = sorted(o["status"] for o in exchange_orders(stack, exchange))
    assert statuses == ["CANCELED", "FILLED"]
