"""One Binance websocket connection carrying a fixed set of streams on one route.

It connects to ``<route>/stream`` (combined mode: every frame names its stream), subscribes with
control messages paced under Binance's 10 incoming messages per second, reads frames and hands
each one, parsed, to the feeder. It reconnects by itself with exponential backoff and full
jitter.

The websocket client is picows (Cython): it parses a frame in ~0.5 µs where the websockets
library's asyncio client took ~5 µs, a third of the feeder's CPU per event (bench/RESULTS.md,
issue 19). picows answers the server's pings, and pings of our own (after 20 s without a frame)
detect a dead TCP path. It hands every frame of one socket read to :meth:`_Listener.on_ws_frame`
synchronously, and it grows its read buffer whenever a read fills it: saturated, one read would
grow to many MiB and run for seconds while the Redis writer, another task of the same loop,
waited (the outbox filled and shed, RSS reached ~1 GB). So a read is capped at
:data:`READ_MAX_BYTES` (:class:`_BoundedReads`): the loop turns over after at most that much,
the writer gets its turn, and what we have not read stays in the kernel's buffer, where TCP
pushes back on the exchange.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Literal

import orjson
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

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
OPEN_TIMEOUT_S = 10.0
PING_IDLE_S = 20.0  # no frame for this long: ping; no pong within PING_REPLY_S: reconnect
PING_REPLY_S = 20.0
CLOSE_TIMEOUT_S = 2.0
MAX_MESSAGE_BYTES = 2**20  # Binance's frames are < 4 KiB; a bigger message is refused
# One socket read at most: ~300 market frames, ~3 ms of the feeder's CPU. Every connection reads
# at most this much per turn of the event loop, so the writer runs at least that often.
READ_MAX_BYTES = 64 * 1024


class _BoundedReads(asyncio.BufferedProtocol):
    """Puts itself between a transport and picows's protocol to cap the size of every read.

    picows's protocol offers its whole read buffer to the transport and doubles the buffer
    whenever a read fills it (see the module docstring); this offers at most
    :data:`READ_MAX_BYTES` of it. Everything else is passed through unchanged.
    """

    def __init__(self, inner: asyncio.BufferedProtocol) -> None:
        self._inner = inner

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._inner.get_buffer(sizehint))[:READ_MAX_BYTES]

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Listener(WSListener):
    """picows's callbacks for one connection: messages to :meth:`FeedConnection.on_message`."""

    def __init__(self, conn: FeedConnection) -> None:
        self.conn = conn
        self.fragments: list[bytes] = []  # a message split over frames (Binance does not)
        self.fragment_bytes = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT and frame.fin and not self.fragments:
            self.conn.on_message(frame.get_payload_as_bytes())
        elif kind is WSMsgType.CLOSE:
            self.conn.close_code = frame.get_close_code().value
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        elif kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.CONTINUATION:
            self._fragment(transport, frame)

    def _fragment(self, transport: WSTransport, frame: WSFrame) -> None:
        self.fragment_bytes += frame.payload_size
        if self.fragment_bytes > MAX_MESSAGE_BYTES:
            self.conn.on_bad_frame(self.conn, "message over 1 MiB: connection closed", b"")
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
            transport.disconnect()
            return
        self.fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            message = b"".join(self.fragments)
            self.fragments.clear()
            self.fragment_bytes = 0
            self.conn.on_message(message)


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
        self.close_code: int | None = None  # the server's, from its close frame
        # Exchange event times (`E`) of the first and the latest data frame: a replacement knows
        # the old connection has caught up when the old one delivers a later event than the
        # new one's first (everything sent before that was sent to the old one only).
        self.first_event_ms = 0
        self.last_event_ms = 0
        self.control_errors = 0
        self.delivering = asyncio.Event()  # set at the first data frame
        self.subscribed = asyncio.Event()  # set when every SUBSCRIBE was sent and acknowledged
        self._ws: WSTransport | None = None
        self._stopping = False
        self._next_id = 1
        self._pending_acks: set[int] = set()

    async def run(self) -> None:
        """Connect, subscribe and read until stop(); reconnect after every failure."""
        attempt = 0
        while not self._stopping:
            self.state = "connecting"
            self.close_code = None
            started = time.monotonic()
            try:
                ws, _ = await ws_connect(
                    lambda: _Listener(self), self.url, use_aiofastnet=False,
                    websocket_handshake_timeout=OPEN_TIMEOUT_S, max_frame_size=MAX_MESSAGE_BYTES,
                    enable_auto_ping=True, auto_ping_idle_timeout=PING_IDLE_S,
                    auto_ping_reply_timeout=PING_REPLY_S,
                )  # fmt: skip
                await self._serve(ws)
            except (OSError, WSError, TimeoutError) as exc:
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

    async def _serve(self, ws: WSTransport) -> None:
        """Subscribe on a new connection and return when it is closed."""
        inner = ws.underlying_transport.get_protocol()
        ws.underlying_transport.set_protocol(_BoundedReads(inner))  # type: ignore[arg-type]
        self._ws = ws
        self.subscribed.clear()
        self.connected_at_ms = self.last_frame_ms = now_ms()
        closed = asyncio.ensure_future(ws.wait_disconnected())
        try:
            await self._send_control(ws, "SUBSCRIBE", self.streams, closed)
            self._check_subscribed()
            await closed
        finally:
            if not closed.done():
                ws.disconnect(graceful=False)
                await asyncio.shield(closed)
        if not self._stopping:
            log.warning("%s: connection lost: closed by the server (%s)", self.name,
                        self.close_code or "no close frame", extra={"conn": self.name})  # fmt: skip

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            ws.send_close(WSCloseCode.OK)
            ws.disconnect()  # graceful: once what we wrote is sent
            try:
                await asyncio.wait_for(ws.wait_disconnected(), CLOSE_TIMEOUT_S)
            except TimeoutError:  # a peer that does not read: drop the connection
                ws.disconnect(graceful=False)

    async def _send_control(
        self,
        ws: WSTransport,
        method: Literal["SUBSCRIBE", "UNSUBSCRIBE"],
        streams: Sequence[str],
        closed: asyncio.Future[None],
    ) -> None:
        self.state = "subscribing"
        for msg in control_messages(method, streams, self._next_id):
            if closed.done():
                return
            self._next_id += 1
            self._pending_acks.add(msg["id"])
            ws.send(WSMsgType.TEXT, orjson.dumps(msg))
            await asyncio.sleep(CONTROL_INTERVAL_S)
        self.state = "live"

    def on_message(self, frame: bytes) -> None:
        """One text message from the socket (called by picows, in the read's callback)."""
        received = now_ms()
        self.last_frame_ms = received
        try:
            parsed = parse_feed_frame(frame, received)
        except FrameError as exc:
            self.on_bad_frame(self, str(exc), frame)
            return
        event = parsed.event
        if type(event) is ControlReply:
            self._on_reply(event)
            return
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
