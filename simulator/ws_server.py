"""Websocket server: Binance's stream URLs, control messages, limits and the frame fan-out.

URL forms (reference §1.1): ``[/public|/market|/private]/ws[/<s1>/<s2>...]`` (raw) and
``[/public|/market|/private]/stream?streams=<s1>/<s2>`` (combined, ``{"stream":..,"data":..}``);
``/private/ws/<listenKey>``, ``/private/ws?listenKey=<k>&events=A/B`` and
``/private/stream?listenKey=<k>&events=..`` for user data. A stream is delivered only on its
route (``/public``: bookTicker, trade, depth; ``/market``: aggTrade, kline, markPrice...); an
unrouted ``/ws`` or ``/stream`` gets ``/public`` streams only. A stream on the wrong route is
acknowledged and then stays silent, as Binance does.

Fan-out: each event is serialized once by :mod:`simulator.payloads`, framed once (server frames
are unmasked and the server negotiates no compression, so the same bytes suit every client), and
appended to each subscriber's pending list; :meth:`Hub.flush` writes each connection's list with one
``writelines``. The transport's write buffer is the per-connection send queue: past
``max_buffer_bytes`` the client is disconnected (counted as ``slowDisconnects``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from simulator.faults import Faults, drop_matches
from simulator.trading import UserStreamClosedError

log = logging.getLogger(__name__)

_SYM = r"[a-z0-9_]+"
_IV = r"(?:1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)"
_PUBLIC = re.compile(
    rf"^(?:{_SYM}@(?:bookTicker|trade|depth(?:5|10|20)?(?:@(?:100|250|500)ms)?|rpiDepth@500ms)"
    r"|!bookTicker)$"
)
_MARKET = re.compile(
    rf"^(?:{_SYM}@(?:aggTrade|markPrice(?:@1s)?|kline_{_IV}|continuousKline_{_IV}|miniTicker"
    rf"|ticker|forceOrder|compositeIndex|assetIndex)"
    r"|!markPrice@arr(?:@1s)?|!miniTicker@arr|!ticker@arr|!forceOrder@arr|!contractInfo"
    r"|!assetIndex@arr)$"
)
ROUTES = ("public", "market", "private")
ILLEGAL_FORMAT = '{"code":-1,"msg":"Illegal format ws or stream"}'
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_METHOD_VALUE = re.compile(r'"method"\s*:\s*"((?:[^"\\]|\\.)*)"')


def stream_route(stream: str) -> str | None:
    """Return ``"public"`` or ``"market"`` for a valid stream name, None if it is invalid."""
    if _PUBLIC.match(stream):
        return "public"
    if _MARKET.match(stream):
        return "market"
    return None


def delivers(route: str | None, stream: str) -> bool:
    """True if a connection on ``route`` (None: unrouted legacy URL) receives ``stream``."""
    kind = stream_route(stream)
    return kind == route or (route is None and kind == "public")


def ws_text_frame(payload: bytes) -> bytes:
    """Return one unmasked, unfragmented text frame (RFC 6455 §5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


@dataclass(slots=True)
class ParsedPath:
    route: str | None
    combined: bool
    streams: list[str] = field(default_factory=list)
    listen_keys: list[tuple[str, frozenset[str] | None]] = field(default_factory=list)


def parse_path(raw: str) -> ParsedPath | None:
    """Parse a request target into route, mode and streams; None if Binance would reject it."""
    path, _, query = raw.partition("?")
    parts = path.split("/")[1:]
    if parts and parts[-1] == "":
        parts.pop()
    route = parts.pop(0) if parts and parts[0] in ROUTES else None
    if not parts or parts[0] not in ("ws", "stream"):
        return None
    mode, rest = parts[0], parts[1:]
    pairs = parse_qsl(query, keep_blank_values=True)
    parsed = ParsedPath(route, combined=mode == "stream")
    if route == "private":
        if mode == "ws" and rest:
            if len(rest) != 1 or query:
                return None
            parsed.listen_keys.append((rest[0], None))
            return parsed
        if rest:
            return None
        for key, value in pairs:
            if key == "listenKey" and value:
                parsed.listen_keys.append((value, None))
            elif key == "events" and parsed.listen_keys:
                events = frozenset(e for e in value.split("/") if e)
                parsed.listen_keys[-1] = (parsed.listen_keys[-1][0], events or None)
            else:
                return None
        return parsed if parsed.listen_keys else None
    if mode == "ws":
        if query:  # e.g. /ws?btcusdt@depth is not a supported form
            return None
        parsed.streams = rest
    else:
        if rest:
            return None
        streams = [v for k, v in pairs if k == "streams"]
        if len(pairs) != len(streams) or len(streams) > 1:
            return None
        parsed.streams = streams[0].split("/") if streams and streams[0] else []
    if any(stream_route(s) is None for s in parsed.streams):
        return None
    return parsed


class UserStreamLike(Protocol):
    async def get(self) -> bytes: ...

    def close(self) -> None: ...

    @property
    def closed_reason(self) -> str | None: ...


OpenUserStream = Callable[[str, frozenset[str] | None], UserStreamLike | None]


@dataclass(frozen=True, slots=True)
class WsLimits:
    """Per-connection limits (reference §1.2); every one configurable."""

    max_streams: int = 1024
    msg_rate: int = 10  # incoming messages per second
    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    lifetime_s: float = 24 * 3600.0
    max_buffer_bytes: int = 8 * 1024 * 1024  # a slower client is disconnected


class Conn:
    """One websocket client."""

    __slots__ = (
        "combined", "delayed", "dirty", "dup_n", "held", "id", "last_pong", "msg_times",
        "out", "path", "route", "stream_set", "streams", "tasks", "transport", "user_streams",
        "ws",
    )  # fmt: skip

    def __init__(self, ws: ServerConnection, conn_id: int, parsed: ParsedPath) -> None:
        self.ws = ws
        self.id = conn_id
        self.path = ws.request.path if ws.request else ""
        self.route = parsed.route
        self.combined = parsed.combined
        self.streams: list[str] = []  # in subscription order, as LIST_SUBSCRIPTIONS shows
        self.stream_set: set[str] = set()
        self.out: list[bytes] = []
        self.dirty = False
        self.transport: asyncio.Transport = ws.transport
        self.msg_times: deque[float] = deque()
        self.delayed: deque[tuple[float, list[bytes]]] = deque()
        self.held: bytes | None = None
        self.dup_n = 0
        self.last_pong = 0.0
        self.tasks: list[asyncio.Task[None]] = []
        self.user_streams: list[UserStreamLike] = []


class Hub:
    """Every connection and subscription; publish/flush fan frames out."""

    def __init__(
        self,
        limits: WsLimits,
        faults: Faults,
        *,
        open_user_stream: OpenUserStream | None = None,
    ) -> None:
        self.limits = limits
        self.faults = faults
        self.open_user_stream = open_user_stream
        self.subs: dict[str, set[Conn]] = {}  # only deliverable subscriptions
        self.conns: set[Conn] = set()
        self._dirty: list[Conn] = []
        self._waiting: set[Conn] = set()  # conns holding delayed or reordered frames
        self._ids = itertools.count(1)
        self.counters = dict.fromkeys(
            (
                "connections", "framesPublished", "framesSent", "slowDisconnects",
                "rateLimitCloses", "pongTimeoutCloses", "lifetimeCloses", "illegalUrlCloses",
                "dropped", "refused",
            ),
            0,
        )  # fmt: skip

    # --- publishing ---------------------------------------------------------------------------

    def has(self, stream: str) -> bool:
        return stream in self.subs

    def publish(self, stream: str, payload: bytes) -> None:
        """Queue ``payload`` for every connection that receives ``stream``."""
        conns = self.subs.get(stream)
        if not conns:
            return
        if self.faults.frame_faults and self.faults.is_stalled(stream):
            return
        self.counters["framesPublished"] += 1
        raw = wrapped = None
        dirty = self._dirty
        for c in conns:
            if c.combined:
                if wrapped is None:
                    wrapped = ws_text_frame(
                        b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"
                    )
                c.out.append(wrapped)
            else:
                if raw is None:
                    raw = ws_text_frame(payload)
                c.out.append(raw)
            if not c.dirty:
                c.dirty = True
                dirty.append(c)

    def flush(self) -> None:
        """Write every connection's pending frames (one write each), applying frame faults."""
        dirty, self._dirty = self._dirty, []
        if self._waiting:
            dirty.extend(c for c in self._waiting if not c.dirty)
        loop_time = asyncio.get_running_loop().time()
        faulty = self.faults.frame_faults
        sent = 0
        for c in dirty:
            c.dirty = False
            frames, c.out = c.out, []
            if c.ws.state is not State.OPEN:
                continue
            if faulty or c.delayed or c.held is not None:
                frames = self._apply_faults(c, frames, loop_time)
            if frames:
                c.transport.writelines(frames)
                sent += len(frames)
                if c.transport.get_write_buffer_size() > self.limits.max_buffer_bytes:
                    self.counters["slowDisconnects"] += 1
                    log.warning(
                        "disconnecting slow client %s (send buffer over %d bytes)",
                        c.id,
                        self.limits.max_buffer_bytes,
                        extra={"conn": c.id, "path": c.path[:120]},
                    )
                    c.transport.abort()
        self.counters["framesSent"] += sent

    def _apply_faults(self, c: Conn, frames: list[bytes], now: float) -> list[bytes]:
        delay_ms, every, reorder = self.faults.frame_effects(c.path, c.stream_set)
        if every:
            doubled: list[bytes] = []
            for f in frames:
                doubled.append(f)
                c.dup_n += 1
                if c.dup_n % every == 0:
                    doubled.append(f)
            frames = doubled
        if reorder:
            swapped: list[bytes] = []
            for f in frames:
                if c.held is None:
                    c.held = f
                else:
                    swapped += (f, c.held)
                    c.held = None
            frames = swapped
        elif c.held is not None:
            frames.insert(0, c.held)
            c.held = None
        if delay_ms or c.delayed:
            if frames:
                c.delayed.append((now + delay_ms / 1000, frames))
            frames = []
            while c.delayed and c.delayed[0][0] <= now:
                frames += c.delayed.popleft()[1]
        if c.delayed or c.held is not None:
            self._waiting.add(c)
        else:
            self._waiting.discard(c)
        return frames

    # --- subscriptions ------------------------------------------------------------------------

    def _subscribe(self, c: Conn, streams: list[str]) -> None:
        for s in streams:
            if s in c.stream_set:
                continue
            c.streams.append(s)
            c.stream_set.add(s)
            if delivers(c.route, s):
                self.subs.setdefault(s, set()).add(c)

    def _unsubscribe(self, c: Conn, streams: list[str]) -> None:
        for s in streams:
            if s not in c.stream_set:
                continue
            c.stream_set.discard(s)
            c.streams.remove(s)
            conns = self.subs.get(s)
            if conns is not None:
                conns.discard(c)
                if not conns:
                    del self.subs[s]

    # --- actions ------------------------------------------------------------------------------

    def drop(self, params: Mapping[str, Any]) -> int:
        """Close connections matching a ``drop`` fault; return how many."""
        n = 0
        for c in list(self.conns):
            if drop_matches(params, c.path, c.stream_set):
                n += 1
                if params.get("abort", True):
                    c.transport.abort()
                else:
                    c.tasks.append(asyncio.ensure_future(c.ws.close(1001, "")))
        self.counters["dropped"] += n
        log.info("dropped %d websocket connections", n, extra={"fault": dict(params)})
        return n

    def abort_all(self) -> int:
        return self.drop({"abort": True})

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Reject the handshake with 503 while a ``refuse`` or ``down`` fault is active."""
        if self.faults.refusing() or self.faults.down_until_ms() is not None:
            self.counters["refused"] += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable.\n")
        return None

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "open": len(self.conns),
            "subscribedStreams": len(self.subs),
            "sendBufferBound": self.limits.max_buffer_bytes,
            "sendBufferMax": max(
                (c.transport.get_write_buffer_size() for c in self.conns), default=0
            ),
        }

    # --- one connection -----------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        """Serve one websocket connection until it closes."""
        assert ws.request is not None  # noqa: S101  (the handshake has completed)
        parsed = parse_path(ws.request.path)
        if parsed is None or len(parsed.streams) > self.limits.max_streams:
            self.counters["illegalUrlCloses"] += 1
            await ws.close(1008, ILLEGAL_FORMAT)
            return
        c = Conn(ws, next(self._ids), parsed)
        loop = asyncio.get_running_loop()
        c.last_pong = loop.time()
        self.counters["connections"] += 1
        self.conns.add(c)
        self._subscribe(c, parsed.streams)
        log.debug("open %s", c.path, extra={"conn": c.id})
        try:
            if parsed.listen_keys and not self._open_user_streams(c, parsed):
                await ws.close(1008, '{"code":-1125,"msg":"This listenKey does not exist."}')
                return
            c.tasks.append(asyncio.create_task(self._supervise(c)))
            async for message in ws:
                if self._over_rate(c, loop.time()):
                    self.counters["rateLimitCloses"] += 1
                    await ws.close(1008, "Too many requests")
                    break
                reply = self._control(c, message)
                if reply is not None:
                    await ws.send(reply, text=True)
        except ConnectionClosed:
            pass
        finally:
            self._unsubscribe(c, list(c.streams))
            self.conns.discard(c)
            self._waiting.discard(c)
            for t in c.tasks:
                t.cancel()
            for us in c.user_streams:
                us.close()

    def _over_rate(self, c: Conn, now: float) -> bool:
        times = c.msg_times
        times.append(now)
        while times and times[0] <= now - 1.0:
            times.popleft()
        return len(times) > self.limits.msg_rate

    async def _supervise(self, c: Conn) -> None:
        """Ping every interval; close on a missing pong or at the end of the lifetime."""
        lim, ws = self.limits, c.ws
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_ping = started + lim.ping_interval_s
        end_of_life = started + lim.lifetime_s

        def on_pong(fut: asyncio.Future[float]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                c.last_pong = loop.time()

        try:
            while ws.state is State.OPEN:
                now = loop.time()
                if now >= end_of_life:
                    self.counters["lifetimeCloses"] += 1
                    await ws.close(1001, "Connection lifetime expired")
                    return
                if now - c.last_pong >= lim.pong_timeout_s:
                    self.counters["pongTimeoutCloses"] += 1
                    await ws.close(1011, "keepalive ping timeout")
                    return
                if now >= next_ping:
                    waiter = await ws.ping()
                    asyncio.ensure_future(waiter).add_done_callback(on_pong)
                    next_ping = now + lim.ping_interval_s
                wake = min(next_ping, end_of_life, c.last_pong + lim.pong_timeout_s)
                await asyncio.sleep(max(0.0, wake - loop.time()) + 0.001)
        except ConnectionClosed:
            pass

    # --- user data ----------------------------------------------------------------------------

    def _open_user_streams(self, c: Conn, parsed: ParsedPath) -> bool:
        if self.open_user_stream is None:
            log.warning("user-data stream requested but the trading engine is not available")
            return False
        for key, events in parsed.listen_keys:
            us = self.open_user_stream(key, events)
            if us is None:
                return False
            c.user_streams.append(us)
            c.tasks.append(asyncio.create_task(self._pump(c, key, us)))
        return True

    async def _pump(self, c: Conn, key: str, us: UserStreamLike) -> None:
        prefix = b'{"stream":"' + key.encode() + b'","data":'
        try:
            while True:
                payload = await us.get()
                frame = prefix + payload + b"}" if c.combined else payload
                await c.ws.send(frame, text=True)
        except UserStreamClosedError:
            # e.g. after listenKeyExpired: the socket stays open but this key sends nothing more
            log.info("user stream ended: %s", us.closed_reason, extra={"conn": c.id})
        except ConnectionClosed:
            pass

    # --- control messages (reference §1.3) ----------------------------------------------------

    def _control(self, c: Conn, message: str | bytes) -> str | None:
        text = message.decode(errors="replace") if isinstance(message, bytes) else message
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return _error(
                3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}"
            )
        if not isinstance(req, dict):
            return _error(2, "Invalid request: expected a JSON object")
        method = req.get("method")
        if "method" not in req:
            return _error(
                2, f"Invalid request: missing field `method` at line 1 column {len(text)}"
            )
        if method not in METHODS:
            m = _METHOD_VALUE.search(text)
            column = m.end() if m else len(text)
            expected = ", ".join(f"`{x}`" for x in METHODS)
            return _error(
                2,
                f"Invalid request: unknown variant `{method}`, expected one of {expected} "
                f"at line 1 column {column}",
            )
        rid = req.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool) or rid < 0:
            return _error(2, "Invalid request: request ID must be an unsigned integer")
        params = req.get("params", [])
        if not isinstance(params, list):
            return _error(2, "Invalid request: params must be an array", rid)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(s, str) and stream_route(s) is not None for s in params):
                return _error(2, "Invalid request: invalid stream", rid)
            if method == "SUBSCRIBE":
                new = {s for s in params if s not in c.stream_set}
                if len(c.streams) + len(new) > self.limits.max_streams:
                    return _error(2, "Invalid request: too many streams", rid)
                self._subscribe(c, params)
            else:
                self._unsubscribe(c, params)
            return _result(None, rid)
        if method == "LIST_SUBSCRIPTIONS":
            return _result(list(c.streams), rid)
        if len(params) > (2 if method == "SET_PROPERTY" else 1):
            return _error(2, "Invalid request: too many parameters", rid)
        if not params or not isinstance(params[0], str):
            return _error(2, "Invalid request: property name must be a string", rid)
        if params[0] != "combined":
            return _error(0, "Unknown property", rid)
        if method == "GET_PROPERTY":
            return _result(c.combined, rid)
        if len(params) < 2 or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", rid)
        c.combined = params[1]
        return _result(None, rid)


def _result(result: Any, rid: int) -> str:
    return orjson.dumps({"result": result, "id": rid}).decode()


def _error(code: int, msg: str, rid: int | None = None) -> str:
    # Wire shape {"error":{"code":..,"msg":..},"id":..}: clients (ccxt's handleWsError) read
    # message["error"]; the docs list only the inner object.
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": rid}).decode()
