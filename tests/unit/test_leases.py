"""How many shards a consumer builds (workers/leases.py): its fair share among its peers."""

from __future__ import annotations

from workers.leases import PEER_STALE_MS, fair_share, peers

SHARDS = [0, 1, 2, 3, 4, 5, 6, 7]
NOW = 1_800_000_000_000


def test_the_fair_share_rounds_up_so_that_every_shard_has_an_owner() -> None:
    assert [fair_share(8, n) for n in (1, 2, 3, 8, 9)] == [8, 4, 3, 1, 1]
    assert fair_share(8, 0) == 8  # never a division by zero
    assert all(fair_share(8, n) * n >= 8 for n in range(1, 12))


def test_peers_are_the_fresh_reports_on_the_same_shards_and_this_consumer() -> None:
    reports = {
        "c1": {"shards": SHARDS, "at_ms": NOW - 500},
        "c2": {"shards": SHARDS, "at_ms": NOW - PEER_STALE_MS - 1},  # dead: its report is stale
        "c3": {"shards": [0, 2, 4, 6], "at_ms": NOW},  # --shard 1/2: other shards
        "c4": {"shards": SHARDS, "at_ms": NOW},
    }
    assert peers(reports, SHARDS, "c1", NOW) == 2  # c1 and c4
    assert peers(reports, SHARDS, "new", NOW) == 3  # one that has not reported yet counts
    assert peers({}, SHARDS, "c1", NOW) == 1
