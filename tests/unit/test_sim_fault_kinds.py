"""The trading-path fault kinds: validation, ``count``/``seconds``, the questions they answer."""

from __future__ import annotations

import pytest

from simulator.faults import Faults, parse_fault_arg, validate
from simulator.model import VirtualClock


def test_order_unknown_defaults_to_one_503_and_filters_by_symbol() -> None:
    faults = Faults(VirtualClock(0))
    fault = faults.add({"type": "order_unknown", "symbol": "ETHUSDT"})
    assert fault.as_dict() == {
        "id": fault.id,
        "type": "order_unknown",
        "symbol": "ETHUSDT",
        "mode": "503",
        "count": 1,
        "untilMs": None,
    }
    assert faults.take_order_unknown("BTCUSDT") is None
    assert faults.take_order_unknown("ETHUSDT") is fault
    assert faults.take_order_unknown("ETHUSDT") is None  # used up and removed
    assert faults.as_list() == []


def test_order_unknown_count_and_seconds() -> None:
    clock = VirtualClock(0)
    faults = Faults(clock)
    faults.add({"type": "order_unknown", "mode": "timeout", "ms": 100, "count": 2, "seconds": 1})
    assert faults.take_order_unknown(None) is not None
    clock.advance(1000)
    assert faults.take_order_unknown(None) is None  # expired with one answer left


def test_lookup_lag_is_the_longest_matching_lag_until_it_expires() -> None:
    clock = VirtualClock(0)
    faults = Faults(clock)
    assert faults.lookup_lag_ms("BTCUSDT") == 0
    faults.add({"type": "lookup_lag", "ms": 500, "seconds": 2})
    faults.add({"type": "lookup_lag", "ms": 1500, "symbol": "ETHUSDT"})
    assert faults.lookup_lag_ms("BTCUSDT") == 500
    assert faults.lookup_lag_ms("ETHUSDT") == 1500
    clock.advance(2000)
    assert faults.lookup_lag_ms("BTCUSDT") == 0
    faults.clear()
    assert faults.lookup_lag_ms("ETHUSDT") == 0


def test_listenkey_expire_acts_once_and_is_not_kept() -> None:
    faults = Faults(VirtualClock(0))
    faults.add({"type": "listenkey_expire", "apiKey": "a" * 64})
    assert faults.as_list() == []


def test_cli_syntax_of_the_new_kinds() -> None:
    spec = parse_fault_arg("type=order_unknown,mode=408,count=2,symbol=BTCUSDT")
    assert validate(spec) == (
        "order_unknown",
        {"mode": "408", "count": 2, "symbol": "BTCUSDT"},
    )
    assert validate(parse_fault_arg("type=lookup_lag,ms=800,seconds=30"))[1] == {
        "ms": 800,
        "seconds": 30,
    }


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "order_unknown", "mode": "500"},
        {"type": "order_unknown", "count": 0},
        {"type": "order_unknown", "path": "/fapi"},
        {"type": "order_unknown", "symbol": 5},
        {"type": "lookup_lag"},
        {"type": "lookup_lag", "ms": -1},
        {"type": "listenkey_expire", "seconds": 5},
        {"type": "listenkey_expire", "apiKey": 7},
    ],
)
def test_invalid_trading_fault_specs(spec: dict) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        validate(spec)
