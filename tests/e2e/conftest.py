"""Fixtures for the simulator's end-to-end tests: a real Simulator on free ports.

The simulator runs in-process on its own asyncio loop in a background thread, so tests use
ordinary blocking clients: ``httpx`` for REST and ``websockets.sync.client`` for streams.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from simulator.app import SimConfig, Simulator
from simulator.ws_server import WsLimits

if TYPE_CHECKING:
    from tests.e2e.pipeline import Pipeline


class RunningSim:
    """A Simulator served from a background thread."""

    def __init__(self, config: SimConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.sim = Simulator(config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self.sim.start())
        self.http = httpx.Client(base_url=self.sim.rest_url, timeout=10)

    @property
    def rest_url(self) -> str:
        return self.sim.rest_url

    @property
    def ws_url(self) -> str:
        return self.sim.ws_url

    def run(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the simulator's loop (its state is not thread-safe)."""
        fut: Future[Any] = Future()

        def wrapper() -> None:
            try:
                fut.set_result(fn())
            except Exception as exc:  # handed to the test thread
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(wrapper)
        return fut.result(10)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.http.request(method, path, json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def stop(self) -> None:
        self.http.close()
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def sim_config(**overrides: Any) -> SimConfig:
    """A SimConfig on free ports with small, test-friendly limits unless overridden."""
    limits = overrides.pop("limits", WsLimits())
    base = SimConfig(rest_port=0, ws_port=0, rate=300.0, kline_lag_ms=(50, 100), limits=limits)
    return replace(base, **overrides)


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., RunningSim]]:
    started: list[RunningSim] = []

    def start(**overrides: Any) -> RunningSim:
        running = RunningSim(sim_config(**overrides))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., RunningSim]) -> RunningSim:
    return sim_factory()


class RawWs:
    """A bare websocket client that never answers pings (websockets' clients always do)."""

    def __init__(self, url: str, *, rcvbuf: int | None = None, headers: str = "") -> None:
        host_port, _, path = url.removeprefix("ws://").partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # a small window makes a non-reading client back up quickly
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.decode("latin-1").lower()
        self.rsv = 0  # the RSV bits seen on any frame (RSV1: a compressed message)

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Yield (opcode, payload) until the server closes the TCP connection."""
        while True:
            while True:
                frame = self._parse()
                if frame is None:
                    break
                yield frame
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return
            if not chunk:
                return
            self.buf += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        b = self.buf
        if len(b) < 2:
            return None
        n, off = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, off = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, off = int.from_bytes(b[2:10], "big"), 10
        if len(b) < off + n:
            return None
        self.buf = b[off + n :]
        self.rsv |= b[0] & 0x70
        return b[0] & 0x0F, b[off : off + n]

    def close(self) -> None:
        self.sock.close()


def loads(message: str | bytes) -> Any:
    return orjson.loads(message)


@pytest.fixture
def start_pipeline(
    redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    started: list[Pipeline] = []

    from tests.e2e.pipeline import Pipeline

    def start(sim: RunningSim, **env: Any) -> Pipeline:  # env: str, and Pipeline's options
        p = Pipeline(sim, redis_url, namespace, tmp_path, **env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def web_stack(
    sim_factory: Callable[..., RunningSim],
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
) -> Iterator[Any]:
    """A trading simulator, the pipeline and one gunicorn web process (tests/e2e/webstack.py)."""
    from tests.e2e.pipeline import stop_all
    from tests.e2e.webstack import start_web_stack

    sim = sim_factory(rate=40.0, symbol_count=6)
    stack = start_web_stack(sim, start_pipeline, tmp_path)
    yield stack
    # A dyno stop: the web processes and the pipeline at once (a web process takes its graceful
    # timeout to let go of clients still connected; the pipeline stops meanwhile).
    stop_all([web.service for web in stack.webs] + stack.pipeline.services())


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # the Makefile installs Debian's


ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Keep each phase's report on the test item (the page fixture screenshots a failure)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Chromium page (Playwright); the test fails if the page throws an uncaught error.

    On a failure the page's screenshot is saved under var/test-artifacts/ (named after the test).
    """
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs it, or set CHROMIUM")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(10_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                name = "".join(c if c.isalnum() else "_" for c in request.node.name)
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, f"uncaught errors in the page: {errors}"
