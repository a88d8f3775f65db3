"""Failed Dramatiq messages: list, select by filter, retry, delete.

They are read straight from the broker's keys (``<ns>:dramatiq:<queue>.XQ`` zset scored by failure
time, ``.XQ.msgs`` hash) and retried by an atomic move back to the queue (docs/stack.md, "Retrying a
dead letter"): WATCH/MULTI with the same Redis message id, so a second retry of an id finds nothing
to move. Retrying "everything matching a filter" walks the set oldest first, in batches, with a
cursor (failure time, id) and a cut-off time: a message that fails again after its retry is scored
after the cut-off and is not retried twice in one sweep.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Message
from dramatiq.errors import DecodeError

from core.keys import Keys
from ops import MAX_BATCH, MAX_LIST

QUEUES = ("backfill", "signals")  # the project's actors; others are found by SCAN
WATCH_TRIES = 5  # a busy queue's own writes abort our transaction: try again a few times
DROPPED_OPTIONS = ("eta", "retries", "traceback", "requeue_timestamp")
MOVED = "retried"
QUEUE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,63}")  # see valid_queue
MESSAGE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

Cursor = tuple[int, str]  # (failure time ms, Redis message id): where a sweep stopped


# --- pure: payloads -> rows -------------------------------------------------------------------


def failed_row(queue: str, rid: str, failed_at_ms: int, raw: bytes) -> dict[str, Any]:
    """Return the row (page and command line) for one dead-lettered Dramatiq message payload."""
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


def valid_queue(name: str) -> bool:
    """Return whether ``name`` is a Dramatiq queue's own name (not its .DQ or .XQ)."""
    return bool(QUEUE_NAME.fullmatch(name)) and not name.endswith((".DQ", ".XQ"))


def actor_of(raw: bytes | None) -> str | None:
    """Return the actor a payload is for (None: gone or undecodable)."""
    if raw is None:
        return None
    try:
        return Message.decode(raw).actor_name
    except DecodeError:
        return None


def parse_cursor(text: str) -> Cursor:
    """Return the cursor written as ``<ms>:<id>``; raise ValueError."""
    ms, sep, rid = text.partition(":")
    if not sep or not ms.isdigit() or not rid:
        raise ValueError(f"{text[:80]!r} is not a cursor (<ms>:<id>)")
    return int(ms), rid


def format_cursor(cursor: Cursor | None) -> str | None:
    return None if cursor is None else f"{cursor[0]}:{cursor[1]}"


# --- Redis I/O ---------------------------------------------------------------------------------


def queues(r: redis.Redis, keys: Keys) -> list[str]:
    """Return the project's queues and every other queue that has a dead-letter set."""
    found = set(QUEUES)
    for key in r.scan_iter(match=keys.dramatiq_failed_pattern(), count=1000, _type="zset"):
        found.add(keys.dramatiq_queue_of_failed(key.decode()))
    return sorted(found)


def list_failed(r: redis.Redis, keys: Keys, queue: str, actor: str | None, limit: int
                ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """Return up to ``limit`` failed messages of ``queue``, newest first, and the queue's total."""
    xq, xq_msgs = keys.dramatiq_failed(queue), keys.dramatiq_failed_messages(queue)
    total, start, rows = int(r.zcard(xq)), 0, list[dict[str, Any]]()
    page = limit if actor is None else MAX_LIST
    while len(rows) < limit and start < min(total, 10 * MAX_LIST):  # a filter scans a bounded part
        ids: Any = r.zrevrange(xq, start, start + page - 1, withscores=True)
        if not ids:
            break
        start += len(ids)
        raws: Any = r.hmget(xq_msgs, [rid for rid, _ in ids])
        for (rid, score), raw in zip(ids, raws, strict=True):
            if raw is not None:  # moved or deleted between the two reads
                row = failed_row(queue, rid.decode(), int(score), raw)
                if actor is None or row["actor"] == actor:
                    rows.append(row)
    return rows[:limit], total


def select_failed(r: redis.Redis, keys: Keys, queue: str, *, actor: str | None, before_ms: int,
                  after: Cursor | None = None, limit: int = MAX_BATCH,
                  ) -> tuple[list[str], Cursor | None]:  # fmt: skip
    """Return the ids of up to ``limit`` failed messages of ``queue`` (of ``actor`` if given) that
    failed at or before ``before_ms`` and come after the cursor ``after``, oldest first, and the
    cursor to continue from (None: nothing further matches).

    Equal failure times are ordered by id, as Redis orders them, so the cursor is exact.
    """
    xq, xq_msgs = keys.dramatiq_failed(queue), keys.dramatiq_failed_messages(queue)
    lo: int | str = "-inf" if after is None else after[0]
    offset, ids = 0, list[str]()
    while True:
        page: Any = r.zrangebyscore(xq, lo, before_ms, start=offset, num=MAX_LIST,
                                    withscores=True)  # fmt: skip
        if not page:
            return ids, None
        offset += len(page)
        found = [(int(score), rid.decode()) for rid, score in page]
        found = [key for key in found if after is None or key > after]
        if actor is not None and found:
            raws: Any = r.hmget(xq_msgs, [rid for _, rid in found])
            found = [k for k, raw in zip(found, raws, strict=True) if actor_of(raw) == actor]
        for key in found:
            ids.append(key[1])
            if len(ids) >= limit:
                return ids, key


def transact(r: redis.Redis, watched: str, step: Callable[[Any], str]) -> str:
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


def retry_failed(r: redis.Redis, keys: Keys, queue: str, rid: str) -> str:
    """Move one failed message back to its queue; return retried|missing|corrupt|busy."""
    xq, xq_msgs = keys.dramatiq_failed(queue), keys.dramatiq_failed_messages(queue)
    q, q_msgs = keys.dramatiq_queue(queue), keys.dramatiq_messages(queue)

    def step(p: Any) -> str:
        raw = p.hget(xq_msgs, rid)
        if raw is None:
            return "missing"
        try:
            payload = requeued(raw, queue)
        except DecodeError:
            return "corrupt"
        p.multi()
        p.zrem(xq, rid).hdel(xq_msgs, rid).hset(q_msgs, rid, payload).rpush(q, rid)
        return MOVED

    return transact(r, xq_msgs, step)


def delete_failed(r: redis.Redis, keys: Keys, queue: str, rid: str) -> str:
    """Delete one failed message; return deleted|missing."""
    xq, xq_msgs = keys.dramatiq_failed(queue), keys.dramatiq_failed_messages(queue)
    p: Any = r.pipeline()  # MULTI
    removed, _ = p.zrem(xq, rid).hdel(xq_msgs, rid).execute()
    return "deleted" if removed else "missing"


def act_on_failed(r: redis.Redis, keys: Keys, action: str, queue: str, ids: list[str]
                  ) -> dict[str, str]:  # fmt: skip
    """Retry or delete (``action``) each id of ``queue``; return id -> result."""
    act = retry_failed if action == "retry" else delete_failed
    return {rid: act(r, keys, queue, rid) for rid in dict.fromkeys(ids)}
