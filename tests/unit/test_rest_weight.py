"""The IP weight rules, without I/O: who a 429 or 418 stops, the reserve, its setting, and the
simulator charging orders 0 on the IP (issue 16)."""

from __future__ import annotations

import pytest

from binance.rest import default_reserve, refusal, weight_limit
from core.config import Settings
from core.errors import Banned, ConfigError, RateLimited
from simulator.model import VirtualClock
from simulator.rest import WeightLimiter

NOW = 1_700_000_000_000
ENV = {
    "TP_MARKET": "sim",
    "TP_JWT_KEYS": "k1:" + "s" * 32,
    "TP_KEY_ENCRYPTION_KEY": "bJ0vUQ2q6hT3n1xHq4Zb5m9C7yWc3kQe1fVd8sRt2aA=",
}


def test_a_ban_stops_everything() -> None:
    for weight in (0, 1, 40):
        stop = refusal(NOW + 5000, 0, 0, weight=weight, now_ms=NOW)
        assert isinstance(stop, Banned)
        assert (stop.until_ms, stop.retry_after_ms) == (NOW + 5000, 5000)


def test_a_429_stops_weighted_calls_and_orders_only_once_an_order_got_one() -> None:
    stop = refusal(0, NOW + 3000, 0, weight=1, now_ms=NOW)
    assert isinstance(stop, RateLimited)
    assert stop.retry_after_ms == 3000
    assert stop.msg == f"backing off until {NOW + 3000} (429 seen)"
    assert refusal(0, NOW + 3000, 0, weight=0, now_ms=NOW) is None  # an order goes
    for weight in (0, 1):  # an order was answered 429 itself: orders wait as well
        stop = refusal(0, NOW + 3000, NOW + 2000, weight=weight, now_ms=NOW)
        assert isinstance(stop, RateLimited)
        assert stop.retry_after_ms == (2000 if weight == 0 else 3000)
    assert refusal(NOW, NOW - 1, NOW, weight=5, now_ms=NOW) is None  # all ended


def test_background_work_leaves_the_reserve() -> None:
    assert default_reserve(1200) == 300
    assert weight_limit(1200, None) == 900
    assert weight_limit(1200, 0) == 1200
    assert weight_limit(2400, 400) == 2000
    for bad in (-1, 1200, 1300):
        with pytest.raises(ValueError, match="weight reserve"):
            weight_limit(1200, bad)


def test_the_reserve_setting_defaults_to_a_quarter_and_stays_below_the_budget() -> None:
    candles = Settings.from_env(ENV).candles
    assert (candles.rest_weight_budget, candles.rest_weight_reserve) == (1200, 300)
    candles = Settings.from_env({**ENV, "TP_REST_WEIGHT_BUDGET": "2000"}).candles
    assert candles.rest_weight_reserve == default_reserve(2000) == 500
    candles = Settings.from_env({**ENV, "TP_REST_WEIGHT_RESERVE": "0"}).candles
    assert candles.rest_weight_reserve == 0
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**ENV, "TP_REST_WEIGHT_BUDGET": "100", "TP_REST_WEIGHT_RESERVE": "100"})
    assert dict(info.value.problems) == {
        "TP_REST_WEIGHT_RESERVE": "must be below TP_REST_WEIGHT_BUDGET"
    }


def test_the_simulator_never_refuses_a_zero_weight_order_for_weight_only_for_a_ban() -> None:
    clock = VirtualClock(NOW)
    limiter = WeightLimiter(clock, limit=10, ban_after=1, ban_base_s=2)
    assert limiter.charge("ip", 10).status == 200
    assert limiter.charge("ip", 1).status == 429  # over: weighted requests are refused
    placed = limiter.charge("ip", 0)  # POST /fapi/v1/order: "0 on IP rate limit"
    assert (placed.status, placed.used) == (200, 11)
    assert limiter.charge("ip", 1).status == 418  # kept sending weighted requests: banned
    assert limiter.charge("ip", 0).status == 418  # a ban refuses orders too
