"""The trading path in end-to-end tests: simulator, execution process, gunicorn web process.

``TradeStack`` starts a simulator with BTCUSDT and ETHUSDT, the ``execution`` process and one
``web`` process exactly as the Procfile runs them, on the suite's Redis. ``Trader`` is a signed-in
user: an httpx client with their access token and a python-socketio client on their socket that
records every ``order_event``. Everything the test sees (responses, socket messages) is kept for
the secrets sweep.
"""

from __future__ import annotations

import base64
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import redis
import socketio
from eth_account.signers.local import LocalAccount

from core.keys import Keys
from simulator.trading import sign
from tests.e2e.conftest import RunningSim
from tests.e2e.pipeline import ROOT, Service
from tests.e2e.webstack import JWT_KEYS, free_port, gunicorn_args, sign_in

KEK = "k1:" + base64.urlsafe_b64encode(b"k" * 32).decode()
SYMBOLS = ("BTCUSDT", "ETHUSDT")
_rids = itertools.count(1)


def rid() -> str:
    return f"r{os.getpid()}-{next(_rids)}-{time.time_ns() % 10**9}"


@dataclass
class TradeStack:
    sim: RunningSim
    redis: redis.Redis
    keys: Keys
    env: dict[str, str]
    log_dir: Path
    port: int
    execution: Service | None = None
    executions: list[Service] = field(default_factory=list)  # one per execution shard
    web: Service | None = None
    seen: list[str] = field(default_factory=list)  # every response body and socket message

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_execution(self) -> Service:
        """Start one execution process per shard (TP_EXECUTION_SHARDS): ``exec-test`` runs the
        first, ``exec-test-K`` the K-th."""
        n = int(self.env.get("TP_EXECUTION_SHARDS", "1"))
        self.executions = []  # (again, after a kill: the new processes replace the old)
        for k in range(1, n + 1):
            name = "exec-test" if k == 1 else f"exec-test-{k}"
            log = self.log_dir / ("execution.log" if k == 1 else f"execution{k}.log")
            self.executions.append(Service(["-m", "execution", "--name", name,
                                            "--shard", f"{k}/{n}"], self.env, log))  # fmt: skip
        self.execution = self.executions[0]
        self.wait("instruments", lambda: self.redis.exists(self.keys.instruments()) > 0,
                  service=self.execution)  # fmt: skip
        return self.execution

    def start_web(self) -> Service:
        self.web = Service(gunicorn_args(self.port), self.env, self.log_dir / "web.log")
        deadline = time.monotonic() + 30
        while True:
            assert self.web.alive(), self.web.tail()
            try:
                httpx.get(f"{self.base_url}/api/health", timeout=2)
                return self.web
            except httpx.HTTPError:
                assert time.monotonic() < deadline, self.web.tail()
                time.sleep(0.2)

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 30,
             service: Service | None = None) -> Any:  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for s in (service, *self.executions, self.web):
                if s is not None:
                    assert s.alive(), f"{s.name} died waiting for {what}:\n{s.tail()}"
            result = check()
            if result:
                return result
            time.sleep(0.1)
        logs = "".join(f"\n--- {s.name}\n{s.tail()}" for s in (self.execution, self.web) if s)
        raise AssertionError(f"timed out waiting for {what}{logs}")

    def stop(self) -> None:
        for s in (self.web, *self.executions):
            if s is not None:
                s.stop()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_dir.glob("*.log"))

    # --- the exchange's side (the simulator) --------------------------------------------------

    def exchange_account(self, **body: Any) -> dict[str, Any]:
        return dict(self.sim.admin("POST", "/sim/accounts", {"balance": "100000", **body}))

    def signed(self, account: dict[str, Any], method: str, path: str, **params: Any) -> Any:
        """Call the simulator as the account holder would, with their HMAC key."""
        query = urlencode({**params, "timestamp": int(time.time() * 1000)})
        query += "&signature=" + sign(account["secretKey"], query)
        resp = self.sim.http.request(method, f"{path}?{query}",
                                     headers={"X-MBX-APIKEY": account["apiKey"]})  # fmt: skip
        assert resp.status_code == 200, resp.text
        return resp.json()

    def exchange_trades(self, api_key: str) -> list[dict[str, Any]]:
        return list(self.sim.admin("GET", f"/sim/accounts/{api_key}/trades"))

    def fault(self, **spec: Any) -> None:
        self.sim.admin("POST", "/sim/faults", spec)


class Trader:
    """A signed-in user with a REST client and a live socket.

    Both go to the stack's web process unless ``rest_url`` or ``socket_url`` names another (one
    of several web processes serving the same origin, tests/e2e/test_web_haproxy.py).
    """

    def __init__(self, stack: TradeStack, account: LocalAccount | None = None, *,
                 rest_url: str | None = None, socket_url: str | None = None) -> None:  # fmt: skip
        self.stack = stack
        self.http = httpx.Client(base_url=rest_url or stack.base_url, timeout=30)
        self.account, resp = sign_in(self.http, account)
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # Another process than the site's URL still gets the site's origin, as a browser sends.
        origin = {"origin": stack.env["TP_WEB_ORIGIN"]} if socket_url else {}
        self.sio = socketio.Client(reconnection=False, websocket_extra_options=origin)
        self.sio.on("order_event", self._on_event)
        self.sio.connect(socket_url or stack.base_url, auth={"token": self.token},
                         transports=["websocket"])  # fmt: skip

    @property
    def address(self) -> str:
        return str(self.account.address)

    def _on_event(self, data: Any) -> None:
        with self._lock:
            self.events.append(data)
        self.stack.seen.append(repr(data))

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        resp = self.http.request(method, path, json=body)
        self.stack.seen.append(resp.text)
        return resp

    def post(self, path: str, **body: Any) -> httpx.Response:
        return self.call("POST", path, {"request_id": rid(), **body})

    def link_hmac(self, exchange: dict[str, Any]) -> httpx.Response:
        return self.post("/api/account/link", kind="hmac", api_key=exchange["apiKey"],
                         secret=exchange["secretKey"])  # fmt: skip

    def trade(self, data: dict[str, Any]) -> Any:
        answer = self.sio.call("trade", data, timeout=30)
        self.stack.seen.append(repr(answer))
        return answer

    def order_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e["data"] for e in self.events if e["kind"] == "order"]

    def order(self, cid: str) -> dict[str, Any] | None:
        for o in self.call("GET", "/api/orders/open").json()["orders"]:
            if o["client_order_id"] == cid:
                return dict(o)
        for o in self.call("GET", "/api/orders/history?limit=500").json()["orders"]:
            if o["client_order_id"] == cid:
                return dict(o)
        return None

    def close(self) -> None:
        self.sio.disconnect()
        self.http.close()


def start_trade_stack(sim: RunningSim, redis_url: str, namespace: str, tmp_path: Path,
                      **env: str) -> TradeStack:  # fmt: skip
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
        "REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_STREAM_SHARDS": "4",
        "TP_REST_URL": sim.rest_url, "TP_WS_URL": sim.ws_url, "TP_MARKET": "sim",
        "TP_JWT_KEYS": JWT_KEYS, "TP_KEY_ENCRYPTION_KEY": KEK,
        "TP_WEB_ORIGIN": f"http://127.0.0.1:{port}", "TP_LOGIN_PER_MINUTE_IP": "1000",
        "TP_LOGIN_PER_MINUTE_ADDRESS": "1000", "TP_SYMBOLS": ",".join(SYMBOLS),
        "TP_EXEC_TIMEOUT_MS": "1500", "TP_EXEC_RECONCILE_S": "5", "TP_LOG_LEVEL": "DEBUG",
        "TP_TRADE_REPLY_TIMEOUT_MS": "8000", "PYTHONPATH": str(ROOT), **env,
    }  # fmt: skip
    stack = TradeStack(sim, redis.Redis.from_url(redis_url), Keys(namespace, 4), full_env,
                       tmp_path, port)  # fmt: skip
    stack.start_execution()
    stack.start_web()
    return stack
