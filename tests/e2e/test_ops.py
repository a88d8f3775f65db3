"""The operators' page API: real Redis, a real Dramatiq worker, the real SIWE login, no mocks.

A probe actor on its own queue fails on purpose, is retried once and lands in the broker's
dead-letter set exactly as a failing production actor's message does; the ops API lists it, moves
it back (once, however often it is asked) and deletes it. Dead-lettered stream entries, signal
errors and health are written the way their producers write them.

Dramatiq's Redis nack moves the payload as it was last *enqueued*, with the traceback of the
attempt before the last; ``tasks.broker.FinalTraceback`` replaces it with the last attempt's, which
is what the page must show (the probe fails twice: ``max_retries=1``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import dramatiq
import orjson
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from core.config import Settings
from core.keys import Keys
from web import siwe
from web.app import create_app
from web.ops import MAX_BATCH

QUEUE = "opstest"
WALLET_JS = """window.ethereum = {
    request: ({ method, params }) => window.tpTestWallet(method, params ?? []),
};"""


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def login(client: FlaskClient, account: LocalAccount, scope: str) -> Any:
    grant = client.get("/auth/nonce").json
    assert grant is not None
    issued = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = siwe.format_message(domain=grant["domain"], address=account.address, uri=grant["uri"],
                               chain_id=grant["chain_id"], nonce=grant["nonce"],
                               issued_at=issued, statement="Sign in to the ops page.")  # fmt: skip
    signature = "0x" + account.sign_message(encode_defunct(text=text)).signature.hex().removeprefix(
        "0x"
    )
    return client.post("/auth/login", json={"message": text, "signature": signature,
                                            "scope": scope})  # fmt: skip


class Ops:
    """The Flask test client with an operator's bearer token."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **args: Any) -> Any:
        response = self.client.get(f"/ops/api/{path}", query_string=args, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json

    def post(self, path: str, body: Any, status: int = 200) -> Any:
        response = self.client.post(f"/ops/api/{path}", json=body, headers=self.headers)
        assert response.status_code == status, response.text
        return response.json


class Probe:
    """A failing-on-demand actor on the project's broker settings, and a real worker for it."""

    def __init__(self, broker: RedisBroker, r: redis.Redis, keys: Keys) -> None:
        self.broker, self.r = broker, r
        ns = keys.dramatiq_namespace()
        self.queue, self.xq = f"{ns}:{QUEUE}", f"{ns}:{QUEUE}.XQ"
        self.mode, self.ran = f"{keys.namespace}:opstest:mode", f"{keys.namespace}:opstest:ran"
        self.attempts = f"{keys.namespace}:opstest:attempts"
        self.worker: dramatiq.Worker | None = None

        def ops_probe(tag: str) -> None:
            attempt = r.hincrby(self.attempts, tag, 1)
            if r.get(self.mode) != b"ok":
                raise ValueError(f"probe {tag} failed on purpose (attempt {attempt})")
            r.rpush(self.ran, tag)

        self.actor = dramatiq.actor(ops_probe, queue_name=QUEUE, broker=broker, max_retries=1,
                                    min_backoff=10, max_backoff=20)  # fmt: skip

    def start(self) -> None:
        self.worker = dramatiq.Worker(self.broker, worker_threads=1, worker_timeout=100)
        self.worker.start()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=5_000)
            self.worker = None

    def failures(self) -> dict[str, float]:
        return {
            rid.decode(): score for rid, score in self.r.zrange(self.xq, 0, -1, withscores=True)
        }

    def fail_one(self, tag: str) -> str:
        """Send ``tag`` with the probe failing; return its Redis message id once dead-lettered."""
        before = set(self.failures())
        self.actor.send(tag)
        new = wait_for(f"{tag} dead-lettered", lambda: set(self.failures()) - before)
        (rid,) = new
        return str(rid)


@pytest.fixture
def operator() -> LocalAccount:
    return Account.create()


@pytest.fixture
def origin() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def settings(make_settings: Callable[..., Settings], operator: LocalAccount, origin: str
             ) -> Settings:  # fmt: skip
    return make_settings(TP_OPS_ADDRESSES=operator.address, TP_LOGIN_PER_MINUTE_IP="1000",
                         TP_WEB_ORIGIN=origin)  # fmt: skip


@pytest.fixture
def app(settings: Settings) -> Any:
    return create_app(settings, start_pump=False)


@pytest.fixture
def client(app: Any) -> FlaskClient:
    return app.test_client()  # type: ignore[no-any-return]


@pytest.fixture
def served(app: Any, origin: str) -> Iterator[str]:
    """Serve the app on the origin's port (plain threads: the page needs HTTP only)."""
    server = make_server("127.0.0.1", int(origin.rsplit(":", 1)[1]), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield origin
    server.shutdown()
    thread.join(5)


@pytest.fixture
def ops(client: FlaskClient, operator: LocalAccount) -> Ops:
    response = login(client, operator, "ops")
    assert response.status_code == 200, response.text
    assert response.json["scope"] == "ops"
    return Ops(client, response.json["access_token"])


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def probe(settings: Settings, keys: Keys, r: redis.Redis, redis_url: str,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:  # fmt: skip
    # tasks.broker builds its module-level broker from the environment when first imported.
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TP_DEMO", "1")
    from tasks.broker import make_broker

    p = Probe(make_broker(settings), r, keys)
    p.start()
    yield p
    p.stop()
    p.broker.client.close()


def test_dead_letters_past_the_bound_go_oldest_first_and_are_counted(
    ops: Ops, settings: Settings, keys: Keys, r: redis.Redis, redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TP_DEMO", "1")
    from tasks.broker import make_broker

    p = Probe(make_broker(settings, dead_letters_max=3), r, keys)  # the same middleware, bound 3
    p.start()
    try:
        for n in range(8):  # a failure storm, one at a time so that their order is known
            p.fail_one(f"s{n}")
    finally:
        p.stop()
        p.broker.client.close()
    assert r.zcard(p.xq) == r.hlen(f"{p.xq}.msgs") == 3
    rows = ops.get("failed", queue=QUEUE)["failed"]
    assert sorted(row["args"][0] for row in rows) == ["s5", "s6", "s7"]  # the newest kept
    assert r.hget(keys.dead_letters_trimmed(), QUEUE) == b"5"
    assert ops.get("health")["queues"][QUEUE] == {"ready": 0, "delayed": 0, "failed": 3,
                                                  "trimmed": 5}  # fmt: skip


def audit(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in r.xrange(keys.ops_audit())]  # fmt: skip


def test_failed_message_is_listed_retried_until_it_runs(
    ops: Ops, probe: Probe, r: redis.Redis, keys: Keys, operator: LocalAccount
) -> None:
    started_ms = time.time_ns() // 1_000_000
    rid = probe.fail_one("a")

    (row,) = ops.get("failed", queue=QUEUE)["failed"]
    assert (row["queue"], row["id"], row["actor"], row["args"]) == (QUEUE, rid, "ops_probe", ["a"])
    assert row["error"] == "ValueError: probe a failed on purpose (attempt 2)"  # the last one
    assert "Traceback" in row["traceback"]
    assert row["attempts"] == 2
    assert r.hget(probe.attempts, "a") == b"2"
    assert started_ms <= row["failed_at"] <= time.time_ns() // 1_000_000
    every = ops.get("failed")  # no queue: the project's queues and any other with failures
    assert [f["id"] for f in every["failed"]] == [rid]
    assert every["totals"] == {"backfill": 0, QUEUE: 1, "signals": 0}
    assert ops.get("failed", actor="backfill_klines")["failed"] == []
    assert len(ops.get("failed", actor="ops_probe")["failed"]) == 1

    # Retried while still failing: it comes back with a fresh failure after two more attempts,
    # a whole retry budget, since the move dropped the Retries middleware's count.
    assert ops.post("failed/retry", {"queue": QUEUE, "ids": [rid]})["results"] == {rid: "retried"}
    wait_for("a second failure", probe.failures)
    (again,) = ops.get("failed", queue=QUEUE)["failed"]
    assert again["attempts"] == 2
    assert again["error"] == "ValueError: probe a failed on purpose (attempt 4)"
    assert again["failed_at"] > row["failed_at"]
    assert again["message_id"] == row["message_id"]  # Dramatiq's retry gave it a new Redis id
    assert r.hget(probe.attempts, "a") == b"4"

    r.set(probe.mode, "ok")
    rid2 = again["id"]
    assert ops.post("failed/retry", {"queue": QUEUE, "ids": [rid2]})["counts"] == {"retried": 1}
    assert wait_for("the probe to run", lambda: r.lrange(probe.ran, 0, -1)) == [b"a"]
    assert ops.get("failed", queue=QUEUE)["failed"] == []
    assert [(e["who"], e["action"], e["target"], e["ids"]) for e in audit(r, keys)] == [
        (operator.address, "failed.retry", QUEUE, orjson.dumps([i]).decode()) for i in (rid, rid2)
    ]
    listed = ops.get("audit")["audit"]  # newest first
    assert [(e["action"], e["ids"], e["results"]) for e in listed] == [
        ("failed.retry", [i], {"retried": 1}) for i in (rid2, rid)
    ]


def test_a_failed_message_moves_back_once_however_often_retried(
    ops: Ops, probe: Probe, r: redis.Redis, keys: Keys
) -> None:
    rid = probe.fail_one("b")
    probe.stop()  # it stays in its queue, where we can count it

    def retry() -> Any:
        return ops.post("failed/retry", {"queue": QUEUE, "ids": [rid, rid]})["results"][rid]

    barrier, outcomes = threading.Barrier(2), []

    def race() -> None:
        barrier.wait()
        outcomes.append(retry())

    threads = [threading.Thread(target=race) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["missing", "retried"]
    assert retry() == "missing"
    assert r.lrange(probe.queue, 0, -1) == [rid.encode()]
    moved = dramatiq.Message.decode(r.hget(f"{probe.queue}.msgs", rid))  # type: ignore[arg-type]
    assert moved.args == ("b",)
    assert moved.queue_name == QUEUE
    assert not {"retries", "traceback", "eta"} & set(moved.options)
    assert moved.options["redis_message_id"] == rid
    assert probe.failures() == {}

    probe.start()  # it fails again (under a new Redis id: Dramatiq's retry); now delete it
    (rid,) = wait_for("the failure again", probe.failures)
    assert ops.post("failed/delete", {"queue": QUEUE, "ids": [rid]})["results"] == {rid: "deleted"}
    assert probe.failures() == {}
    assert not r.exists(f"{probe.xq}.msgs")
    assert ops.post("failed/delete", {"queue": QUEUE, "ids": [rid]})["results"] == {rid: "missing"}
    actions = [(e["action"], e["results"]) for e in audit(r, keys)]
    retried, missing = '{"retried":1}', '{"missing":1}'
    assert sorted(actions[:2]) == [("failed.retry", missing), ("failed.retry", retried)]
    assert actions[2:] == [("failed.retry", missing), ("failed.delete", '{"deleted":1}'),
                           ("failed.delete", missing)]  # fmt: skip


def test_dead_letter_goes_back_to_its_stream(ops: Ops, r: redis.Redis, keys: Keys) -> None:
    record = orjson.dumps(["trade", 1, "BTCUSDT", 7, "1.5", "0.1", 1_700_000_000_000, False])
    dead = keys.dead(0)
    entry = r.xadd(dead, {"stream": keys.trades(0), "id": "1700000000000-0",
                          "error": "SchemaError: field 3", "d": record}).decode()  # fmt: skip
    alien = r.xadd(dead, {"stream": "elsewhere", "id": "1-0", "error": "x", "d": b"r"}).decode()

    listed = ops.get("dead")
    assert listed["totals"] == {"0": 2, "1": 0, "2": 0, "3": 0}
    row = next(d for d in listed["dead"] if d["id"] == entry)
    assert row == {"shard": 0, "id": entry, "dead_at": int(entry.split("-")[0]),
                   "stream": keys.trades(0), "entry_id": "1700000000000-0",
                   "error": "SchemaError: field 3", "record": record.decode()}  # fmt: skip
    assert ops.get("dead", shard="1")["dead"] == []

    results = ops.post("dead/retry", {"shard": 0, "ids": [entry, alien]})["results"]
    assert results == {entry: "retried", alien: "unknown_stream"}
    ((_, fields),) = r.xrange(keys.trades(0))
    assert fields == {b"d": record}
    assert [eid.decode() for eid, _ in r.xrange(dead)] == [alien]
    assert ops.post("dead/retry", {"shard": 0, "ids": [entry]})["results"] == {entry: "missing"}
    assert ops.post("dead/delete", {"shard": 0, "ids": [alien]})["counts"] == {"deleted": 1}
    assert r.xlen(dead) == 0
    assert r.xlen(keys.trades(0)) == 1
    assert [e["action"] for e in audit(r, keys)] == ["dead.retry", "dead.retry", "dead.delete"]


def test_signal_errors_and_health(ops: Ops, r: redis.Redis, keys: Keys) -> None:
    now = time.time_ns() // 1_000_000
    r.hset(keys.signal_errors(1), "rsi_1m", f"raised|BTCUSDT|1m|{now}|ZeroDivisionError: x|y")
    r.hset(keys.signal_metrics(1), mapping={"errors:rsi_1m": 3, "rounds": 10})
    r.hset(keys.candle_metrics(2), "builds", 5)
    r.hset(keys.feed_health(), "feeder-1of1", orjson.dumps({"at_ms": now, "events": 9}))
    r.hset(keys.consumer_health(), "c1", orjson.dumps({"at_ms": now - 60_000}))

    (err,) = ops.get("signal-errors")["signal_errors"]
    assert err == {"shard": 1, "signal": "rsi_1m", "kind": "raised", "symbol": "BTCUSDT",
                   "timeframe": "1m", "at": now, "message": "ZeroDivisionError: x|y",
                   "count": 3}  # fmt: skip
    health = ops.get("health")
    assert health["feeders"]["feeder-1of1"]["stale"] is False
    assert health["feeders"]["feeder-1of1"]["events"] == 9
    assert health["consumers"]["c1"]["stale"] is True
    assert health["web"] == {}
    assert health["shards"][1]["signal_metrics"] == {"errors:rsi_1m": 3, "rounds": 10}
    assert health["shards"][2]["candle_metrics"] == {"builds": 5}
    assert health["queues"]["backfill"] == {"ready": 0, "delayed": 0, "failed": 0, "trimmed": 0}


def test_only_operators_with_ops_tokens_get_in(client: FlaskClient, operator: LocalAccount) -> None:
    page = client.get("/ops")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert b"ops.js" in page.data

    refused = login(client, Account.create(), "ops")
    assert (refused.status_code, refused.json["error"]) == (403, "not_an_operator")
    anonymous = client.get("/ops/api/failed")
    assert (anonymous.status_code, anonymous.json["error"]) == (401, "unauthorized")
    web_token = login(client, operator, "web").json["access_token"]
    for path in ("failed", "dead", "health", "signal-errors", "audit"):
        wrong = client.get(f"/ops/api/{path}", headers={"Authorization": f"Bearer {web_token}"})
        assert (wrong.status_code, wrong.json["error"]) == (401, "wrong_audience")
    posted = client.post("/ops/api/failed/delete", json={"queue": QUEUE, "ids": ["x"]},
                         headers={"Authorization": f"Bearer {web_token}"})  # fmt: skip
    assert posted.status_code == 401


def test_an_operator_removed_from_the_list_loses_access_at_once(
    client: FlaskClient, operator: LocalAccount, make_settings: Callable[..., Settings],
    settings: Settings, origin: str, r: redis.Redis, keys: Keys,
) -> None:  # fmt: skip
    granted = login(client, operator, "ops")
    assert granted.status_code == 200
    token = granted.json["access_token"]
    cookie = client.get_cookie("tp_refresh_ops", path="/auth")
    assert cookie is not None
    # The deployment restarts with TP_OPS_ADDRESSES no longer naming them.
    restarted = make_settings(**settings.secret_env(), TP_OPS_ADDRESSES="", TP_WEB_ORIGIN=origin)
    demoted = create_app(restarted, start_pump=False).test_client()
    demoted.set_cookie("tp_refresh_ops", cookie.value, path="/auth")
    api = demoted.get("/ops/api/health", headers={"Authorization": f"Bearer {token}"})
    assert (api.status_code, api.json["error"]) == (403, "not_an_operator")
    refreshed = demoted.post("/auth/refresh", json={"scope": "ops"})
    assert (refreshed.status_code, refreshed.json["error"]) == (403, "not_an_operator")
    assert not any(r.scan_iter(match=keys.auth_family("*")))  # revoked, not only refused


def test_bad_input_is_refused(ops: Ops, r: redis.Redis, keys: Keys) -> None:
    bad: list[tuple[str, Any]] = [
        ("failed/retry", {"queue": QUEUE, "ids": ["a"] * (MAX_BATCH + 1)}),
        ("failed/retry", {"queue": QUEUE, "ids": []}),
        ("failed/retry", {"queue": QUEUE, "ids": "abc"}),
        ("failed/retry", {"queue": QUEUE, "ids": ["a b"]}),
        ("failed/retry", {"queue": f"{QUEUE}.XQ", "ids": ["a"]}),
        ("failed/delete", {"ids": ["a"]}),
        ("failed/delete", ["a"]),
        ("dead/retry", {"shard": 4, "ids": ["1-0"]}),
        ("dead/retry", {"shard": True, "ids": ["1-0"]}),
        ("dead/delete", {"shard": 0, "ids": ["not-an-entry"]}),
    ]
    for path, body in bad:
        refused = ops.post(path, body, status=400)
        assert refused["error"] == "bad_request", (path, body)
        assert refused["message"], (path, body)
    not_json = ops.client.post("/ops/api/dead/delete", data=b"{", headers=ops.headers)
    assert (not_json.status_code, not_json.json["error"]) == (400, "bad_request")
    for args in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"queue": "a b"}):
        got = ops.client.get("/ops/api/failed", query_string=args, headers=ops.headers)
        assert (got.status_code, got.json["error"]) == (400, "bad_request"), args
    got = ops.client.get("/ops/api/dead", query_string={"shard": "9"}, headers=ops.headers)
    assert got.status_code == 400
    assert not r.exists(keys.ops_audit())  # nothing was done, so nothing was audited


def test_the_page_signs_in_and_retries_with_confirmation(
    served: str, page: Page, operator: LocalAccount, probe: Probe, r: redis.Redis, keys: Keys
) -> None:
    probe.fail_one("p")
    record = orjson.dumps(["gap", 1, "ETHUSDT"])
    r.xadd(keys.dead(1), {"stream": keys.gaps(1), "id": "5-0", "error": "SchemaError", "d": record})

    def wallet(method: str, params: list[Any]) -> Any:
        if method == "eth_requestAccounts":
            return [operator.address.lower()]
        if method == "personal_sign":
            text = bytes.fromhex(params[0][2:]).decode()
            signature = operator.sign_message(encode_defunct(text=text)).signature
            return "0x" + signature.hex().removeprefix("0x")
        raise ValueError(f"the test wallet does not do {method}")

    page.expose_function("tpTestWallet", wallet)
    page.add_init_script(WALLET_JS)
    page.goto(served + "/ops")
    expect(page.locator("#content")).to_be_hidden()
    page.click("#signin")
    expect(page.locator("#address")).to_have_text(operator.address)
    failed = page.locator("#failed tr")
    expect(failed).to_have_count(1)
    expect(failed.first).to_contain_text("ops_probe")
    expect(failed.first).to_contain_text("ValueError: probe p failed on purpose (attempt 2)")
    expect(page.locator("#queues")).to_contain_text(QUEUE)

    r.set(probe.mode, "ok")
    failed.first.get_by_role("button", name="Retry").click()  # one row: no confirmation
    expect(page.locator("#notice")).to_have_text("failed retry: retried 1")
    wait_for("the probe to run", lambda: r.lrange(probe.ran, 0, -1) == [b"p"])
    expect(failed).to_have_count(0)

    dead = page.locator("#dead tr")
    expect(dead).to_have_count(1)
    expect(dead.first).to_contain_text("SchemaError")
    dead.first.locator("input[type=checkbox]").check()
    page.click("#dead-retry-selected")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Put 1 dead-lettered entry back")
    page.click("#confirm-ok")
    expect(page.locator("#notice")).to_have_text("dead retry: retried 1")
    expect(dead).to_have_count(0)
    assert [fields for _, fields in r.xrange(keys.gaps(1))] == [{b"d": record}]
    expect(page.locator("#audit tr")).to_have_count(2)
    expect(page.locator("#audit tr").first).to_contain_text("dead.retry")
