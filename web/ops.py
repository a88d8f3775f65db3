"""Blueprint ``/ops``: the operators' page and its JSON API (docs/architecture.md, "Ops page").

``GET /ops`` serves the static page; every ``/ops/api/...`` call needs a bearer token with
``aud=ops`` (issued only to ``TP_OPS_ADDRESSES``). What is listed and how it is retried or
deleted lives in ``ops/`` (shared with ``python -m ops``): failed Dramatiq messages
(``ops.failed``), dead-lettered stream entries (``ops.dead``), health (``ops.health``).
Destructive calls take at most ``MAX_BATCH`` ids, or sweep one batch of everything matching a
filter (``.../<action>-matching``, continued with the returned cursor); each call is logged and
appended to ``Keys.ops_audit()`` (``ops.audit``).
"""

from __future__ import annotations

import re
from typing import Any

import redis
from flask import Blueprint, current_app, g, jsonify, request

from core.clock import now_ms
from core.schemas import HEALTH_STALE_MS
from ops import MAX_BATCH, MAX_LIST, audit
from ops import dead as dead_letters
from ops import failed as failed_messages
from ops.failed import MESSAGE_ID, format_cursor, parse_cursor, valid_queue
from ops.health import counters, process_reports, queue_stats, signal_error_row, stream_lag
from web.auth import require
from web.errors import ApiError
from web.services import web

__all__ = ["MAX_BATCH", "MAX_LIST", "bp"]

bp = Blueprint("ops", __name__, url_prefix="/ops")


def _hash(key: str, r: redis.Redis) -> dict[bytes, bytes]:
    raw: Any = r.hgetall(key)
    return raw  # type: ignore[no-any-return]  # bytes responses (no decode_responses)


def _audited(action: str, target: str, results: dict[str, str], **extra: Any) -> Any:
    counts = audit.record(web().redis, web().keys, g.claims.address, action, target, results)
    return jsonify(results=results, counts=counts, **extra)


# --- request parsing -----------------------------------------------------------------------------


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _bad("expected a JSON object")
    return body


def _body(pattern: re.Pattern[str]) -> tuple[dict[str, Any], list[str]]:
    """Return the JSON object body and its ``ids`` (1..MAX_BATCH strings matching ``pattern``)."""
    body = request.get_json(silent=True)
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(ids, list) or not ids:
        raise _bad('expected a JSON object with "ids": a non-empty list')
    if len(ids) > MAX_BATCH:
        raise _bad(f"at most {MAX_BATCH} ids per call; send the rest in another batch")
    if not all(isinstance(i, str) and pattern.fullmatch(i) for i in ids):
        raise _bad("ids must be Redis message ids (failed) or stream entry ids (dead)")
    return body, list(dict.fromkeys(ids))  # an id twice in one call is acted on once


def _queue(value: Any) -> str:
    if not isinstance(value, str) or not valid_queue(value):
        raise _bad("queue must be a Dramatiq queue name (not its .DQ or .XQ)")
    return value


def _shard(value: Any) -> int:
    shards = web().keys.shards
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < shards:
        raise _bad(f"shard must be an integer within 0..{shards - 1}")
    return value


def _limit(default: int) -> int:
    raw = request.args.get("limit") or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise _bad(f"limit must be an integer within 1..{MAX_LIST}")
    return int(raw)


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise _bad(f"{name} must be a string")
    return value


# --- views -------------------------------------------------------------------------------------


@bp.get("")
def page() -> Any:
    return current_app.send_static_file("ops.html")


@bp.get("/api/failed")
@require("ops")
def failed() -> Any:
    r, k, queue = web().redis, web().keys, request.args.get("queue")
    actor, limit = request.args.get("actor") or None, _limit(100)
    rows, totals = [], {}
    for name in [_queue(queue)] if queue else failed_messages.queues(r, k):
        got, totals[name] = failed_messages.list_failed(r, k, name, actor, limit)
        rows += got
    rows.sort(key=lambda row: row["failed_at"], reverse=True)
    return jsonify(failed=rows[:limit], totals=totals, truncated=len(rows) > limit)


@bp.post("/api/failed/<any(retry, delete):action>")
@require("ops")
def failed_action(action: str) -> Any:
    r, k = web().redis, web().keys
    body, ids = _body(MESSAGE_ID)
    queue = _queue(body.get("queue"))
    results = failed_messages.act_on_failed(r, k, action, queue, ids)
    return _audited(f"failed.{action}", queue, results)


@bp.post("/api/failed/<any(retry, delete):action>-matching")
@require("ops")
def failed_matching(action: str) -> Any:
    """One batch of a sweep: every failed message of ``queue`` (of ``actor`` if given) that
    failed at or before ``before`` (ms; the page sends the time the operator confirmed), after
    ``cursor``. Answers ``next``: the cursor of the next batch, null when done."""
    r, k, body = web().redis, web().keys, _json()
    queue, actor = _queue(body.get("queue")), _optional_text(body, "actor")
    before = body.get("before")
    if isinstance(before, bool) or not isinstance(before, int) or before < 0:
        raise _bad("before must be a time in ms")
    try:
        after = parse_cursor(body["cursor"]) if body.get("cursor") else None
    except (TypeError, ValueError) as exc:
        raise _bad(f"cursor: {exc}") from None
    ids, cursor = failed_messages.select_failed(r, k, queue, actor=actor, before_ms=before,
                                                after=after)  # fmt: skip
    if not ids:
        return jsonify(results={}, counts={}, next=None)
    results = failed_messages.act_on_failed(r, k, action, queue, ids)
    return _audited(f"failed.{action}", queue, results, next=format_cursor(cursor))


@bp.get("/api/dead")
@require("ops")
def dead() -> Any:
    w, shard, limit = web(), request.args.get("shard"), _limit(100)
    rows, totals = [], {}
    for s in [_shard(shard)] if shard else range(w.keys.shards):
        got, totals[s] = dead_letters.list_dead(w.market_redis, w.keys, s, limit)
        rows += got
    rows.sort(key=lambda row: row["dead_at"], reverse=True)
    return jsonify(dead=rows[:limit], totals=totals, truncated=len(rows) > limit)


@bp.post("/api/dead/<any(retry, delete):action>")
@require("ops")
def dead_action(action: str) -> Any:
    body, ids = _body(dead_letters.ENTRY_ID)
    w, s = web(), _shard(body.get("shard"))
    results = dead_letters.act_on_dead(w.market_redis, w.keys, action, s, ids,
                                       stream_maxlen=w.settings.stream_maxlen)  # fmt: skip
    return _audited(f"dead.{action}", f"shard {s}", results)


@bp.post("/api/dead/<any(retry, delete):action>-matching")
@require("ops")
def dead_matching(action: str) -> Any:
    """One batch of a sweep of ``shard``'s dead entries from ``stream`` (trades, klines, gaps;
    any when absent) up to entry ``until`` (the page sends the newest it listed), after
    ``cursor``. Answers ``next``: the cursor of the next batch, null when done."""
    w, body = web(), _json()
    s, kind = _shard(body.get("shard")), _optional_text(body, "stream")
    if kind is not None and kind not in dead_letters.STREAMS:
        raise _bad(f"stream must be one of {', '.join(dead_letters.STREAMS)}")
    until, after = body.get("until"), body.get("cursor") or None
    for name, value in (("until", until), ("cursor", after)):
        if value is not None and not (
            isinstance(value, str) and dead_letters.ENTRY_ID.fullmatch(value)
        ):
            raise _bad(f"{name} must be a stream entry id")
    if until is None:
        raise _bad("until must be a stream entry id")
    stream = None if kind is None else getattr(w.keys, kind)(s)
    ids, cursor = dead_letters.select_dead(w.market_redis, w.keys, s, stream=stream, until=until,
                                           after=after)  # fmt: skip
    if not ids:
        return jsonify(results={}, counts={}, next=None)
    results = dead_letters.act_on_dead(w.market_redis, w.keys, action, s, ids,
                                       stream_maxlen=w.settings.stream_maxlen)  # fmt: skip
    return _audited(f"dead.{action}", f"shard {s}", results, next=cursor)


@bp.get("/api/signal-errors")
@require("ops")
def signal_errors() -> Any:
    w, rows = web(), []
    for s in range(w.keys.shards):
        metrics = counters(_hash(w.keys.signal_metrics(s), w.market_redis))
        for name, value in _hash(w.keys.signal_errors(s), w.market_redis).items():
            signal, text = name.decode(), value.decode(errors="replace")
            rows.append(signal_error_row(s, signal, text, metrics.get(f"errors:{signal}", 0)))
    rows.sort(key=lambda row: row["at"] or 0, reverse=True)
    return jsonify(signal_errors=rows)


@bp.get("/api/health")
@require("ops")
def health() -> Any:
    """Every process type's reports, the Dramatiq queues, and per shard its dead letters,
    counters and stream lag (numbers from ``XINFO GROUPS``, read now)."""
    w, now = web(), now_ms()
    r, k = w.redis, w.keys
    out: dict[str, Any] = {"now": now, "stale_after_ms": HEALTH_STALE_MS}
    reports = process_reports(r, k, now, HEALTH_STALE_MS)
    # The page's names for the roles (plural where the role is one of several processes).
    for role, name in (("web", "web"), ("feeder", "feeders"), ("consumer", "consumers"),
                       ("worker", "workers"), ("signals", "signals"),
                       ("execution", "execution")):  # fmt: skip
        out[name] = reports[role]
    commands = sum(r.xlen(k.order_commands(e)) for e in range(w.settings.execution.shards))
    out["orders"] = {"commands": commands, "events": r.xlen(k.order_events()),
                     "audit": r.xlen(k.order_audit())}  # fmt: skip
    out["queues"] = queue_stats(r, k, failed_messages.queues(r, k))
    lag: dict[int, dict[str, Any]] = {}
    for row in stream_lag(w.market_redis, k):
        lag.setdefault(row["shard"], {})[row["stream"]] = {
            "group": row["group"], "length": row["length"], "lag": row["lag"],
            "pending": row["pending"],
        }  # fmt: skip
    m = w.market_redis
    out["shards"] = [{"shard": s, "dead": m.xlen(k.dead(s)), "streams": lag.get(s, {}),
                      "candle_metrics": counters(_hash(k.candle_metrics(s), m)),
                      "signal_metrics": counters(_hash(k.signal_metrics(s), m))}
                     for s in range(k.shards)]  # fmt: skip
    return jsonify(out)


@bp.get("/api/audit")
@require("ops")
def audit_log() -> Any:
    w = web()
    return jsonify(audit=audit.entries(w.redis, w.keys, _limit(50)))


@bp.get("/api/orders-audit")
@require("ops")
def orders_audit() -> Any:
    """Every trade command and its outcome, newest first (``?address=`` for one user)."""
    w, rows = web(), []
    who = request.args.get("address", "").lower()
    entries: Any = w.redis.xrevrange(w.keys.order_audit(), count=10_000 if who else _limit(100))
    for eid, fields in entries:
        row: dict[str, Any] = {f.decode(): v.decode() for f, v in fields.items()}
        if who and row.get("address") != who:
            continue
        row["id"] = eid.decode()
        rows.append(row)
        if len(rows) >= _limit(100):
            break
    return jsonify(audit=rows)
