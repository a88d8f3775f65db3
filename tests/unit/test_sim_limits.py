"""Fault state and REST weight limits on a virtual clock."""

from __future__ import annotations

import pytest

from simulator.faults import Faults, parse_fault_arg, validate
from simulator.model import VirtualClock
from simulator.rest import WeightLimiter, klines_weight


def test_weights_429_then_growing_418_bans() -> None:
    clock = VirtualClock(1_700_000_040_000)  # 40 s into a minute (UTC)... whatever the minute
    limiter = WeightLimiter(clock, limit=10, ban_after=2, ban_base_s=2)
    assert [limiter.charge("1.2.3.4", 5).status for _ in range(2)] == [200, 200]
    first = limiter.charge("1.2.3.4", 5)
    assert (first.status, first.used) == (429, 15)
    assert 0 < first.retry_after_s <= 60
    assert limiter.charge("1.2.3.4", 1).status == 429
    ban = limiter.charge("1.2.3.4", 1)
    assert ban.status == 418
    assert ban.banned_until_ms == clock.now_ms() + 2000
    assert limiter.charge("5.6.7.8", 1).status == 200  # per IP
    clock.advance(1000)
    assert limiter.charge("1.2.3.4", 1).status == 418  # still banned
    clock.advance(1500)
    again = limiter.charge("1.2.3.4", 1)
    assert again.status in (429, 418)
    while again.status != 418:
        again = limiter.charge("1.2.3.4", 1)
    assert again.banned_until_ms - clock.now_ms() == 4000  # the second ban is twice as long


def test_klines_weight_by_limit() -> None:
    assert [klines_weight(x) for x in ("1", "99", "100", "499", "500", "1000", "1001", None)] == [
        1, 1, 2, 2, 5, 5, 10, 5
    ]  # fmt: skip


def test_faults_expire_and_match() -> None:
    clock = VirtualClock(0)
    faults = Faults(clock)
    faults.add({"type": "stall", "symbol": "BTCUSDT", "seconds": 2})
    assert faults.is_stalled("btcusdt@aggTrade")
    assert not faults.is_stalled("ethusdt@aggTrade")
    faults.add({"type": "rest", "status": 503, "count": 2, "path": "/fapi/v1/klines"})
    assert faults.take_rest_fault("/fapi/v1/time") is None
    assert faults.take_rest_fault("/fapi/v1/klines") is not None
    assert faults.take_rest_fault("/fapi/v1/klines") is not None
    assert faults.take_rest_fault("/fapi/v1/klines") is None  # count used up
    clock.advance(2000)
    faults.expire()
    assert not faults.is_stalled("btcusdt@aggTrade")
    assert faults.frame_effects("/market/ws", set()) == (0, 0, False)
    faults.add({"type": "delay", "ms": 300, "path": "/market"})
    assert faults.frame_effects("/market/ws", set()) == (300, 0, False)
    assert faults.frame_effects("/public/ws", set()) == (0, 0, False)
    assert faults.clear() == 1


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "explode"},
        {"type": "stall", "colour": "red"},
        {"type": "delay"},
        {"type": "down"},
        {"type": "rest", "status": 200},
        {"type": "rest", "status": 500, "seconds": "soon"},
    ],
)
def test_invalid_fault_specs_are_rejected(spec: dict) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        validate(spec)


def test_cli_fault_syntax() -> None:
    assert parse_fault_arg("type=rest,status=503,count=3,path=/fapi") == {
        "type": "rest", "status": 503, "count": 3, "path": "/fapi"
    }  # fmt: skip
    assert parse_fault_arg("type=drop,abort=false") == {"type": "drop", "abort": False}
