"""What the processes report about themselves, and the queue and stream figures beside it.

Every process type writes a JSON report into a hash of its role every 2 s (docs/architecture.md,
"Keys"): ``web:health``, ``feed:health``, ``consumer:health``, ``execution:health``, and
``worker:health`` for both Dramatiq process types (``role`` ``worker`` or ``signals`` in the
report). The ops page, ``/readyz`` and ``/metrics`` read them through this module, so a process
is fresh or stale by one rule everywhere.
"""

from __future__ import annotations

from typing import Any

import redis

from core.keys import GROUP_BACKFILL, GROUP_CANDLES, Keys
from core.redis_clients import group_lag
from core.schemas import HealthReport

ROLES = ("web", "feeder", "consumer", "worker", "signals", "execution")  # Procfile types
DRAMATIQ_ROLES = ("worker", "signals")  # both report into worker:health
# The consumer groups reading each shard's input streams (docs/architecture.md, "Streams").
STREAM_GROUPS = (("trades", GROUP_CANDLES), ("klines", GROUP_CANDLES), ("gaps", GROUP_BACKFILL))


def health_reports(raw: dict[bytes, bytes], now: int, stale_after_ms: int) -> dict[str, Any]:
    """Decode a health hash (field -> JSON) and flag reports older than ``stale_after_ms``
    (``core.schemas.HealthReport``: ``age_ms`` and ``stale`` added to each)."""
    reports = (HealthReport.decode(name, value) for name, value in raw.items())
    return {rep.name: rep.view(now, stale_after_ms) for rep in reports}


def counters(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """Decode a counters hash: integers where they are, text otherwise."""
    return {k.decode(): int(v) if v.lstrip(b"-").isdigit() else v.decode() for k, v in raw.items()}


def signal_error_row(shard: int, signal: str, raw: str, count: int) -> dict[str, Any]:
    """Return the row of a ``signal-errors`` value ``kind|symbol|tf|ms|message``."""
    parts = raw.split("|", 4)
    if len(parts) < 5 or not parts[3].isdigit():
        parts = [None, None, None, None, raw]  # type: ignore[list-item]  # shown as it is
    kind, symbol, timeframe, ms, message = parts
    return {"shard": shard, "signal": signal, "kind": kind, "symbol": symbol,
            "timeframe": timeframe, "at": int(ms) if ms else None, "message": message,
            "count": count}  # fmt: skip


def role_keys(keys: Keys) -> dict[str, str]:
    """Return role -> health hash (``worker`` stands for both Dramatiq roles)."""
    return {"web": keys.web_health(), "feeder": keys.feed_health(),
            "consumer": keys.consumer_health(), "worker": keys.worker_health(),
            "execution": keys.execution_health()}  # fmt: skip


def process_reports(r: redis.Redis, keys: Keys, now: int, stale_after_ms: int
                    ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Return role -> process name -> report (with ``age_ms`` and ``stale``), every role in
    ROLES present (empty when none reports)."""
    by_key = role_keys(keys)
    with r.pipeline(transaction=False) as p:
        for key in by_key.values():
            p.hgetall(key)
        raws: list[Any] = p.execute()
    out: dict[str, dict[str, Any]] = {role: {} for role in ROLES}
    for role, raw in zip(by_key, raws, strict=True):
        reports = health_reports(raw, now, stale_after_ms)
        if role != "worker":
            out[role] = reports
            continue
        for name, report in reports.items():
            kind = report.get("role")
            out[kind if kind in DRAMATIQ_ROLES else "worker"][name] = report
    return out


def fresh_roles(reports: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Return role -> how many of its processes have a fresh report."""
    return {role: sum(not rep["stale"] for rep in by_name.values())
            for role, by_name in reports.items()}  # fmt: skip


def queue_stats(r: redis.Redis, keys: Keys, queue_names: list[str]) -> dict[str, dict[str, int]]:
    """Return queue -> ready, delayed, failed (dead letters) and trimmed (dropped past the
    bound) of each Dramatiq queue named."""
    p: Any
    with r.pipeline(transaction=False) as p:
        p.hgetall(keys.dead_letters_trimmed())
        for q in queue_names:
            p.llen(keys.dramatiq_queue(q)).hlen(keys.dramatiq_delayed_messages(q))
            p.zcard(keys.dramatiq_failed(q))
        got: list[Any] = p.execute()
    trimmed = {q.decode(): int(n) for q, n in got[0].items()}
    return {q: {"ready": int(got[1 + 3 * i]), "delayed": int(got[2 + 3 * i]),
                "failed": int(got[3 + 3 * i]), "trimmed": trimmed.get(q, 0)}
            for i, q in enumerate(queue_names)}  # fmt: skip


def stream_lag(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Return, per shard and input stream, its length and its consumer group's lag (entries
    not yet delivered; None when Redis cannot tell) and pending (delivered, not yet acked).
    A stream or group that does not exist yet has length 0 and no lag."""
    wanted = [(s, name, group) for s in range(keys.shards) for name, group in STREAM_GROUPS]
    with r.pipeline(transaction=False) as p:
        for s, name, _ in wanted:
            key = getattr(keys, name)(s)
            p.xlen(key)
            p.xinfo_groups(key)
            p.xinfo_stream(key)
        got: list[Any] = p.execute(raise_on_error=False)
    rows = []
    for i, (s, name, group) in enumerate(wanted):
        length, groups, stream = got[3 * i], got[3 * i + 1], got[3 * i + 2]
        info: dict[Any, Any] = {} if isinstance(groups, Exception) else next(
            (g for g in groups if g["name"] in (group, group.encode())), {}
        )  # fmt: skip
        last = None if isinstance(stream, Exception) else stream.get("last-generated-id")
        lag = group_lag(info, last) if info else None
        rows.append({"shard": s, "stream": name, "group": group,
                     "length": 0 if isinstance(length, Exception) else int(length),
                     "lag": lag,
                     "pending": int(info["pending"]) if info else None})  # fmt: skip
    return rows
