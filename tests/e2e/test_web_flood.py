"""Clients that never read: the web process keeps each one's backlog bounded and drops them."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import httpx
import psutil
import pytest

from core.keys import ENTRY_FIELD
from core.schemas import BookTicker, encode
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


@pytest.mark.timeout(150)
def test_a_book_stream_past_what_the_pump_reads_is_skipped_to_its_newest_ticker(
    web_stack: WebStack,
) -> None:
    """Book rooms keep the newest ticker: a backlog the pump cannot read in time is skipped
    (conflated), counted, and the client gets the newest ticker without the pump reading it all.
    Reading every entry in order instead shows each ticker later and later (issue 19)."""
    stack = web_stack
    web = stack.start_web(TP_WEB_CLIENT_BACKLOG="17")
    sym = httpx.get(f"{web.base_url}/api/symbols").json()["symbols"][0]
    book = stack.keys.book(stack.keys.shard_of(sym))
    stack.sim.admin("POST", "/sim/rate", {"rate": 0})  # no ticker of the market after ours

    def health() -> dict[str, int]:
        return next(h for h in stack.web_health().values() if h["backlog_bound"] == 17)

    reader = Watcher(web.base_url, origin=stack.origin)
    assert reader.call("subscribe", {"channel": "book", "symbol": sym})["ok"]
    time.sleep(2.5)  # a health report after the subscription
    read_before = health()["entries"]
    # A backlog of N tickers spread over N ms of stream time, the newest one marked.
    n = 30_000
    top = stack.redis.xrevrange(book, count=1)
    first_ms = int(top[0][0].split(b"-")[0]) + 1 if top else int(time.time() * 1000)
    with stack.redis.pipeline(transaction=False) as p:
        for i in range(n):
            qty = Decimal("7.777") if i == n - 1 else Decimal(1)
            t = BookTicker(sym, i + 1, Decimal(100), qty, Decimal(101), Decimal(1), first_ms + i,
                           first_ms + i, first_ms + i)  # fmt: skip
            p.xadd(book, {ENTRY_FIELD: encode(t)}, id=f"{first_ms + i}-0")
        p.execute()
    newest = reader.wait("the newest ticker", lambda: [
        r["data"] for r in md_rooms(reader, f"b:{sym}") if r["data"]["update_id"] == n
    ], timeout_s=60)  # fmt: skip
    assert newest[-1]["bid_qty"] == "7.777"
    time.sleep(2.5)
    h = health()
    assert h["conflated"] >= 1, h
    assert h["conflated_ms"] > n // 2, h
    assert h["entries"] - read_before < n // 2, (read_before, h)  # the backlog was not read
    assert h["full_reads"] >= 1, h
    reader.close()
