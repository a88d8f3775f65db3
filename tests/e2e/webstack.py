"""The web tier in end-to-end tests: gunicorn web processes on a running pipeline, and sign-in.

``WebStack`` is a simulator, the pipeline (feeder, consumer, worker) with 1 s candles and two
small 1 s signals, and one or more real ``gunicorn -k gevent`` web processes as in the Procfile.
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from core.keys import Keys
from tests.e2e.conftest import RunningSim
from tests.e2e.pipeline import Pipeline, Service

JWT_KEYS = "k2:" + "b" * 40 + ",k1:" + "a" * 40  # k2 signs; k1 still verifies
SIGNALS = """
[[signal]]
name = "rsi_1s"
formula = "rsi"
params = { period = 5 }
timeframes = ["1s"]

[[signal]]
name = "ema_1s"
formula = "ema_cross"
params = { fast = 3, slow = 5 }
timeframes = ["1s"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gunicorn_args(port: int, connections: int = 1000) -> list[str]:
    return ["-m", "gunicorn", "-c", "python:web.gunicorn_conf", "-k", "gevent", "-w", "1",
            "--worker-connections", str(connections),
            "--graceful-timeout", "5", "--no-control-socket", "-b", f"127.0.0.1:{port}",
            "web.wsgi:app"]  # fmt: skip


@dataclass
class WebProcess:
    port: int
    service: Service

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class WebStack:
    sim: RunningSim
    pipeline: Pipeline
    origin: str
    chain_id: int
    env: dict[str, str]
    log_dir: Path
    webs: list[WebProcess] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.webs[0].base_url

    @property
    def redis(self) -> redis.Redis:
        return self.pipeline.redis

    @property
    def keys(self) -> Keys:
        return self.pipeline.keys

    def start_web(self, **env: str) -> WebProcess:
        """Start one more web process (all of them serve the same origin)."""
        port = self.port if not self.webs else free_port()
        service = Service(gunicorn_args(port), {**self.env, **env},
                          self.log_dir / f"web-{port}.log")  # fmt: skip
        web = WebProcess(port, service)
        self.webs.append(web)
        deadline = time.monotonic() + 30
        while True:
            assert service.alive(), service.tail()
            try:
                if httpx.get(f"{web.base_url}/api/health", timeout=2).status_code in (200, 503):
                    return web
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"web did not start:\n{service.tail()}"
            time.sleep(0.2)

    port: int = 0

    def web_health(self) -> dict[str, Any]:
        import orjson

        return {k.decode(): orjson.loads(v) for k, v in
                self.redis.hgetall(self.keys.web_health()).items()}  # fmt: skip

    def stop(self) -> None:
        for web in self.webs:
            web.service.stop()


def siwe_message(account: LocalAccount, nonce: str, *, domain: str, uri: str, chain_id: int,
                 issued_at: datetime | None = None, statement: str = "Sign in to tradepipe",
                 expiration: datetime | None = None) -> str:  # fmt: skip
    """Build an EIP-4361 message the way a wallet page does (by hand, from the ABNF)."""
    issued = (issued_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    text = (f"{domain} wants you to sign in with your Ethereum account:\n{account.address}\n\n"
            f"{statement}\n\nURI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\n"
            f"Issued At: {issued.replace('+00:00', 'Z')}")  # fmt: skip
    if expiration is not None:
        exp = expiration.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        text += f"\nExpiration Time: {exp}"
    return text


def sign(account: LocalAccount, text: str) -> str:
    return "0x" + account.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


def sign_in(http: httpx.Client, account: LocalAccount | None = None, *, scope: str = "web",
            **message: Any) -> tuple[LocalAccount, httpx.Response]:  # fmt: skip
    """Run the whole SIWE flow on ``http`` (whose base_url is a web process)."""
    account = account or Account.create(secrets.token_hex(8))
    info = http.get("/auth/nonce").json()
    text = siwe_message(account, info["nonce"], domain=info["domain"], uri=info["uri"],
                        chain_id=info["chain_id"], **message)  # fmt: skip
    response = http.post("/auth/login", json={"message": text, "signature": sign(account, text),
                                              "scope": scope})  # fmt: skip
    return account, response


def start_web_stack(sim: RunningSim, pipeline_factory: Any, tmp_path: Path, **env: str
                    ) -> WebStack:  # fmt: skip
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    signals = tmp_path / "signals.toml"
    signals.write_text(SIGNALS)
    web_env = {"TP_WEB_ORIGIN": origin, "TP_JWT_KEYS": JWT_KEYS, "TP_WEB_TICK_MS": "100",
               "TP_LOGIN_PER_MINUTE_IP": "1000", "TP_TIMEFRAMES": "1s,1m",
               "TP_SIGNALS_FILE": str(signals), "TP_SIGNAL_PACE_MS": "500",
               "TP_WEB_MAX_SUBSCRIPTIONS": "6", **env}  # fmt: skip
    p = pipeline_factory(sim, **web_env)
    stack = WebStack(sim, p, origin, 1, p.env, tmp_path, port=port)
    p.wait_for("the universe", lambda: p.redis.exists(p.keys.universe()) > 0, timeout_s=30)
    stack.start_web()
    return stack
