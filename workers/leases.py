"""Shard leases: one consumer builds a shard at a time, and a peer takes over a dead one's.

Every consumer on the same shards (``--shard K/N``) competes for a lease per shard
(``Keys.builder_lease``: a string holding its owner's name, ``LEASE_MS`` to live), renewed by its
owner every ``RENEW_S``. A consumer holds at most its fair share (its shards divided by the
consumers that report on the same shards, rounded up) and releases what it holds beyond it, so
that a peer that starts takes its part within a few seconds; a dead consumer's leases expire and
its peers take them. The lease decides who *builds*, not what is right: the build's cursor check
keeps two builders of one shard (an expired lease whose owner still runs) from both writing.
"""

from __future__ import annotations

from typing import Any

LEASE_MS = 5_000  # a dead consumer's shards are built again by a peer within this (plus RENEW_S)
RENEW_S = 1.0
PEER_STALE_MS = 6_000  # a health report older than this is not a peer

# KEYS[1]: the lease. ARGV: name, ttl ms, "1" to hold it (take it if free, or renew) or "0" to
# let it go. Returns 1 if ``name`` holds the lease afterwards, else 0.
LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  if ARGV[3] == '1' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
  end
  redis.call('DEL', KEYS[1])
  return 0
end
if not cur and ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def fair_share(shards: int, consumers: int) -> int:
    """Return how many of ``shards`` one of ``consumers`` holds at most (rounded up)."""
    return -(-shards // max(1, consumers))


def peers(reports: dict[str, Any], shards: list[int], me: str, now_ms: int) -> int:
    """Return how many consumers share ``shards``: the fresh health reports on the same shards,
    this consumer counted whether it has reported yet or not."""
    names = {
        name
        for name, rep in reports.items()
        if rep.get("shards") == shards and now_ms - rep.get("at_ms", 0) <= PEER_STALE_MS
    }
    return len(names | {me})
