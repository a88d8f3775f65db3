"""The audit trail of operators' actions: ``<ns>:ops:audit``, one entry per batch acted on.

Fields: ``at_ms``, ``who`` (an operator's address from the page, ``cli:<unix user>`` from the
command line), ``action`` (``failed.retry``, ``failed.delete``, ``dead.retry``, ``dead.delete``),
``target`` (a queue, or ``shard N``), ``ids`` and ``results`` (JSON: result -> count).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import orjson
import redis

from core.clock import now_ms
from core.keys import Keys

log = logging.getLogger("ops")

AUDIT_MAXLEN = 1_000  # an entry holds up to MAX_BATCH ids: ~7 MB at most


def record(r: redis.Redis, keys: Keys, who: str, action: str, target: str,
           results: dict[str, str]) -> dict[str, int]:  # fmt: skip
    """Append one action and what it did to each id to the audit stream and the log; return the
    count of each result."""
    counts = dict(Counter(results.values()))
    entry: Any = {"at_ms": now_ms(), "who": who, "action": action,
                  "target": target, "ids": orjson.dumps(list(results)),
                  "results": orjson.dumps(counts)}  # fmt: skip
    r.xadd(keys.ops_audit(), entry, maxlen=AUDIT_MAXLEN, approximate=True)
    log.info("ops %s on %s by %s: %s", action, target, who, counts,
             extra={"action": action, "target": target, "address": who})  # fmt: skip
    return counts


def entries(r: redis.Redis, keys: Keys, limit: int) -> list[dict[str, Any]]:
    """Return the newest ``limit`` audit entries, newest first, decoded."""
    rows = []
    raw: Any = r.xrevrange(keys.ops_audit(), count=limit)
    for eid, fields in raw:
        row: dict[str, Any] = {f.decode(): v.decode() for f, v in fields.items()}
        row["id"] = eid.decode()
        row["at_ms"] = int(row.get("at_ms", 0))
        row["ids"], row["results"] = orjson.loads(row["ids"]), orjson.loads(row["results"])
        rows.append(row)
    return rows
