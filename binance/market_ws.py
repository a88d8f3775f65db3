"""One Binance websocket connection carrying a fixed set of streams on one route.

It connects to ``<route>/stream`` (combined mode: every frame names its stream), subscribes with
control messages paced under Binance's 10 incoming messages per second, reads frames and hands
each one, parsed, to the feeder. It reconnects by itself with exponential backoff and full
jitter; the websockets library answers the server's pings, and our own pings detect a dead TCP
path. The receive queue is bounded (``max_queue``): if we fall behind, TCP pushes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from binance.parse import ControlReply, FeedParsed, parse_feed_frame
from binance.streams import control_messages
from core.clock import now_ms
from core.errors import FrameError

log = logging.getLogger(__name__)
State = Literal["connecting", "subscribing", "live", "backoff", "stopped"]
CONTROL_INTERVAL_S = 0.25  # 4 control messages a second, well under Binance's 10
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
HEALTHY_AFTER_S = 30.0  # a connection up this long resets the backoff
# A reader hands the event loop over after this many frames. With frames already queued,
# `async for frame in ws` returns them without ever suspending, so under a burst the readers ran
# back to back and the Redis writer (another task of the loop) waited: it fell behind, the
# outbox filled and shed, and the cost of shedding kept the feeder overloaded (issue 19: ~45,000
# events/s read, ~16,000 written). Yielding every few frames gives every ready task a turn.
YIELD_EVERY_FRAMES = 16


class FeedConnection:
    """A self-healing websocket connection; see the module docstring."""

    def __init__(
        self,
        name: str,
        url: str,
        streams: Sequence[str],
        *,
        on_event: Callable[[FeedConnection, FeedParsed], None],
        on_bad_frame: Callable[[FeedConnection, str, str | bytes], None],
        on_subscribed: Callable[[FeedConnection], None] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.streams = list(streams)
        self.on_event = on_event
        self.on_bad_frame = on_bad_frame
        self.on_subscribed = on_subscribed
        self.state: State = "connecting"
        self.connected_at_ms = 0
        self.last_frame_ms = 0
        self.reconnects = 0
        # Exchange event times (`E`) of the first and the latest data frame: a replacement knows
        # the old connection has caught up when the old one delivers a later event than the
        # new one's first (everything sent before that was sent to the old one only).
        self.first_event_ms = 0
        self.last_event_ms = 0
        self.control_errors = 0
        self.delivering = asyncio.Event()  # set at the first data frame
        self.subscribed = asyncio.Event()  # set when every SUBSCRIBE was sent and acknowledged
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._next_id = 1
        self._pending_acks: set[int] = set()

    async def run(self) -> None:
        """Connect, subscribe and read until stop(); reconnect after every failure."""
        attempt = 0
        while not self._stopping:
            self.state = "connecting"
            started = time.monotonic()
            try:
                async with connect(
                    self.url, compression=None, max_size=2**20, max_queue=64,
                    open_timeout=10, ping_interval=20, ping_timeout=20, close_timeout=2,
                ) as ws:  # fmt: skip
                    self._ws = ws
                    self.subscribed.clear()
                    self.connected_at_ms = self.last_frame_ms = now_ms()
                    reader = asyncio.create_task(self._read(ws))
                    try:
                        await self._send_control(ws, "SUBSCRIBE", self.streams)
                        self._check_subscribed()
                        await reader
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader
            except (OSError, WebSocketException, TimeoutError) as exc:
                if not self._stopping:
                    log.warning(
                        "%s: connection lost: %r", self.name, exc, extra={"conn": self.name}
                    )
            finally:
                self._ws = None
            if self._stopping:
                break
            if time.monotonic() - started > HEALTHY_AFTER_S:
                attempt = 0
            self.state = "backoff"
            self.reconnects += 1
            delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))  # noqa: S311
            attempt += 1
            await asyncio.sleep(delay)
        self.state = "stopped"

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()

    async def _send_control(
        self,
        ws: ClientConnection,
        method: Literal["SUBSCRIBE", "UNSUBSCRIBE"],
        streams: Sequence[str],
    ) -> None:
        self.state = "subscribing"
        for msg in control_messages(method, streams, self._next_id):
            self._next_id += 1
            self._pending_acks.add(msg["id"])
            await ws.send(orjson.dumps(msg).decode())
            await asyncio.sleep(CONTROL_INTERVAL_S)
        self.state = "live"

    async def _read(self, ws: ClientConnection) -> None:
        since_yield = 0
        async for frame in ws:
            since_yield += 1
            if since_yield >= YIELD_EVERY_FRAMES:
                since_yield = 0
                await asyncio.sleep(0)  # let the writer (and every ready task) run
            received = now_ms()
            self.last_frame_ms = received
            try:
                parsed = parse_feed_frame(frame, received)
            except FrameError as exc:
                self.on_bad_frame(self, str(exc), frame)
                continue
            event = parsed.event
            if type(event) is ControlReply:
                self._on_reply(event)
                continue
            event_ms = getattr(event, "event_time_ms", 0)
            if event_ms > self.last_event_ms:
                self.last_event_ms = event_ms
            if not self.delivering.is_set():
                self.first_event_ms = event_ms
                self.delivering.set()
            self.on_event(self, parsed)

    def _check_subscribed(self) -> None:
        if not self._pending_acks and self.state == "live" and not self.subscribed.is_set():
            self.subscribed.set()
            if self.on_subscribed is not None:
                self.on_subscribed(self)

    def _on_reply(self, reply: ControlReply) -> None:
        if reply.id is not None:
            self._pending_acks.discard(reply.id)
            self._check_subscribed()
        if reply.error_code is not None:
            self.control_errors += 1
            log.error("%s: control message %s refused: %s %s", self.name, reply.id,
                      reply.error_code, reply.error_msg, extra={"conn": self.name})  # fmt: skip
