"""Dead-lettered stream entries (``<ns>:{sN}:dead``): list, select by filter, retry, delete.

An entry holds ``stream`` (where it was), ``id`` (its entry id there), ``error`` and ``d`` (the
record's bytes). Retrying XADDs the record back to its stream and XDELs the dead entry in one
MULTI under WATCH, so a second retry finds nothing; only the shard's own input streams (trades,
klines, gaps) are written to. A sweep of everything matching walks the stream oldest first in
batches, its cursor the last entry id seen, up to the newest entry when it started.
"""

from __future__ import annotations

import re
from typing import Any

import redis

from core.keys import Keys
from ops import MAX_BATCH, MAX_LIST
from ops.failed import MOVED, transact

GAPS_MAXLEN = 10_000  # docs/architecture.md "Streams"
STREAMS = ("trades", "klines", "gaps")  # the input streams an entry may go back to
ENTRY_ID = re.compile(r"\d{1,19}-\d{1,19}")  # below 2**64


def dead_row(shard: int, entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """Return the row for one ``{sN}:dead`` entry (fields stream, id, error, d)."""
    text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
    return {"shard": shard, "id": entry_id, "dead_at": int(entry_id.split("-")[0]),
            "stream": text.get("stream"), "entry_id": text.get("id"),
            "error": text.get("error"), "record": text.get("d")}  # fmt: skip


def targets(keys: Keys, shard: int, stream_maxlen: int) -> dict[str, int]:
    """Return the streams a dead entry of ``shard`` may go back to, with their MAXLEN."""
    return {keys.trades(shard): stream_maxlen, keys.klines(shard): stream_maxlen,
            keys.gaps(shard): GAPS_MAXLEN}  # fmt: skip


def list_dead(r: redis.Redis, keys: Keys, shard: int, limit: int
              ) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """Return up to ``limit`` dead entries of ``shard``, newest first, and the shard's total."""
    entries: Any = r.xrevrange(keys.dead(shard), count=limit)
    rows = [dead_row(shard, eid.decode(), fields) for eid, fields in entries]
    return rows, int(r.xlen(keys.dead(shard)))


def newest_id(r: redis.Redis, keys: Keys, shard: int) -> str | None:
    """Return the id of the shard's newest dead entry (a sweep's end), None when empty."""
    last: Any = r.xrevrange(keys.dead(shard), count=1)
    return last[0][0].decode() if last else None


def select_dead(r: redis.Redis, keys: Keys, shard: int, *, stream: str | None, until: str,
                after: str | None = None, limit: int = MAX_BATCH,
                ) -> tuple[list[str], str | None]:  # fmt: skip
    """Return the ids of up to ``limit`` dead entries of ``shard`` from ``stream`` (a key from
    :func:`targets`, or any when None), after entry ``after`` and up to ``until`` inclusive,
    oldest first, and the cursor to continue from (None: nothing further matches)."""
    start, ids = "-" if after is None else f"({after}", list[str]()
    while True:
        page: Any = r.xrange(keys.dead(shard), start, until, count=MAX_LIST)
        if not page:
            return ids, None
        for eid, fields in page:
            if stream is None or fields.get(b"stream", b"").decode(errors="replace") == stream:
                ids.append(eid.decode())
                if len(ids) >= limit:
                    return ids, ids[-1]
        start = f"({page[-1][0].decode()}"


def retry_dead(r: redis.Redis, dead: str, to: dict[str, int], entry_id: str) -> str:
    """XADD a dead entry's record back to its stream and XDEL it; retried|missing|busy|..."""

    def step(p: Any) -> str:
        found = p.xrange(dead, entry_id, entry_id)
        if not found:
            return "missing"
        fields = found[0][1]
        stream, record = fields.get(b"stream", b"").decode(errors="replace"), fields.get(b"d")
        if stream not in to or record is None:
            return "unknown_stream"  # only the shard's own input streams are written to
        p.multi()
        p.xadd(stream, {"d": record}, maxlen=to[stream], approximate=True)
        p.xdel(dead, entry_id)
        return MOVED

    return transact(r, dead, step)


def act_on_dead(r: redis.Redis, keys: Keys, action: str, shard: int, ids: list[str], *,
                stream_maxlen: int) -> dict[str, str]:  # fmt: skip
    """Retry or delete (``action``) each dead entry id of ``shard``; return id -> result."""
    dead, unique = keys.dead(shard), list(dict.fromkeys(ids))
    if action == "delete":
        return {i: "deleted" if r.xdel(dead, i) else "missing" for i in unique}
    to = targets(keys, shard, stream_maxlen)
    return {i: retry_dead(r, dead, to, i) for i in unique}
