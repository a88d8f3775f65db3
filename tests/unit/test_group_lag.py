"""A consumer group's lag as we report it (docs/stack.md, "A consumer group's lag")."""

from __future__ import annotations

from core.redis_clients import group_lag


def test_a_group_delivered_the_last_entry_has_no_lag_whatever_xinfo_says() -> None:
    # What Redis 7.0 reported after reloading its data in bench/chaos.py: caught up, lag 7239.
    group = {"name": b"candles", "last-delivered-id": b"1796602498899-0", "lag": 7239}
    assert group_lag(group, b"1796602498899-0") == 0


def test_otherwise_xinfo_lag_is_trusted_and_unknown_stays_unknown() -> None:
    behind = {"last-delivered-id": b"5-0", "lag": 3}
    assert group_lag(behind, b"8-0") == 3
    assert group_lag({"last-delivered-id": b"5-0", "lag": None}, b"8-0") is None
    assert group_lag({"lag": 2}, None) == 2  # no stream info: what XINFO says
