"""Socket.IO events: authenticate at connect, subscribe with a snapshot, reauth, disconnect.

docs/architecture.md "Web / Socket.IO" is the protocol. Live data is sent by the pump
(web/fanout.py), never by these handlers; a subscription is held back from the pump until its
snapshot has been queued, so a client always sees its snapshot before the live updates.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, emit, join_room

from core.clock import now_ms
from core.errors import TokenError
from web.market import MAX_SINCE
from web.rooms import CHANNELS, ROOM_KEYS, SYMBOL_ONLY, Client, room_name
from web.services import socketio, web
from web.trade_events import user_room
from web.transport import WholeFrameSocket

log = logging.getLogger(__name__)
PUMP_WAIT_S = 5.0  # a subscription waits this long for a starting pump, then is refused
_CHANNEL_OF = {kind: channel for channel, kind in CHANNELS.items()}


def _refuse(code: str, message: str) -> None:
    # The browser's connect_error gets ``err.message`` and ``err.data = {error: code}``.
    raise ConnectionRefusedError(message, {"error": code})


def _check_token(token: Any) -> Any:
    w = web()
    if not isinstance(token, str) or not token:
        _refuse("invalid_token", "auth.token must be an access token")
    try:
        claims = w.keyring.verify(token, audience="web")
    except TokenError as exc:
        _refuse(exc.code, exc.message)
    if not w.sessions.alive(claims.family):
        _refuse("token_revoked", "this session was signed out or revoked")
    return claims


@socketio.on("connect")
def on_connect(auth: Any = None) -> None:
    w = web()
    token = auth.get("token") if isinstance(auth, dict) else None
    claims = None
    if token is not None:
        claims = _check_token(token)
    elif not w.settings.web.anonymous:
        _refuse("unauthorized", "sign in first: connect with auth {token}")
    sid: str = request.sid  # type: ignore[attr-defined]
    client = Client(sid, socketio.server.manager.eio_sid_from_sid(sid, "/"))
    sock = request.environ.get("gunicorn.socket")
    if isinstance(sock, WholeFrameSocket):
        client.socket = sock
    if claims is not None:
        client.address, client.family = claims.address, claims.family
        client.expires_at_s = claims.expires_at_s
        join_room(f"f:{claims.family}")  # revocation reaches it from any web process
        join_room(user_room(claims.address))  # its order events (web/trade_events.py)
    w.registry.connect(client)


@socketio.on("disconnect")
def on_disconnect(reason: Any = None) -> None:
    web().registry.disconnect(request.sid)  # type: ignore[attr-defined]


def _parse(data: Any) -> tuple[str, str, str | None] | dict[str, Any]:
    """Return (kind, symbol, timeframe) of a subscription request, or the refusal to ack."""
    channel = data.get("channel") if isinstance(data, dict) else None
    if not isinstance(channel, str) or channel not in CHANNELS:
        return _no(
            "bad_request", "expected {channel: candles|signals|book|mark|trades, symbol, timeframe}"
        )
    kind = CHANNELS[channel]
    symbol, timeframe = data.get("symbol"), data.get("timeframe")
    problem = web().market.check(symbol, timeframe, need_tf=kind not in SYMBOL_ONLY)
    if problem:
        return _no(problem, f"not served here: {symbol!r} {timeframe!r}")
    return kind, str(symbol), (None if kind in SYMBOL_ONLY else str(timeframe))


def _no(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


@socketio.on("subscribe")
def on_subscribe(data: Any = None) -> dict[str, Any]:
    w = web()
    sid: str = request.sid  # type: ignore[attr-defined]
    parsed = _parse(data)
    if isinstance(parsed, dict):
        return parsed
    kind, symbol, timeframe = parsed
    since = data.get("since") if kind == "c" else None
    if since is not None and (type(since) is not int or since < 0):
        return _no("bad_request", "since must be an open time in ms")
    name = room_name(kind, symbol, timeframe)
    if sid not in w.registry.clients:
        return _no("bad_request", "not connected")
    # A web process just started (Redis may be down): its pump reads from the streams' newest
    # entries once it can, and a snapshot read before that would miss what lands in between.
    if not w.pump.positioned.wait(PUMP_WAIT_S):
        return _no("unavailable", "live updates are not flowing yet; try again")
    room = w.registry.hold(sid, name)
    if room is None:
        limit = w.settings.web.max_subscriptions
        return _no("too_many_subscriptions", f"at most {limit} subscriptions per connection")
    try:
        snapshot: dict[str, Any] = {"room": name}
        if kind == "c" and timeframe and since is None:
            limit = w.settings.web.snapshot_candles
            snapshot["candles"] = w.market.candles(symbol, timeframe, limit=limit)[0]
        elif kind == "c" and timeframe:
            # A client coming back says from which open time its candles may be out of date
            # (issue 16: repairs landed while it was away, older than a plain snapshot reaches).
            limit = max(w.settings.web.snapshot_candles, MAX_SINCE)
            candles, older = w.market.candles(symbol, timeframe, limit=limit, since=since)
            snapshot.update(candles=candles, since=since, truncated=older is not None)
        elif kind == "s" and timeframe:
            snapshot["signals"] = w.market.signals(symbol, timeframe)
        elif kind == "t":
            snapshot["trades"] = w.market.recent_trades(symbol, ROOM_KEYS["t"])
        else:  # book, mark: the latest value the pump has seen, if any (the next one follows)
            snapshot[_CHANNEL_OF[kind]] = room.snapshot()[0] if room.state else None
        # To this connection only, never through the message queue (every web process would
        # receive and decode a 300-candle snapshot meant for one of them).
        emit("snapshot", snapshot, ignore_queue=True)
    except Exception:
        w.registry.leave(sid, name)
        log.exception("snapshot of %s failed", name)
        return _no("unavailable", "the snapshot could not be read; try again")
    w.registry.release(sid, name)
    return {"ok": True, "room": name}


@socketio.on("unsubscribe")
def on_unsubscribe(data: Any = None) -> dict[str, Any]:
    parsed = _parse(data)
    if isinstance(parsed, dict):
        return parsed
    name = room_name(*parsed)
    if not web().registry.leave(request.sid, name):  # type: ignore[attr-defined]
        return _no("not_subscribed", f"not subscribed to {name}")
    return {"ok": True, "room": name}


@socketio.on("reauth")
def on_reauth(data: Any = None) -> dict[str, Any]:
    """Replace the connection's token (before it expires) with a refreshed one."""
    w = web()
    client = w.registry.clients.get(request.sid)  # type: ignore[attr-defined]
    if client is None:
        return _no("bad_request", "not connected")
    try:
        claims = _check_token(data.get("token") if isinstance(data, dict) else None)
    except ConnectionRefusedError as exc:
        return _no(exc.error_args["data"]["error"], exc.error_args["message"])
    if client.address is not None and claims.address != client.address:
        return _no("invalid_token", "a token for another address")
    if client.family != claims.family:
        join_room(f"f:{claims.family}")
    client.address, client.family = claims.address, claims.family
    client.expires_at_s = claims.expires_at_s
    return {"ok": True, "expires_at": claims.expires_at_s * 1000}


@socketio.on("trade")
def on_trade(data: Any = None) -> dict[str, Any]:
    """A trade command: ``{"action": place|cancel|cancel_all|close|leverage|margin_type, ...}``
    with the fields of the matching REST call; the ack is the REST answer's body."""
    w = web()
    client = w.registry.clients.get(request.sid)  # type: ignore[attr-defined]
    if client is None or client.address is None:
        return _no("unauthorized", "sign in first: connect with auth {token}")
    if client.expires_at_s is not None and client.expires_at_s * 1000 < now_ms():
        return _no("token_expired", "the access token expired: reauth first")
    if client.family is None:
        return _no("token_revoked", "this session was signed out or revoked")
    action = data.get("action") if isinstance(data, dict) else None
    if action not in ("place", "cancel", "cancel_all", "close", "leverage", "margin_type"):
        return _no("bad_action", "action must be place, cancel, cancel_all, close, leverage or "
                   "margin_type")  # fmt: skip
    # The login is checked alive in the command's first round trip (web/commands.py).
    _, answer = w.trading.execute(client.address, str(action), data, family=client.family)
    return answer
