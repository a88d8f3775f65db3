"""Trading end to end: link a key, place, fill, cancel, close, leverage, positions, balances.

Real processes (the ``execution`` process and a gunicorn ``web`` process), the suite's Redis, the
simulator as Binance, python-socketio clients signed in with SIWE (tests/e2e/tradestack.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def stack(stack_factory: Callable[..., TradeStack]) -> TradeStack:
    return stack_factory()


def position(trader: Trader, symbol: str) -> Decimal:
    positions = trader.call("GET", "/api/account").json()["positions"] or {}
    return Decimal(positions.get(symbol, {}).get("amount", "0"))


def far_limit(trader: Trader, side: str = "BUY", **extra: Any) -> dict[str, Any]:
    """A resting limit order well inside PERCENT_PRICE but far from the touch."""
    resp = trader.post("/api/orders", symbol="BTCUSDT", side=side, type="LIMIT",
                       quantity="0.010", price=_price(trader, 0.9 if side == "BUY" else 1.1),
                       **extra)  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["ok"] is True, body
    assert body["order"]["status"] == "NEW", body
    return dict(body["order"])


def _price(trader: Trader, factor: float) -> str:
    sim = trader.stack.sim
    rows = sim.http.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m",
                                                   "limit": 1}).json()  # fmt: skip
    mid = Decimal(rows[-1][4])  # the last close
    return str((mid * Decimal(str(factor))).quantize(Decimal("0.1")))


def test_link_place_fill_cancel_close_leverage_end_to_end(stack: TradeStack) -> None:
    trader = Trader(stack)
    exchange = stack.exchange_account()

    assert trader.call("GET", "/api/account").json()["linked"] is False
    linked = trader.link_hmac(exchange)
    assert linked.status_code == 200, linked.text
    assert linked.json()["ok"] is True
    assert linked.json()["result"]["fingerprint"]
    account = trader.call("GET", "/api/account").json()
    assert account["linked"] is True
    assert account["kind"] == "hmac"

    # A market buy fills; its fill, order events and the position reach the user.
    resp = trader.post("/api/orders", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    assert resp.status_code == 200, resp.text
    order = resp.json()["order"]
    assert order["status"] == "FILLED"
    assert order["executed_qty"] == "0.01"

    def filled() -> Decimal:
        fills = trader.call("GET", "/api/fills").json()["fills"]
        mine = [f for f in fills if f["client_order_id"] == order["client_order_id"]]
        return sum((Decimal(f["qty"]) for f in mine), Decimal(0))

    stack.wait("the order's fills", lambda: filled() == Decimal("0.01"))
    stack.wait("the position", lambda: position(trader, "BTCUSDT") == Decimal("0.01"))
    stack.wait("order events on the socket", lambda: any(
        e["client_order_id"] == order["client_order_id"] and e["status"] == "FILLED"
        for e in trader.order_events()))  # fmt: skip
    stack.wait(
        "the fee in the wallet",
        lambda: (
            Decimal(trader.call("GET", "/api/account").json()["balances"]["USDT"]["wallet"])
            < 100000
        ),
    )

    # A resting limit, then cancel it (over Socket.IO this time).
    resting = far_limit(trader)
    ack = trader.trade({"action": "cancel", "request_id": rid(), "symbol": "BTCUSDT",
                        "client_order_id": resting["client_order_id"]})  # fmt: skip
    assert ack["ok"] is True, ack
    assert ack["order"]["status"] == "CANCELED", ack

    # Two resting limits, cancel all of the symbol: both end CANCELED, from the exchange's events.
    a, b = far_limit(trader), far_limit(trader)
    assert trader.post("/api/orders/cancel-all", symbol="BTCUSDT").json()["ok"] is True
    stack.wait(
        "both canceled",
        lambda: all(
            (trader.order(o["client_order_id"]) or {}).get("status") == "CANCELED" for o in (a, b)
        ),
    )
    assert trader.call("GET", "/api/orders/open").json()["orders"] == []

    # Time in force: a post-only order that would take is refused in words; IOC takes what it can.
    gtx = trader.post("/api/orders", symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010",
                      price=_price(trader, 1.05), time_in_force="GTX")  # fmt: skip
    assert gtx.status_code == 400, gtx.text
    assert "post-only" in gtx.json()["message"]
    ioc = trader.post("/api/orders", symbol="BTCUSDT", side="SELL", type="LIMIT",
                      quantity="0.010", price=_price(trader, 0.95), time_in_force="IOC",
                      reduce_only=True)  # fmt: skip
    assert ioc.status_code == 200, ioc.text
    assert ioc.json()["order"]["status"] in ("FILLED", "EXPIRED")
    stack.wait("the position after the IOC", lambda: position(trader, "BTCUSDT") == Decimal(
        "0.01") - Decimal(ioc.json()["order"]["executed_qty"]))  # fmt: skip
    if position(trader, "BTCUSDT") == 0:  # the IOC closed it: open it again for what follows
        again = trader.post("/api/orders", symbol="BTCUSDT", side="BUY", type="MARKET",
                            quantity="0.010")  # fmt: skip
        assert again.json()["order"]["status"] == "FILLED"
        stack.wait("the position", lambda: position(trader, "BTCUSDT") == Decimal("0.01"))

    # Leverage and margin type: the exchange's answer, or its refusal in clear words.
    lev = trader.post("/api/leverage", symbol="BTCUSDT", leverage=7)
    assert lev.status_code == 200, lev.text
    assert lev.json()["result"]["leverage"] == 7, lev.text
    margin = trader.post("/api/margin-type", symbol="BTCUSDT", margin_type="ISOLATED")
    assert margin.status_code == 400, margin.text
    assert "position" in margin.json()["message"]  # -4048: not while a position is open
    stack.wait("leverage in the position", lambda: (trader.call("GET", "/api/account").json()[
        "positions"] or {}).get("BTCUSDT", {}).get("leverage") == "7")  # fmt: skip

    # Close the position: a reduce-only market order for exactly its size.
    closed = trader.post("/api/positions/close", symbol="BTCUSDT")
    assert closed.status_code == 200, closed.text
    closing = closed.json()["order"]
    assert closing["side"] == "SELL"
    assert closing["reduce_only"]
    assert closing["status"] == "FILLED"
    stack.wait("a flat position", lambda: position(trader, "BTCUSDT") == 0)
    again = trader.post("/api/positions/close", symbol="BTCUSDT")
    assert again.status_code == 400
    assert "no open position" in again.json()["message"]

    # History and the audit trail are the user's own.
    history = trader.call("GET", "/api/orders/history").json()["orders"]
    assert {o["status"] for o in history} >= {"FILLED", "CANCELED", "REJECTED"}
    audit = trader.call("GET", "/api/audit").json()["entries"]
    assert {e["action"] for e in audit} >= {"link", "place", "cancel", "close", "leverage"}

    # An order placed outside the system (on the exchange's own site) is shown, marked external.
    outside = stack.signed(exchange, "POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY",
                           type="LIMIT", timeInForce="GTC", quantity="0.010",
                           price=_price(trader, 0.9), newClientOrderId="web_abc123")  # fmt: skip
    assert outside["status"] == "NEW"
    stack.wait("the external order", lambda: any(
        o["client_order_id"] == "web_abc123" and o["external"]
        for o in trader.call("GET", "/api/orders/open").json()["orders"]))  # fmt: skip
    ext = trader.post("/api/orders/cancel", client_order_id="web_abc123")
    assert ext.status_code == 200, ext.text  # it can be cancelled from here too
    assert ext.json()["order"]["status"] == "CANCELED"

    # Unlink deletes the key: trading is refused with a clear message.
    assert trader.call("DELETE", "/api/account", {"request_id": rid()}).json()["ok"] is True
    refused = trader.post("/api/orders", symbol="BTCUSDT", side="BUY", type="MARKET",
                          quantity="0.010")  # fmt: skip
    assert refused.status_code == 409
    assert refused.json()["error"] == "no_account"
    assert stack.redis.exists(stack.keys.account(trader.address)) == 0
    trader.close()


def _redis_dump(stack: TradeStack) -> bytes:
    """Every value of the deployment's Redis keys, concatenated."""
    r, out = stack.redis, []
    for key in r.scan_iter(match=stack.keys.all_keys_pattern(), count=1000):
        kind = r.type(key)
        if kind == b"string":
            out.append(r.get(key) or b"")
        elif kind == b"hash":
            out.extend(k + b"=" + v for k, v in r.hgetall(key).items())
        elif kind == b"list":
            out.extend(r.lrange(key, 0, -1))
        elif kind == b"zset":
            out.extend(r.zrange(key, 0, -1))
        elif kind == b"stream":
            out.extend(repr(e).encode() for e in r.xrange(key))
        out.append(key)
    return b"\n".join(out)


def _assert_nowhere(stack: TradeStack, secrets: dict[str, bytes]) -> None:
    """No secret in our processes' logs (DEBUG), the responses, socket messages or Redis."""
    places = {
        "logs": stack.logs().encode(),
        "responses and socket messages": "\n".join(stack.seen).encode(),
        "redis": _redis_dump(stack),
    }
    for where, text in places.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name} found in {where}"


def test_ed25519_key_generated_by_the_server_trades_and_never_leaves_it(
    stack: TradeStack,
) -> None:
    trader = Trader(stack)
    pair = trader.call("POST", "/api/account/keypair").json()
    assert pair["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert trader.call("GET", "/api/account").json()["status"] == "pending"

    # A key id that belongs to another key pair: the exchange refuses, nothing is linked, and the
    # user may confirm again with the right one.
    stranger = stack.exchange_account()
    wrong = trader.post("/api/account/link", kind="ed25519", api_key=stranger["apiKey"])
    assert wrong.status_code == 400, wrong.text
    assert "refused the key" in wrong.json()["message"], wrong.text
    assert trader.call("GET", "/api/account").json()["status"] == "pending"

    exchange = stack.exchange_account(publicKey=pair["public_key"])  # registered on "Binance"
    assert "secretKey" not in exchange
    linked = trader.post("/api/account/link", kind="ed25519", api_key=exchange["apiKey"])
    assert linked.status_code == 200, linked.text
    assert linked.json()["ok"] is True, linked.text
    assert trader.call("GET", "/api/account").json()["kind"] == "ed25519"
    placed = trader.post("/api/orders", symbol="ETHUSDT", side="BUY", type="MARKET",
                         quantity="0.100")  # fmt: skip
    assert placed.status_code == 200, placed.text
    assert placed.json()["order"]["status"] == "FILLED", placed.text
    stack.wait("the fill", lambda: trader.call("GET", "/api/fills").json()["fills"])

    # The private key exists only encrypted: decrypt it here (the test holds the KEK) to look
    # for it everywhere else.
    import base64

    import orjson

    from core.vault import Vault
    from tests.e2e.tradestack import KEK

    vault = Vault.from_setting(stack.env["TP_NAMESPACE"], KEK)
    token = stack.redis.hget(stack.keys.account(trader.address), "secret")
    assert token is not None
    creds = orjson.loads(vault.decrypt(token.decode(), address=trader.address, purpose="secret"))
    raw = base64.b64decode(creds["private_key"])
    _assert_nowhere(stack, {
        "private key (raw)": raw, "private key (hex)": raw.hex().encode(),
        "private key (base64)": creds["private_key"].encode(),
        "api key": exchange["apiKey"].encode(), "access token": trader.token.encode(),
    })  # fmt: skip
    trader.close()


def test_an_hmac_key_that_fails_is_not_stored_and_secrets_leak_nowhere(stack: TradeStack) -> None:
    trader = Trader(stack)
    exchange = stack.exchange_account()
    bad = trader.post("/api/account/link", kind="hmac", api_key=exchange["apiKey"],
                      secret="f" * 64)  # fmt: skip
    assert bad.status_code == 400, bad.text
    assert "refused the key" in bad.json()["message"], bad.text
    assert stack.redis.exists(stack.keys.account(trader.address)) == 0
    no_futures = stack.exchange_account(canTrade=False)
    refused = trader.link_hmac(no_futures)
    assert refused.status_code == 400
    assert "futures trading" in refused.json()["message"]
    assert trader.link_hmac(exchange).json()["ok"] is True
    trader.post("/api/orders", symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010")
    _assert_nowhere(stack, {
        "secret": exchange["secretKey"].encode(), "api key": exchange["apiKey"].encode(),
        "refused secret": no_futures["secretKey"].encode(), "access token": trader.token.encode(),
    })  # fmt: skip
    trader.close()


def test_a_revoked_login_cannot_trade_over_its_still_open_socket(stack: TradeStack) -> None:
    import jwt

    trader = Trader(stack)
    family = jwt.decode(trader.token, options={"verify_signature": False})["fam"]
    command = {"action": "place", "request_id": rid(), "symbol": "BTCUSDT", "side": "BUY",
               "type": "MARKET", "quantity": "0.01"}  # fmt: skip
    assert trader.trade(command)["error"] == "no_account"  # alive: the next check speaks
    # Revoked elsewhere (another tab's logout, a reused refresh token): the socket is told within
    # 2 s, but a command sent meanwhile is refused already.
    stack.redis.delete(stack.keys.auth_family(family))
    refused = trader.trade({**command, "request_id": rid()})
    assert refused["error"] == "token_revoked", refused
    trader.close()


def test_two_execution_shards_each_run_their_own_accounts_and_place_each_order_once(
    stack_factory: Callable[..., TradeStack],
) -> None:
    """Two execution processes (TP_EXECUTION_SHARDS=2): the web routes each command to its
    account's shard; each process runs only its shard's accounts, so an order is placed once and
    its events told once. A killed process's commands wait in its stream for its restart."""
    import orjson

    from core.keys import execution_shard_of

    stack = stack_factory(TP_EXECUTION_SHARDS="2", TP_TRADE_REPLY_TIMEOUT_MS="1500")
    traders: dict[int, Trader] = {}
    while len(traders) < 2:  # one trader on each shard (an address falls in either)
        t = Trader(stack)
        traders.setdefault(execution_shard_of(t.address, 2), t)
    for t in traders.values():
        assert t.link_hmac(stack.exchange_account()).json()["ok"] is True
    for t in traders.values():
        resp = t.post("/api/orders", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
        assert resp.json()["order"]["status"] == "FILLED", resp.text

    def health() -> dict[str, Any]:
        raw = stack.redis.hgetall(stack.keys.execution_health())
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    def accounts_by_process() -> dict[str, set[str]]:
        return {name: set(h["accounts"]) for name, h in health().items()}

    expected = {
        "exec-test": {traders[0].address.lower()},
        "exec-test-2": {traders[1].address.lower()},
    }
    # Each process reports every 2 s: wait for the reports that follow the links.
    stack.wait(
        "each process reporting its shard's account", lambda: accounts_by_process() == expected
    )
    assert accounts_by_process() == expected
    for shard, t in traders.items():
        stack.wait("the order's events", lambda t=t: any(e["status"] == "FILLED"
                                                          for e in t.order_events()))  # fmt: skip
        cid = next(e["client_order_id"] for e in t.order_events() if e["status"] == "FILLED")
        filled = [e for e in t.order_events()
                  if e["client_order_id"] == cid and e["status"] == "FILLED"]  # fmt: skip
        assert len(filled) == 1, (shard, filled)  # told once: one process runs the account
    # The exchange holds exactly one order per command.
    for t in traders.values():
        orders = t.call("GET", "/api/orders/history?limit=50").json()["orders"]
        assert len([o for o in orders if o["status"] == "FILLED"]) == 1, orders

    # Shard 2's process dies: its trader's command waits in shard 2's stream (the web answers
    # that it is queued) while shard 1 trades on; the restarted process places it, once.
    second = stack.executions[1]
    second.kill9()
    queued = traders[1].post("/api/orders", symbol="BTCUSDT", side="SELL", type="MARKET",
                             quantity="0.010")  # fmt: skip
    assert queued.status_code == 202, queued.text
    other = traders[0].post("/api/orders", symbol="BTCUSDT", side="SELL", type="MARKET",
                            quantity="0.010")  # fmt: skip
    assert other.json()["order"]["status"] == "FILLED", other.text
    second.start()

    def sold() -> bool:
        return any(e["side"] == "SELL" and e["status"] == "FILLED"
                   for e in traders[1].order_events())  # fmt: skip

    stack.wait("the queued order filled after the restart", sold)
    for t in traders.values():
        orders = t.call("GET", "/api/orders/history?limit=50").json()["orders"]
        assert sorted(o["side"] for o in orders if o["status"] == "FILLED") == ["BUY", "SELL"]
