"""Signal evaluation on a series: closed values from closed exact candles only, once, in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from core.config import Settings
from core.schemas import Candle
from tasks.formulas import REGISTRY, Window, evaluate, resolve
from tasks.signal_eval import CATCH_UP, Breaker, PlanError, Planned, SignalPlan, evaluate_series

NOW = 1_800_000_000_000


def candle(i: int, close: float, *, closed: bool = True, source: str = "trades") -> Candle:
    c = Decimal(str(close))
    return Candle("BTCUSDT", "1m", i * 60_000, i * 60_000 + 59_999, c, c, c, c, Decimal(1), c,
                  1, Decimal(0), Decimal(0), i, i, closed, source)  # fmt: skip


def series(n: int, *, open_last: bool = False) -> list[Candle]:
    out = [candle(i, 100 + (i * 7919 % 13) - 6) for i in range(n)]
    if open_last:
        out[-1] = dataclasses.replace(out[-1], closed=False)
    return out


def planned(name: str = "ema_cross", **params: float) -> Planned:
    f = resolve(name)
    full = f.params(params)
    return Planned(name, f, full, f.window(full), None, frozenset({"1m"}))


def run(p: Planned, candles: list[Candle], done: int | None = None) -> list[tuple[int, bool]]:
    res = evaluate_series([p], candles, {p.name: done}, now_ms=NOW, time_limit_s=5)
    assert not res.errors
    return [(s.open_time_ms // 60_000, s.provisional) for s in res.signals]


def test_the_first_time_only_the_latest_closed_candle_and_the_open_one_are_evaluated() -> None:
    p = planned(fast=3, slow=5)  # window 15
    assert run(p, series(30, open_last=True)) == [(28, False), (29, True)]


def test_a_missed_round_is_caught_up_in_order_and_bounded() -> None:
    p = planned(fast=3, slow=5)
    candles = series(40)
    assert run(p, candles, done=36 * 60_000) == [(37, False), (38, False), (39, False)]
    late = run(p, candles, done=10 * 60_000)
    assert late == [(i, False) for i in range(40 - CATCH_UP, 40)]
    assert run(p, candles, done=39 * 60_000) == []  # nothing new: a duplicate writes nothing


def test_a_short_window_is_never_evaluated_and_says_how_many_candles_are_missing() -> None:
    p = planned(fast=3, slow=5)  # 15 candles
    res = evaluate_series([p], series(10, open_last=True), {}, now_ms=NOW, time_limit_s=5)
    assert res.signals == []
    assert res.short == 15 - 9


def test_a_partial_candle_holds_back_every_closed_value_whose_window_holds_it() -> None:
    p = planned(fast=3, slow=5)
    candles = series(30)
    candles[20] = dataclasses.replace(candles[20], source="partial")
    res = evaluate_series([p], candles, {p.name: 24 * 60_000}, now_ms=NOW, time_limit_s=5)
    assert res.signals == []
    assert res.waiting_partial == 1
    candles[20] = dataclasses.replace(candles[20], source="exchange")  # repaired: now exact
    assert [t for t, _ in run(p, candles, done=24 * 60_000)] == [25, 26, 27, 28, 29]


def test_a_closed_value_uses_no_later_candle_and_a_provisional_one_is_marked() -> None:
    p = planned(fast=3, slow=5)
    candles = series(30, open_last=True)
    res = evaluate_series([p], candles, {p.name: 25 * 60_000}, now_ms=NOW, time_limit_s=5)
    by_time = {s.open_time_ms // 60_000: s for s in res.signals}
    for t in (26, 27, 28):
        offline = evaluate(p.formula, p.params, Window.from_candles(candles[t + 1 - 15 : t + 1]),
                           time_limit_s=5)  # fmt: skip
        assert (by_time[t].value, by_time[t].state) == tuple(offline.output or ())
        assert not by_time[t].provisional
    assert by_time[29].provisional


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    snapshot = REGISTRY.snapshot()
    yield
    REGISTRY.restore(snapshot)


def test_a_failing_formula_is_reported_and_the_next_one_still_runs(scratch_registry: None) -> None:
    @REGISTRY.formula("boom", window=lambda p: 2)
    def boom(w: Window, *, x: int = 1) -> tuple[float, str]:
        raise ZeroDivisionError("x")

    res = evaluate_series([planned("boom"), planned(fast=3, slow=5)], series(20), {},
                          now_ms=NOW, time_limit_s=5)  # fmt: skip
    assert [(n, k) for n, k, _ in res.errors] == [("boom", "raised")]
    assert [s.formula for s in res.signals] == ["ema_cross"]


def plan_env(tmp_path: Path, toml: str, **env: str) -> Settings:
    path = tmp_path / "signals.toml"
    path.write_text(toml)
    return Settings.from_env({"TP_DEMO": "1", "TP_SIGNALS_FILE": str(path), **env})


@pytest.mark.parametrize(
    ("toml", "env", "complaint"),
    [
        ('[[signal]]\nformula = "nope"\n', {}, "unknown formula 'nope'"),
        ('[[signal]]\nformula = "rsi"\nparams = { speed = 3 }\n', {}, "no parameter 'speed'"),
        ('[[signal]]\nformula = "rsi"\ntimeframes = ["1s"]\n', {}, "not in TP_TIMEFRAMES"),
        (
            '[[signal]]\nformula = "macd"\n',
            {"TP_CANDLE_RETENTION": "100", "TP_CANDLE_HISTORY": "50"},
            "TP_CANDLE_RETENTION",
        ),
    ],
)
def test_a_plan_that_cannot_run_is_refused_at_start(
    tmp_path: Path, toml: str, env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(PlanError, match=complaint):
        SignalPlan(plan_env(tmp_path, toml, **env))


def test_the_plan_runs_a_signal_only_on_its_symbols_and_timeframes(tmp_path: Path) -> None:
    toml = '[[signal]]\nname = "r"\nformula = "rsi"\nsymbols = ["ETHUSDT"]\ntimeframes = ["5m"]\n'
    plan = SignalPlan(plan_env(tmp_path, toml))
    assert [p.name for p in plan.for_series("ETHUSDT", "5m")] == ["r"]
    assert plan.for_series("ETHUSDT", "1m") == []
    assert plan.for_series("BTCUSDT", "5m") == []


def test_a_formula_that_keeps_timing_out_is_suspended_then_tried_again() -> None:
    b = Breaker(after=3, cooldown_ms=1000, max_cooldown_ms=3000)
    assert [b.timed_out("slow", 0) for _ in range(3)] == [0, 0, 1000]
    assert not b.allowed("slow", 999)
    assert b.allowed("other", 0)
    assert b.allowed("slow", 1000)
    assert b.timed_out("slow", 1000) == 2000  # back, times out again: suspended longer
    assert b.timed_out("slow", 3000) == 3000  # capped
    b.succeeded("slow")
    assert [b.timed_out("slow", 9000) for _ in range(3)] == [0, 0, 1000]  # a fresh start
