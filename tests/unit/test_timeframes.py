"""Timeframes bucket times the way Binance's klines do."""

from __future__ import annotations

import pytest

from core.timeframes import parse_timeframe

# 2021-07-22 22:25:41.421 UTC, a trade time from the recorded fixture (a Thursday).
T = 1626992741421


@pytest.mark.parametrize(
    ("name", "open_ms", "close_ms"),
    [
        ("1s", 1626992741000, 1626992741999),
        ("15s", 1626992730000, 1626992744999),
        ("1m", 1626992700000, 1626992759999),  # the fixture's closed kline t/T
        ("4h", 1626984000000, 1626998399999),
        ("1d", 1626912000000, 1626998399999),
        ("1w", 1626652800000, 1627257599999),  # Monday 2021-07-19 00:00 UTC
        ("1M", 1625097600000, 1627775999999),  # 2021-07-01 .. 2021-07-31 23:59:59.999
    ],
)
def test_open_and_close_times_match_binance(name: str, open_ms: int, close_ms: int) -> None:
    tf = parse_timeframe(name)
    assert tf.open_time_ms(T) == open_ms
    assert tf.close_time_ms(open_ms) == close_ms


def test_december_rolls_over_to_january() -> None:
    tf = parse_timeframe("1M")
    dec = 1638316800000  # 2021-12-01
    assert tf.next_open_time_ms(dec) == 1640995200000  # 2022-01-01


@pytest.mark.parametrize("name", ["7m", "3d", "1y", "m1", "", "60s"])
def test_unsupported_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unsupported timeframe"):
        parse_timeframe(name)
