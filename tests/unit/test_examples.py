"""The shipped examples work as docs/formulas.md says: the formula module loads and evaluates,
the signals file resolves into a plan, and the offline replay matches a direct evaluation."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from core.config import Settings
from core.schemas import Candle
from tasks.formulas import REGISTRY, Window, evaluate, load_modules, resolve
from tasks.signal_eval import SignalPlan

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_400_000


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    snapshot = REGISTRY.snapshot()
    yield
    REGISTRY.restore(snapshot)
    sys.modules.pop("examples.range_position", None)  # registers again when next imported


def _candles(closes: list[float]) -> list[Candle]:
    d = Decimal
    out = []
    for i, c in enumerate(closes):
        price = d(str(c))
        out.append(Candle("BTCUSDT", "1m", T0 + i * 60_000, T0 + i * 60_000 + 59_999, price,
                          price + 1, price - 1, price, d("1"), price, 1, d("0.5"), price / 2, i,
                          i, True, "trades"))  # fmt: skip
    return out


def test_the_example_formula_registers_and_reads_the_range() -> None:
    assert load_modules(["examples.range_position"]) == ["range_position"]
    f = resolve("range_position")
    rising = Window.from_candles(_candles([100.0 + i for i in range(20)]))
    ev = evaluate(f, None, rising, time_limit_s=1.0)
    assert ev.output is not None
    assert ev.output.state == "long"
    with pytest.raises(ValueError, match=r"band must be between 0 and 0\.5"):
        f.params({"band": 0.7})


def test_the_example_signals_file_resolves_into_a_plan() -> None:
    settings = Settings.from_env({
        "TP_DEMO": "1", "TP_SIGNALS_FILE": str(ROOT / "examples" / "signals.toml"),
        "TP_FORMULA_MODULES": "examples.range_position",
    })  # fmt: skip
    plan = SignalPlan(settings)
    assert [p.name for p in plan.signals] == ["rsi", "ema_fast", "range_position"]
    assert [p.name for p in plan.for_series("BTCUSDT", "1h")] == ["rsi", "range_position"]
    assert [p.name for p in plan.for_series("SOLUSDT", "5m")] == ["rsi", "ema_fast"]


def test_the_offline_replay_evaluates_each_closed_candle_with_a_full_window() -> None:
    from examples.offline import replay

    load_modules(["examples.range_position"])
    candles = _candles([100.0, 103.0, 101.0, 104.0, 102.0, 99.0])
    got = replay("range_position", {"period": 3}, candles, time_limit_s=1.0)
    assert [t for t, _ in got] == [c.open_time_ms for c in candles[2:]]
    direct = evaluate(resolve("range_position"), {"period": 3},
                      Window.from_candles(candles[1:4]), time_limit_s=1.0)  # fmt: skip
    assert got[1][1] == direct
