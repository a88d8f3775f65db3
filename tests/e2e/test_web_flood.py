"""Clients that never read: the web process keeps each one's backlog bounded and drops them."""

from __future__ import annotations

import os
import time

import httpx
import psutil
import pytest

from tests.e2e.conftest import RawWs
from tests.e2e.test_web_sockets import Watcher, md_rooms
from tests.e2e.webstack import WebStack

BACKLOG = 4
DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"  # Chrome's


class Sleeper(RawWs):
    """A Socket.IO client that subscribes, then never reads again (tiny receive window).

    It offers compression as browsers do; the server declines it (web/transport.py)."""

    def __init__(self, port: int, symbols: list[str]) -> None:
        super().__init__(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
                         rcvbuf=4096, headers=DEFLATE)  # fmt: skip
        assert self.status == 101
        assert "sec-websocket-extensions" not in self.head, self.head
        self.send_text("40")
        for s in symbols:
            self.send_text(f'42["subscribe",{{"channel":"book","symbol":"{s}"}}]')

    def send_text(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        assert len(data) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes([0x81, 0x80 | len(data)]) + mask + masked)


def rss_mib(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


@pytest.mark.timeout(150)
def test_clients_that_never_read_are_bounded_then_disconnected_with_a_reason(
    web_stack: WebStack,
) -> None:
    stack = web_stack
    web = stack.start_web(TP_WEB_CLIENT_BACKLOG=str(BACKLOG), TP_WEB_SLOW_MS="3000",
                          TP_WEB_TICK_MS="50", TP_WEB_SEND_BUFFER="16384")  # fmt: skip
    assert web.service.proc is not None
    symbols = httpx.get(f"{web.base_url}/api/symbols").json()["symbols"]
    reader = Watcher(web.base_url, origin=stack.origin)
    for s in symbols:
        assert reader.call("subscribe", {"channel": "book", "symbol": s})["ok"]
    stack.sim.admin("POST", "/sim/rate", {"rate": 2000})  # ~2,000 book tickers/s too
    time.sleep(2)
    before = rss_mib(web.service.proc.pid)

    sleepers = [Sleeper(web.port, symbols) for _ in range(40)]
    read_before = len(reader.of("md"))

    def health() -> dict[str, int]:
        # This process is the one with the small backlog bound.
        return next(h for h in stack.web_health().values() if h["backlog_bound"] == BACKLOG)

    deadline = time.monotonic() + 60
    while health()["kicked"] < len(sleepers):
        assert time.monotonic() < deadline, str(health())
        time.sleep(0.5)
    h = health()
    after = rss_mib(web.service.proc.pid)
    # Never more than the bound queued to one client (+ the ack/snapshot packets of a subscribe).
    assert h["max_queue"] <= BACKLOG + len(symbols) * 2 + 2, h
    assert h["skipped"] > 0
    assert 0 < h["direct"] < h["sent"]  # written straight to sockets, and queued once behind
    assert after - before < 40, (before, after)
    # The reader was never held back by them: it kept receiving the whole time, and stays.
    assert len(reader.of("md")) - read_before > 50
    assert not reader.disconnected.is_set()
    assert all(md_rooms(reader, f"b:{s}") for s in symbols)
    # A dropped client that finally reads finds why, then the end of the connection.
    frames = b"".join(payload for _, payload in sleepers[0].frames())
    assert b'["kicked",{"reason":"slow_consumer"}]' in frames
    assert sleepers[0].rsv == 0  # whole, uncompressed frames (they parsed: none torn)
    for s in sleepers:
        s.close()
    reader.close()
