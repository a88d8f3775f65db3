"""Signal formulas: built-ins agree with independent plain-Python references, outputs depend on
the window only, a misbehaving formula is contained, and deployments load their own formulas."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from core.schemas import Candle
from tasks.formulas import (
    REGISTRY,
    Evaluation,
    FormulaLoadError,
    Output,
    Registry,
    Window,
    evaluate,
    load_modules,
    names,
    resolve,
)

BUILTINS = ("ema_cross", "rsi", "macd", "bollinger", "donchian", "vwap_deviation")
LIMIT_S = 5.0
START_MS = 1_700_000_000_000


# --- series ---------------------------------------------------------------------------------


def d(x: float) -> Decimal:
    return Decimal(f"{x:.8f}")  # as the exchange writes them


def make_candles(
    closes: Sequence[float],
    *,
    highs: Sequence[float] | None = None,
    lows: Sequence[float] | None = None,
    volumes: Sequence[float] | None = None,
    quotes: Sequence[float] | None = None,
) -> list[Candle]:
    """Return 1m candles with these closes; by default high = low = close, volume 1."""
    out = []
    for i, close in enumerate(closes):
        vol = volumes[i] if volumes else 1.0
        quote = quotes[i] if quotes else vol * close

        high = highs[i] if highs else close
        low = lows[i] if lows else close
        open_ms = START_MS + i * 60_000
        prev = closes[i - 1] if i else close
        out.append(Candle("BTCUSDT", "1m", open_ms, open_ms + 59_999, d(prev), d(high), d(low),
                          d(close), d(vol), d(quote), 10 + i, d(vol / 2), d(quote / 2), 100 * i,
                          100 * i + 9, True, "exchange"))  # fmt: skip
    return out


def sine_trend(n: int = 300) -> list[Candle]:
    closes = [100 + 0.02 * i + 4 * math.sin(i / 6) + 1.5 * math.sin(i / 2.3) for i in range(n)]
    return _ohlc(closes, [0.3 + 0.2 * abs(math.sin(i / 3)) for i in range(n)],
                 [5 + 3 * (1 + math.sin(i / 4)) for i in range(n)])  # fmt: skip


def random_walk(n: int = 300, seed: int = 11) -> list[Candle]:
    rng = random.Random(seed)
    closes, price = [], 27_000.0
    for _ in range(n):
        price *= math.exp(0.004 * rng.gauss(0, 1))
        closes.append(price)
    return _ohlc(closes, [c * 0.002 * rng.random() for c in closes],
                 [rng.uniform(0.5, 40) for _ in closes])  # fmt: skip


def _ohlc(closes: list[float], extras: list[float], volumes: list[float]) -> list[Candle]:
    opens = closes[:1] + closes[:-1]
    highs = [max(o, c) + e for o, c, e in zip(opens, closes, extras, strict=True)]
    lows = [min(o, c) - e for o, c, e in zip(opens, closes, extras, strict=True)]
    quotes = [
        v * (h + lo + c) / 3 for v, h, lo, c in zip(volumes, highs, lows, closes, strict=True)
    ]
    return make_candles(closes, highs=highs, lows=lows, volumes=volumes, quotes=quotes)


SERIES = {"sine_trend": sine_trend(), "random_walk": random_walk()}


# --- references: plain Python, written from the definitions ----------------------------------


def ref_ema(xs: Sequence[float], n: int, seed_end: int | None = None) -> list[float | None]:
    """EMA seeded, as TA-Lib does, with the SMA of the n values ending at ``seed_end``."""
    seed_end = n - 1 if seed_end is None else seed_end
    k = 2 / (n + 1)
    out: list[float | None] = [None] * len(xs)
    prev = sum(xs[seed_end - n + 1 : seed_end + 1]) / n
    out[seed_end] = prev
    for i in range(seed_end + 1, len(xs)):
        prev = (xs[i] - prev) * k + prev
        out[i] = prev
    return out


def floats(a: np.ndarray[Any, Any]) -> list[float]:
    return [float(x) for x in a]


def at(xs: list[float | None], i: int) -> float:
    x = xs[i]
    assert x is not None, f"no value at {i}"
    return x


def ref_ema_cross(w: Window, fast: int = 12, slow: int = 26) -> float:
    xs = floats(w.close)
    return at(ref_ema(xs, fast), -1) - at(ref_ema(xs, slow), -1)


def ref_rsi(w: Window, period: int = 14) -> float:
    """Wilder: simple averages of the first ``period`` changes, then (avg * (n-1) + x) / n."""
    changes = [b - a for a, b in pairwise(floats(w.close))]
    gain = sum(max(c, 0.0) for c in changes[:period]) / period
    loss = sum(max(-c, 0.0) for c in changes[:period]) / period
    for c in changes[period:]:
        gain = (gain * (period - 1) + max(c, 0.0)) / period
        loss = (loss * (period - 1) + max(-c, 0.0)) / period
    return 100 * gain / (gain + loss)


def ref_macd_hist(w: Window, fast: int = 12, slow: int = 26, signal: int = 9) -> float:
    """TA-Lib's MACD: both EMAs start at the slow one's first value (fast seeded there too)."""
    xs = floats(w.close)
    fast_ema, slow_ema = ref_ema(xs, fast, seed_end=slow - 1), ref_ema(xs, slow)
    line = [at(fast_ema, i) - at(slow_ema, i) for i in range(slow - 1, len(xs))]
    return line[-1] - at(ref_ema(line, signal), -1)


def ref_bollinger(w: Window, period: int = 20, k: float = 2.0) -> tuple[float, float, float]:
    xs = floats(w.close)[-period:]
    mean = sum(xs) / period
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / period)  # population stdev
    return mean + k * sd, mean - k * sd, xs[-1]


def ref_donchian(w: Window, period: int = 20) -> tuple[float, float, float]:
    previous = slice(-period - 1, -1)
    return max(floats(w.high)[previous]), min(floats(w.low)[previous]), float(w.close[-1])


def ref_vwap(w: Window, period: int = 20) -> float:
    return sum(floats(w.quote_volume)[-period:]) / sum(floats(w.volume)[-period:])


def sign_state(x: float) -> str:
    return "long" if x > 0 else "short" if x < 0 else "flat"


def reference(name: str, w: Window) -> Output:
    """The expected output of built-in ``name`` (default parameters) on exactly ``w``."""
    if name == "ema_cross":
        v = ref_ema_cross(w)
        return Output(v, sign_state(v))
    if name == "rsi":
        v = ref_rsi(w)
        return Output(v, "long" if v < 30 else "short" if v > 70 else "flat")
    if name == "macd":
        v = ref_macd_hist(w)
        return Output(v, sign_state(v))
    if name == "bollinger":
        upper, lower, close = ref_bollinger(w)
        state = "long" if close > upper else "short" if close < lower else "flat"
        return Output((close - lower) / (upper - lower), state)
    if name == "donchian":
        top, bottom, close = ref_donchian(w)
        state = "long" if close > top else "short" if close < bottom else "flat"
        return Output((close - bottom) / (top - bottom), state)
    v = float(w.close[-1]) / ref_vwap(w) - 1
    return Output(v, "long" if v < -0.01 else "short" if v > 0.01 else "flat")


def run(name: str, w: Window, params: dict[str, int | float] | None = None) -> Output:
    result = evaluate(resolve(name), params, w, time_limit_s=LIMIT_S)
    assert result.ok, result.message
    assert result.output is not None
    return result.output


def approx_output(value: float, state: str) -> Any:
    """An Output to compare with ==, its value within 1e-9 (relative) or 1e-12."""
    return (pytest.approx(value, rel=1e-9, abs=1e-12), state)


def upto(w: Window, end: int) -> Window:
    """The candles of ``w`` before index ``end``."""
    return Window(*(getattr(w, f)[:end] for f in Window.__dataclass_fields__))


# --- built-ins against the references ---------------------------------------------------------


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_matches_reference_at_every_candle(name: str, series: str) -> None:
    full = Window.from_candles(SERIES[series])
    need = resolve(name).window()
    states = set()
    for end in range(need, len(full) + 1):
        got = run(name, upto(full, end))
        want = reference(name, upto(full, end).tail(need))
        assert got.value == pytest.approx(want.value, rel=1e-9, abs=1e-12), (series, end)
        assert got.state == want.state, (series, end, got, want)
        states.add(got.state)
    assert len(states) > 1  # the series moves the formula between states


def test_builtins_are_registered_with_documented_windows() -> None:
    assert set(BUILTINS) <= set(names())
    windows = {n: resolve(n).window() for n in BUILTINS}
    assert windows == {"ema_cross": 78, "rsi": 71, "macd": 105, "bollinger": 20,
                       "donchian": 21, "vwap_deviation": 20}  # fmt: skip
    assert resolve("ema_cross").window({"slow": 50}) == 150
    assert resolve("rsi").window({"period": 10}) == 51


def test_rising_series() -> None:
    w = Window.from_candles(make_candles([100.0 + i for i in range(120)]))
    assert run("ema_cross", w).state == "long"
    assert run("rsi", w) == (100.0, "short")  # no loss at all: overbought
    assert run("donchian", w) == approx_output(20 / 19, "long")  # 1 above a 19-wide channel
    # %B of a straight line: the close is 9.5 above the mean, the band 2 * 2 * sd wide.
    sd = math.sqrt((20**2 - 1) / 12)
    assert run("bollinger", w) == approx_output(0.5 + 9.5 / (4 * sd), "flat")


def test_falling_series() -> None:
    w = Window.from_candles(make_candles([300.0 - i for i in range(120)]))
    assert run("ema_cross", w).state == "short"
    assert run("rsi", w) == (0.0, "long")  # no gain at all: oversold
    assert run("donchian", w) == approx_output(-1 / 19, "short")


def test_constant_series_is_flat_everywhere() -> None:
    w = Window.from_candles(make_candles([3.3] * 120))  # 3.3: its averages are not exact
    expected = {"ema_cross": 0.0, "rsi": 50.0, "macd": 0.0, "bollinger": 0.5, "donchian": 0.5,
                "vwap_deviation": 0.0}  # fmt: skip
    for name, value in expected.items():
        assert run(name, w) == approx_output(value, "flat"), name


def test_donchian_breaks_out_of_the_previous_candles_only() -> None:
    closes = [100.0] * 20
    base = {"highs": [101.0] * 21, "lows": [99.0] * 21}
    w = Window.from_candles(make_candles([*closes, 101.5], **base))
    assert run("donchian", w) == (1.25, "long")
    # The breakout candle's own high does not widen the channel it breaks out of.
    highs = [101.0] * 20 + [105.0]
    w = Window.from_candles(make_candles([*closes, 101.5], highs=highs, lows=base["lows"]))
    assert run("donchian", w) == (1.25, "long")
    assert run("donchian", Window.from_candles(make_candles([*closes, 100.0], **base))) == (
        0.5,
        "flat",
    )
    w = Window.from_candles(make_candles([*closes, 98.0], **base))
    assert run("donchian", w) == (-0.5, "short")


def test_bollinger_states() -> None:
    zigzag = [100.0 + (1 if i % 2 else -1) for i in range(19)]
    assert run("bollinger", Window.from_candles(make_candles([*zigzag, 110.0]))).state == "long"
    assert run("bollinger", Window.from_candles(make_candles([*zigzag, 90.0]))).state == "short"
    assert run("bollinger", Window.from_candles(make_candles([*zigzag, 100.0]))).state == "flat"


def test_vwap_deviation_mean_reversion() -> None:
    above = Window.from_candles(make_candles([100.0] * 19 + [102.0]))  # VWAP 100.1
    assert run("vwap_deviation", above) == approx_output(102 / 100.1 - 1, "short")
    below = Window.from_candles(make_candles([100.0] * 19 + [98.0]))  # VWAP 99.9
    assert run("vwap_deviation", below) == approx_output(98 / 99.9 - 1, "long")
    near = Window.from_candles(make_candles([100.0] * 19 + [100.5]))
    assert run("vwap_deviation", near).state == "flat"
    assert run("vwap_deviation", near, {"threshold": 0.0001}).state == "short"
    no_volume = Window.from_candles(make_candles([100.0] * 20, volumes=[0.0] * 20))
    assert run("vwap_deviation", no_volume) == (0.0, "flat")


def test_non_default_parameters() -> None:
    w = Window.from_candles(SERIES["random_walk"])
    got = run("ema_cross", w, {"fast": 5, "slow": 40})
    assert got.value == pytest.approx(ref_ema_cross(w.tail(120), 5, 40), rel=1e-9)
    got = run("macd", w, {"fast": 8, "slow": 21, "signal": 5})
    assert got.value == pytest.approx(ref_macd_hist(w.tail(78), 8, 21, 5), rel=1e-9)
    assert run("rsi", w, {"period": 7}).value == pytest.approx(ref_rsi(w.tail(36), 7), rel=1e-9)


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_output_depends_on_the_window_only(name: str) -> None:
    candles = SERIES["random_walk"]
    need = resolve(name).window()
    full = Window.from_candles(candles)
    outputs = [
        run(name, full),
        run(name, full),
        run(name, Window.from_candles(candles)),
        run(name, Window.from_candles(candles[-need:])),  # exactly the candles it needs
    ]
    assert {(o.value.hex(), o.state) for o in outputs} == {
        (outputs[0].value.hex(), outputs[0].state)
    }
    assert type(outputs[0].value) is float


@pytest.mark.parametrize("name", BUILTINS)
def test_short_window_is_not_evaluated(name: str) -> None:
    need = resolve(name).window()
    w = Window.from_candles(SERIES["sine_trend"][: need - 1])
    result = evaluate(resolve(name), None, w, time_limit_s=LIMIT_S)
    assert (result.error, result.output) == ("short_window", None)
    assert f"needs {need} candles, has {need - 1}" in result.message


# --- parameters and registration ----------------------------------------------------------------


def test_params_merge_defaults_and_coerce() -> None:
    assert resolve("rsi").params({"period": 10}) == {"period": 10, "low": 30.0, "high": 70.0}
    k = resolve("bollinger").params({"k": 3})["k"]
    assert (k, type(k)) == (3.0, float)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("rsi", {"perod": 10}, "formula 'rsi' has no parameter 'perod'"),
        ("rsi", {"period": 14.5}, "'period' must be an integer"),
        ("rsi", {"period": "14"}, "'period' must be a number"),
        ("rsi", {"period": True}, "'period' must be a number"),
        ("bollinger", {"k": math.nan}, "'k' must be a finite number"),
        ("ema_cross", {"fast": 30}, "fast must be less than slow"),
        ("rsi", {"low": 80.0}, "low < high"),
        ("donchian", {"period": 1}, "at least 2"),
    ],
)
def test_bad_params_are_refused_by_name(name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve(name).params(params)  # type: ignore[arg-type]
    w = Window.from_candles(SERIES["sine_trend"])
    with pytest.raises(ValueError, match=match):
        evaluate(resolve(name), params, w, time_limit_s=LIMIT_S)  # type: ignore[arg-type]


def test_registration_rules() -> None:
    reg = Registry()

    @reg.formula("one", window=lambda p: p["n"])
    def one(w: Window, *, n: int = 3) -> Output:
        return Output(1.0, "long")

    assert reg.resolve("one").defaults == {"n": 3}
    with pytest.raises(ValueError, match="already registered"):
        reg.formula("one", window=lambda p: 1)(one)
    with pytest.raises(ValueError, match="unknown formula 'two' \\(known: one\\)"):
        reg.resolve("two")
    with pytest.raises(TypeError, match="'n' must be keyword-only"):
        reg.formula("positional", window=lambda p: 1)(lambda w, n=3: Output(1.0, "long"))
    with pytest.raises(TypeError, match="'n' must be keyword-only"):
        reg.formula("text", window=lambda p: 1)(lambda w, *, n="3": Output(1.0, "long"))
    with pytest.raises(ValueError, match="lowercase"):
        reg.formula("Bad:Name", window=lambda p: 1)(one)
    with pytest.raises(ValueError, match="window must be a positive integer, got 0"):
        reg.formula("empty", window=lambda p: 0)(one)
    assert reg.names() == ["one"]
    assert "one" not in names()  # a registry of its own: the global one is untouched


# --- isolation ----------------------------------------------------------------------------------

ISOLATED = Registry()


@ISOLATED.formula("raises", window=lambda p: 1)
def _raises(w: Window) -> Output:
    raise ZeroDivisionError("division by zero")


@ISOLATED.formula("nan", window=lambda p: 1)
def _nan(w: Window) -> Output:
    return Output(float("nan"), "long")


@ISOLATED.formula("inf", window=lambda p: 1)
def _inf(w: Window) -> Output:
    return Output(np.float64("inf"), "long")


@ISOLATED.formula("bad_state", window=lambda p: 1)
def _bad_state(w: Window) -> Output:
    return Output(1.0, "buy")


@ISOLATED.formula("swapped", window=lambda p: 1)
def _swapped(w: Window) -> Output:
    return ("long", 1.0)  # type: ignore[return-value]


@ISOLATED.formula("text_value", window=lambda p: 1)
def _text_value(w: Window) -> Output:
    return ("1.5", "long")  # type: ignore[return-value]


@ISOLATED.formula("not_a_pair", window=lambda p: 1)
def _not_a_pair(w: Window) -> Output:
    return 1.0  # type: ignore[return-value]


@ISOLATED.formula("busy", window=lambda p: 1)
def _busy(w: Window) -> Output:
    while True:
        pass


@ISOLATED.formula("swallows", window=lambda p: 1)
def _swallows(w: Window) -> Output:
    while True:
        try:
            while True:
                pass
        except Exception:  # noqa: S110 - the time limit is not an Exception: it gets through
            pass


@ISOLATED.formula("sleeps", window=lambda p: 1)
def _sleeps(w: Window) -> Output:
    time.sleep(1.0)  # a blocking C call: interrupted only once it returns
    return Output(1.0, "long")


@ISOLATED.formula("plain_tuple", window=lambda p: 1)
def _plain_tuple(w: Window) -> Output:
    return (np.float32(0.5), "short")  # type: ignore[return-value]


@ISOLATED.formula("counting", window=lambda p: p["period"])
def _counting(w: Window, *, period: int = 5) -> Output:
    CALLS.append(len(w))
    return Output(float(len(w)), "flat")


CALLS: list[int] = []


@pytest.fixture(scope="module")
def worker() -> Iterator[ThreadPoolExecutor]:
    """One thread, not the main one, as in a Dramatiq worker."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def evaluate_in(pool: ThreadPoolExecutor, name: str, limit_s: float = 0.2) -> Evaluation:
    w = Window.from_candles(SERIES["sine_trend"])
    return pool.submit(evaluate, ISOLATED.resolve(name), None, w, time_limit_s=limit_s).result()


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("raises", "raised", "ZeroDivisionError: division by zero"),
        ("nan", "garbage", "nan returned value nan, not a finite number"),
        ("inf", "garbage", "value inf, not a finite number"),
        ("bad_state", "garbage", "state 'buy', not one of long, short, flat"),
        ("swapped", "garbage", "value 'long', not a number"),
        ("text_value", "garbage", "value '1.5', not a number"),
        ("not_a_pair", "garbage", "1.0, not an Output(value, state)"),
        ("busy", "timeout", "busy ran past 0.2 s"),
        ("swallows", "timeout", "swallows ran past 0.2 s"),
        ("sleeps", "timeout", "sleeps ran past 0.2 s"),
    ],
)
def test_misbehaving_formula_is_contained(
    worker: ThreadPoolExecutor, name: str, kind: str, message: str
) -> None:
    result = evaluate_in(worker, name)
    assert (result.ok, result.error, result.output) == (False, kind, None)
    assert message in result.message
    # The same thread goes on to evaluate a good formula correctly.
    w = Window.from_candles(SERIES["sine_trend"])
    good = worker.submit(evaluate, resolve("rsi"), None, w, time_limit_s=LIMIT_S).result()
    assert good.ok
    assert good.output is not None
    assert good.output.value == pytest.approx(ref_rsi(w.tail(71)), rel=1e-9)


def test_numpy_scalars_are_accepted_as_values(worker: ThreadPoolExecutor) -> None:
    result = evaluate_in(worker, "plain_tuple")
    assert result == Evaluation(Output(0.5, "short"))
    assert result.output is not None
    assert type(result.output.value) is float


def test_formula_sees_exactly_its_window() -> None:
    CALLS.clear()
    w = Window.from_candles(SERIES["sine_trend"])
    evaluate(ISOLATED.resolve("counting"), {"period": 7}, w, time_limit_s=LIMIT_S)
    evaluate(ISOLATED.resolve("counting"), {"period": 7}, w.tail(6), time_limit_s=LIMIT_S)
    assert CALLS == [7]  # the 6-candle window was refused before the formula ran


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@ISOLATED.formula("near_deadline", window=lambda p: 1)
def _near_deadline(w: Window) -> Output:
    _spin(0.005)
    return Output(1.0, "long")


def test_no_interrupt_arrives_after_evaluate_returned(worker: ThreadPoolExecutor) -> None:
    """Formulas finishing right at their deadline: ok or timeout, never a stray interrupt."""

    def rounds() -> set[str | None]:
        kinds = set()
        for _ in range(40):
            kinds.add(evaluate_in_thread("near_deadline", 0.005).error)
            _spin(0.01)  # a stray interrupt would be raised here
        return kinds

    def evaluate_in_thread(name: str, limit_s: float) -> Evaluation:
        w = Window.from_candles(SERIES["sine_trend"][:5])
        return evaluate(ISOLATED.resolve(name), None, w, time_limit_s=limit_s)

    assert worker.submit(rounds).result() <= {None, "timeout"}


# --- windows ----------------------------------------------------------------------------------


def test_window_from_candles() -> None:
    candles = SERIES["random_walk"][:3]
    w = Window.from_candles(candles)
    assert len(w) == 3
    assert floats(w.close) == [float(c.close) for c in candles]
    assert floats(w.quote_volume) == [float(c.quote_volume) for c in candles]
    assert w.trades.tolist() == [10, 11, 12]
    assert w.open_time_ms.dtype == np.int64
    assert w.tail(2).open_time_ms.tolist() == [c.open_time_ms for c in candles[1:]]
    with pytest.raises(ValueError, match="read-only"):
        w.close[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        w.tail(2).volume[0] = 0.0
    with pytest.raises(ValueError, match="out of order"):
        Window.from_candles([candles[1], candles[0]])
    with pytest.raises(ValueError, match="at least one candle"):
        w.tail(0)
    assert len(Window.from_candles([])) == 0


def test_window_does_not_freeze_callers_arrays() -> None:
    closes = np.array([1.0, 2.0])
    ones, ints = np.ones(2), np.arange(2, dtype=np.int64)
    w = Window(ones, ones, ones, closes, ones, ones, ones, ints, ints)
    closes[0] = 5.0  # the caller's array stays writeable, and the window keeps its own copy
    assert floats(w.close) == [1.0, 2.0]


# --- plugins ------------------------------------------------------------------------------------


@pytest.fixture
def registry_restored() -> Iterator[None]:
    """Undo what a test registers, and forget the plugin modules it imported."""
    snapshot = REGISTRY.snapshot()
    yield
    REGISTRY.restore(snapshot)
    for module in [m for m in sys.modules if m.startswith("tests.unit.plugins.")]:
        del sys.modules[module]


@pytest.mark.usefixtures("registry_restored")
def test_load_modules_registers_a_deployments_formulas() -> None:
    assert load_modules(["tests.unit.plugins.acme_formulas"]) == ["acme_range"]
    acme = resolve("acme_range")
    assert acme.window({"period": 4}) == 4
    w = Window.from_candles(make_candles([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert evaluate(acme, {"period": 4}, w, time_limit_s=LIMIT_S) == Evaluation(Output(1.0, "long"))


def test_acme_formula_is_gone_after_the_test() -> None:
    with pytest.raises(ValueError, match="unknown formula 'acme_range'"):
        resolve("acme_range")


@pytest.mark.usefixtures("registry_restored")
@pytest.mark.parametrize(
    ("module", "cause"),
    [
        ("tests.unit.plugins.missing", "ModuleNotFoundError: No module named"),
        ("tests.unit.plugins.broken_formulas", "RuntimeError: ACME_API_KEY is not set"),
        ("tests.unit.plugins.clashing_formulas", "formula 'rsi' is already registered"),
        ("acme", "No module named 'acme'"),
    ],
)
def test_load_modules_names_the_module_that_failed(module: str, cause: str) -> None:
    before = names()
    with pytest.raises(FormulaLoadError, match=f"formula module '{module}' could not be loaded"):
        load_modules(["tests.unit.plugins.acme_formulas", module])
    with pytest.raises(FormulaLoadError) as info:
        load_modules([module])
    assert cause in str(info.value)
    assert info.value.__cause__ is not None
    # What the failing module registered is undone; the module loaded before it stays.
    assert names() == sorted([*before, "acme_range"])
    assert resolve("rsi").fn.__module__ == "tasks.formulas.builtin"
