"""The feeder's websocket connection (binance/market_ws.py, on picows) against a real websocket
server (the `websockets` library, as the simulator uses): what a server may legally do that the
recorded Binance traffic never shows (fragmented messages, an oversized one, a close frame), and
the bound on how much one socket read may hand to the feeder before the event loop turns over."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve

from binance.market_ws import MAX_MESSAGE_BYTES, READ_MAX_BYTES, FeedConnection
from binance.parse import FeedParsed

Handler = Callable[[ServerConnection], Awaitable[None]]


def agg_trade(trade_id: int, pad: int = 0) -> bytes:
    data = {"e": "aggTrade", "E": 1_700_000_000_000 + trade_id, "s": "BTCUSDT", "a": trade_id,
            "p": "100.5", "q": "0." + "1" * (1 + pad), "f": trade_id, "l": trade_id,
            "T": 1_700_000_000_000 + trade_id, "m": False}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


async def answer_subscribe(ws: ServerConnection) -> None:
    msg = orjson.loads(await ws.recv())
    await ws.send(orjson.dumps({"result": None, "id": msg["id"]}).decode())


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    sock = socket.create_server(("127.0.0.1", 0))
    async with serve(handler, sock=sock, max_size=None, compression=None):
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/market/stream"


class Recorder:
    def __init__(self) -> None:
        self.events: list[FeedParsed] = []
        self.bad: list[str] = []

    def conn(self, url: str) -> FeedConnection:
        return FeedConnection("test", url, ["btcusdt@aggTrade"], on_event=self.on_event,
                              on_bad_frame=self.on_bad)  # fmt: skip

    def on_event(self, conn: FeedConnection, parsed: FeedParsed) -> None:
        self.events.append(parsed)

    def on_bad(self, conn: FeedConnection, error: str, frame: Any) -> None:
        self.bad.append(error)


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - polls state the connection sets from callbacks
            await asyncio.sleep(0.01)


def test_fragments_are_joined_and_an_oversized_message_closes_the_connection_not_the_feeder() -> (
    None
):
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await answer_subscribe(ws)
        if connections == 1:
            frame = agg_trade(1).decode()
            await ws.send([frame[:10], frame[10:40], frame[40:]])  # one message, three frames
            chunk = "x" * 65536
            await ws.send([chunk] * (MAX_MESSAGE_BYTES // 65536 + 2))  # over the bound
            await ws.wait_closed()
        else:
            await ws.send(agg_trade(2))
            await ws.close(1001, "going away")

    async def main() -> tuple[Recorder, FeedConnection]:
        rec = Recorder()
        async with server(handler) as url:
            conn = rec.conn(url)
            task = asyncio.create_task(conn.run())
            await until(lambda: len(rec.events) == 2 and conn.reconnects >= 2)
            await conn.stop()
            await asyncio.wait_for(task, 10)
        return rec, conn

    rec, conn = asyncio.run(main())
    assert [e.event.trade_id for e in rec.events] == [1, 2]  # type: ignore[union-attr]
    assert rec.bad == ["message over 1 MiB: connection closed"]
    assert conn.close_code == 1001  # the server's close frame was read, and answered
    assert conn.state == "stopped"


def test_one_socket_read_hands_the_feeder_at_most_its_bound_before_the_loop_turns_over() -> None:
    frames = [agg_trade(i, pad=150) for i in range(1, 6001)]  # ~1.4 MB, ~240 bytes each

    async def handler(ws: ServerConnection) -> None:
        await answer_subscribe(ws)
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async def main() -> tuple[Recorder, list[int]]:
        rec = Recorder()
        per_turn: list[int] = []
        async with server(handler) as url:
            conn = rec.conn(url)
            task = asyncio.create_task(conn.run())
            await until(lambda: bool(rec.events))
            seen = 0
            while len(rec.events) < len(frames):  # another task of the loop, like the writer
                await asyncio.sleep(0)
                per_turn.append(len(rec.events) - seen)
                seen = len(rec.events)
            await conn.stop()
            await asyncio.wait_for(task, 10)
        return rec, per_turn

    rec, per_turn = asyncio.run(main())
    assert len(rec.events) == len(frames)  # nothing lost
    most = READ_MAX_BYTES // (len(frames[0]) + 4) + 1  # +4: the frame's header
    assert max(per_turn) <= most, (max(per_turn), most)
    assert sum(1 for n in per_turn if n) > len(frames) // most  # it did read in many turns
