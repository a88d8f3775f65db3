"""Blueprint ``/ops``: the operators' page and its JSON API (docs/architecture.md, "Ops page").

``GET /ops`` serves the static page; every ``/ops/api/...`` call needs a bearer token with
``aud=ops`` (issued only to ``TP_OPS_ADDRESSES``). Failed Dramatiq messages are read straight from
the broker's keys (``<ns>:dramatiq:<queue>.XQ`` zset scored by failure time, ``.XQ.msgs`` hash) and
retried by an atomic move back to the queue (stack-notes A6 b): WATCH/MULTI with the same Redis
message id, so a second retry of an id finds nothing to move. A dead-lettered stream entry
(``{sN}:dead``) is retried by XADDing its record back to its stream and XDELing it in one MULTI.
Destructive calls take at most ``MAX_BATCH`` ids, are logged and appended to ``Keys.ops_audit()``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import redis
from dramatiq import Message
from dramatiq.errors import DecodeError
from flask import Blueprint, Response, current_app, g, jsonify, request

from web.api import STALE_HEALTH_MS
from web.app import web
from web.auth import ApiError, error_response, now_ms, require

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__, url_prefix="/ops")

QUEUES = ("candles", "backfill", "signals")  # the project's actors; others are found by SCAN
MAX_BATCH = 100  # ids per destructive call; the page sends a bigger selection in batches
MAX_LIST = 500
AUDIT_MAXLEN = 1_000  # an entry holds up to 100 ids: ~7 MB at most
GAPS_MAXLEN = 10_000  # docs/architecture.md "Streams"
WATCH_TRIES = 5  # a busy queue's own writes abort our transaction: try again a few times
DROPPED_OPTIONS = ("eta", "retries", "traceback", "requeue_timestamp")
MOVED = "retried"
_QUEUE = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,63}")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_ENTRY_ID = re.compile(r"\d{1,19}-\d{1,19}")  # below 2**64


# --- pure: payloads -> rows -------------------------------------------------------------------


def failed_row(queue: str, rid: str, failed_at_ms: int, raw: bytes) -> dict[str, Any]:
    """Return the page's row for one dead-lettered Dramatiq message payload."""
    row: dict[str, Any] = {"queue": queue, "id": rid, "failed_at": failed_at_ms}
    try:
        m = Message.decode(raw)
    except DecodeError:
        return {**row, "actor": None, "error": "undecodable message", "traceback": None,
                "raw": raw.decode(errors="replace")}  # fmt: skip
    options = dict(m.options)
    tb = options.pop("traceback", None)
    lines = [line for line in (tb or "").splitlines() if line.strip()]
    return {**row, "actor": m.actor_name, "message_id": m.message_id, "args": list(m.args),
            "kwargs": m.kwargs, "enqueued_at": m.message_timestamp,
            # Retries counts every failure, the last too: the attempts that failed.
            "attempts": options.get("retries", 0), "error": lines[-1] if lines else None,
            "traceback": tb, "options": options}  # fmt: skip


def requeued(raw: bytes, queue: str) -> bytes:
    """Return the payload to put back on ``queue`` without retries, eta, traceback; raise
    DecodeError. ``Message.copy`` merges options and cannot drop one: ``dataclasses.replace``."""
    m = Message.decode(raw)
    options = {k: v for k, v in m.options.items() if k not in DROPPED_OPTIONS}
    return dataclasses.replace(m, queue_name=queue, options=options).encode()


def dead_row(shard: int, entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """Return the page's row for one ``{sN}:dead`` entry (fields stream, id, error, d)."""
    text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
    return {"shard": shard, "id": entry_id, "dead_at": int(entry_id.split("-")[0]),
            "stream": text.get("stream"), "entry_id": text.get("id"),
            "error": text.get("error"), "record": text.get("d")}  # fmt: skip


def signal_error_row(shard: int, signal: str, raw: str, count: int) -> dict[str, Any]:
    """Return the row of a ``signal-errors`` value ``kind|symbol|tf|ms|message``."""
    parts = raw.split("|", 4)
    if len(parts) < 5 or not parts[3].isdigit():
        parts = [None, None, None, None, raw]  # type: ignore[list-item]  # shown as it is
    kind, symbol, timeframe, ms, message = parts
    return {"shard": shard, "signal": signal, "kind": kind, "symbol": symbol,
            "timeframe": timeframe, "at": int(ms) if ms else None, "message": message,
            "count": count}  # fmt: skip


def health_reports(raw: dict[bytes, bytes], now: int) -> dict[str, Any]:
    """Decode a health hash (field -> JSON) and flag reports older than STALE_HEALTH_MS."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            report = orjson.loads(value)
        except orjson.JSONDecodeError:
            report = None
        report = report if isinstance(report, dict) else {"unreadable": value.decode("latin-1")}
        at = report.get("at_ms") or report.get("updated_ms") or 0
        report["age_ms"] = now - at if at else None
        report["stale"] = not at or now - at > STALE_HEALTH_MS
        out[name.decode(errors="replace")] = report
    return out


def counters(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {k.decode(): int(v) if v.lstrip(b"-").isdigit() else v.decode() for k, v in raw.items()}


# --- Redis I/O ---------------------------------------------------------------------------------


def _hash(r: redis.Redis, key: str) -> dict[bytes, bytes]:
    raw: Any = r.hgetall(key)
    return raw  # type: ignore[no-any-return]  # bytes responses (no decode_responses)


def queues(r: redis.Redis, ns: str) -> list[str]:
    """Return the project's queues and every other queue that has a dead-letter set."""
    found = set(QUEUES)
    for key in r.scan_iter(match=f"{ns}:*.XQ", count=1000, _type="zset"):
        found.add(key.decode().removeprefix(f"{ns}:").removesuffix(".XQ"))
    return sorted(found)


def list_failed(r: redis.Redis, ns: str, queue: str, actor: str | None, limit: int
                ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """Return up to ``limit`` failed messages of ``queue``, newest first, and the queue's total."""
    xq = f"{ns}:{queue}.XQ"
    total, start, rows = int(r.zcard(xq)), 0, list[dict[str, Any]]()
    page = limit if actor is None else MAX_LIST
    while len(rows) < limit and start < min(total, 10 * MAX_LIST):  # a filter scans a bounded part
        ids: Any = r.zrevrange(xq, start, start + page - 1, withscores=True)
        if not ids:
            break
        start += len(ids)
        raws: Any = r.hmget(f"{xq}.msgs", [rid for rid, _ in ids])
        for (rid, score), raw in zip(ids, raws, strict=True):
            if raw is not None:  # moved or deleted between the two reads
                row = failed_row(queue, rid.decode(), int(score), raw)
                if actor is None or row["actor"] == actor:
                    rows.append(row)
    return rows[:limit], total


def _transact(r: redis.Redis, watched: str, step: Callable[[Any], str]) -> str:
    """Run ``step(pipe)`` under WATCH; it returns MOVED after queueing its MULTI, else a reason."""
    for _ in range(WATCH_TRIES):
        with r.pipeline() as p:
            try:
                p.watch(watched)  # type: ignore[no-untyped-call]
                result = step(p)
                if result == MOVED:
                    p.execute()
                return result
            except redis.WatchError:
                continue
    return "busy"


def retry_failed(r: redis.Redis, ns: str, queue: str, rid: str) -> str:
    """Move one failed message back to its queue; return retried|missing|corrupt|busy."""
    xq, q = f"{ns}:{queue}.XQ", f"{ns}:{queue}"

    def step(p: Any) -> str:
        raw = p.hget(f"{xq}.msgs", rid)
        if raw is None:
            return "missing"
        try:
            payload = requeued(raw, queue)
        except DecodeError:
            return "corrupt"
        p.multi()
        p.zrem(xq, rid).hdel(f"{xq}.msgs", rid).hset(f"{q}.msgs", rid, payload).rpush(q, rid)
        return MOVED

    return _transact(r, f"{xq}.msgs", step)


def delete_failed(r: redis.Redis, ns: str, queue: str, rid: str) -> str:
    xq = f"{ns}:{queue}.XQ"
    p: Any = r.pipeline()  # MULTI
    removed, _ = p.zrem(xq, rid).hdel(f"{xq}.msgs", rid).execute()
    return "deleted" if removed else "missing"


def retry_dead(r: redis.Redis, dead: str, targets: dict[str, int], entry_id: str) -> str:
    """XADD a dead entry's record back to its stream and XDEL it; retried|missing|busy|..."""

    def step(p: Any) -> str:
        found = p.xrange(dead, entry_id, entry_id)
        if not found:
            return "missing"
        fields = found[0][1]
        stream, record = fields.get(b"stream", b"").decode(errors="replace"), fields.get(b"d")
        if stream not in targets or record is None:
            return "unknown_stream"  # only the shard's own input streams are written to
        p.multi()
        p.xadd(stream, {"d": record}, maxlen=targets[stream], approximate=True)
        p.xdel(dead, entry_id)
        return MOVED

    return _transact(r, dead, step)


def _audit(action: str, target: str, results: dict[str, str]) -> Any:
    w, who = web(), g.claims.address
    counts = dict(Counter(results.values()))
    entry: Any = {"at_ms": now_ms(), "who": who, "action": action, "target": target,
                  "ids": orjson.dumps(list(results)), "results": orjson.dumps(counts)}  # fmt: skip
    w.redis.xadd(w.keys.ops_audit(), entry, maxlen=AUDIT_MAXLEN, approximate=True)
    log.info("ops %s on %s by %s: %s", action, target, who, counts,
             extra={"action": action, "target": target, "address": who})  # fmt: skip
    return jsonify(results=results, counts=counts)


# --- request parsing -----------------------------------------------------------------------------


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return error_response(exc)


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


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
    if not isinstance(value, str) or not _QUEUE.fullmatch(value) or value.endswith((".DQ", ".XQ")):
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


# --- views -------------------------------------------------------------------------------------


@bp.get("")
def page() -> Any:
    return current_app.send_static_file("ops.html")


@bp.get("/api/failed")
@require("ops")
def failed() -> Any:
    r, ns, queue = web().redis, web().keys.dramatiq_namespace(), request.args.get("queue")
    actor, limit = request.args.get("actor") or None, _limit(100)
    rows, totals = [], {}
    for name in [_queue(queue)] if queue else queues(r, ns):
        got, totals[name] = list_failed(r, ns, name, actor, limit)
        rows += got
    rows.sort(key=lambda row: row["failed_at"], reverse=True)
    return jsonify(failed=rows[:limit], totals=totals, truncated=len(rows) > limit)


@bp.post("/api/failed/<any(retry, delete):action>")
@require("ops")
def failed_action(action: str) -> Any:
    r, ns = web().redis, web().keys.dramatiq_namespace()
    body, ids = _body(_MESSAGE_ID)
    queue, act = _queue(body.get("queue")), retry_failed if action == "retry" else delete_failed
    return _audit(f"failed.{action}", queue, {rid: act(r, ns, queue, rid) for rid in ids})


@bp.get("/api/dead")
@require("ops")
def dead() -> Any:
    w, shard, limit = web(), request.args.get("shard"), _limit(100)
    rows, totals = [], {}
    for s in [_shard(shard)] if shard else range(w.keys.shards):
        totals[s] = int(w.redis.xlen(w.keys.dead(s)))
        entries: Any = w.redis.xrevrange(w.keys.dead(s), count=limit)
        rows += [dead_row(s, eid.decode(), fields) for eid, fields in entries]
    rows.sort(key=lambda row: row["dead_at"], reverse=True)
    return jsonify(dead=rows[:limit], totals=totals, truncated=len(rows) > limit)


@bp.post("/api/dead/<any(retry, delete):action>")
@require("ops")
def dead_action(action: str) -> Any:
    body, ids = _body(_ENTRY_ID)
    w, s = web(), _shard(body.get("shard"))
    k, maxlen = w.keys, w.settings.stream_maxlen
    if action == "delete":
        results = {i: "deleted" if w.redis.xdel(k.dead(s), i) else "missing" for i in ids}
    else:
        targets = {k.trades(s): maxlen, k.klines(s): maxlen, k.gaps(s): GAPS_MAXLEN}
        results = {i: retry_dead(w.redis, k.dead(s), targets, i) for i in ids}
    return _audit(f"dead.{action}", f"shard {s}", results)


@bp.get("/api/signal-errors")
@require("ops")
def signal_errors() -> Any:
    w, rows = web(), []
    for s in range(w.keys.shards):
        metrics = counters(_hash(w.redis, w.keys.signal_metrics(s)))
        for name, value in _hash(w.redis, w.keys.signal_errors(s)).items():
            signal, text = name.decode(), value.decode(errors="replace")
            rows.append(signal_error_row(s, signal, text, metrics.get(f"errors:{signal}", 0)))
    rows.sort(key=lambda row: row["at"] or 0, reverse=True)
    return jsonify(signal_errors=rows)


@bp.get("/api/health")
@require("ops")
def health() -> Any:
    w, now = web(), now_ms()
    r, k, ns = w.redis, w.keys, w.keys.dramatiq_namespace()
    out: dict[str, Any] = {"now": now, "stale_after_ms": STALE_HEALTH_MS}
    for role, key in (("web", k.web_health()), ("feeders", k.feed_health()),
                      ("consumers", k.consumer_health()),
                      ("execution", k.execution_health())):  # fmt: skip
        out[role] = health_reports(_hash(r, key), now)
    out["orders"] = {"commands": r.xlen(k.order_commands()), "events": r.xlen(k.order_events()),
                     "audit": r.xlen(k.order_audit())}  # fmt: skip
    trimmed = {q.decode(): int(n) for q, n in _hash(r, k.dead_letters_trimmed()).items()}
    out["queues"] = {q: {"ready": r.llen(f"{ns}:{q}"), "delayed": r.hlen(f"{ns}:{q}.DQ.msgs"),
                         "failed": r.zcard(f"{ns}:{q}.XQ"), "trimmed": trimmed.get(q, 0)}
                     for q in queues(r, ns)}  # fmt: skip
    out["shards"] = [{"shard": s, "dead": r.xlen(k.dead(s)),
                      "candle_metrics": counters(_hash(r, k.candle_metrics(s))),
                      "signal_metrics": counters(_hash(r, k.signal_metrics(s)))}
                     for s in range(k.shards)]  # fmt: skip
    return jsonify(out)


@bp.get("/api/audit")
@require("ops")
def audit() -> Any:
    w, rows = web(), []
    entries: Any = w.redis.xrevrange(w.keys.ops_audit(), count=_limit(50))
    for eid, fields in entries:
        row: dict[str, Any] = {f.decode(): v.decode() for f, v in fields.items()}
        row["id"] = eid.decode()
        row["at_ms"] = int(row.get("at_ms", 0))
        row["ids"], row["results"] = orjson.loads(row["ids"]), orjson.loads(row["results"])
        rows.append(row)
    return jsonify(audit=rows)


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
