"""Which signals run where, and their evaluation on one series' candles. Pure: no I/O.

* :class:`SignalPlan` resolves the configured signals (``TP_SIGNALS_FILE``, the built-ins by
  default) against the formula registry once, at start-up: an unknown formula, a bad parameter or
  a window longer than the candles kept is a configuration error, reported before any work.
* :func:`evaluate_series` turns the latest candles of one (symbol, timeframe) into Signals:

  - **closed** values for the closed candles newer than the signal's last one (at most
    ``CATCH_UP`` of them, oldest first; the first time, only the latest), each computed from that
    candle and the closed candles before it, never from a later one (no look-ahead). A window
    holding a ``partial`` candle (known to miss trades) is not evaluated: the value waits for the
    exchange's kline to replace it, so a closed value is computed once, from exact candles, and
    never changes (no repainting);
  - one **provisional** value on the open candle (with the closed ones before it), marked so.

  A window shorter than the formula needs is never evaluated (``short`` says how many candles
  are missing so that the caller can ask backfill for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core.config import Settings, SignalSpec
from core.schemas import Candle, Signal
from tasks.formulas import Formula, Param, Window, evaluate, load_modules, resolve

CATCH_UP = 5  # closed candles evaluated per signal per round at most (a missed trigger)


class PlanError(ValueError):
    """The configured signals cannot run: unknown formula, bad parameters, window too long."""


@dataclass(frozen=True, slots=True)
class Planned:
    """One configured signal, resolved: its formula, full parameters and window."""

    name: str
    formula: Formula
    params: dict[str, Param]
    window: int
    symbols: frozenset[str] | None
    timeframes: frozenset[str]


class SignalPlan:
    """The signals to evaluate per (symbol, timeframe); see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        load_modules(settings.signals.modules)
        configured = {tf.name for tf in settings.timeframes}
        retention = dict(settings.candles.retention)
        self.signals = [self._resolve(spec, configured, retention)
                        for spec in settings.signals.specs]  # fmt: skip
        self._by_series: dict[tuple[str, str], list[Planned]] = {}

    @staticmethod
    def _resolve(spec: SignalSpec, configured: set[str], retention: dict[str, int]) -> Planned:
        try:
            formula = resolve(spec.formula)
            params = formula.params(dict(spec.params))
            window = formula.window(params)
        except ValueError as exc:
            raise PlanError(f"signal {spec.name!r}: {exc}") from None
        timeframes = set(spec.timeframes) if spec.timeframes is not None else configured
        if timeframes - configured:
            raise PlanError(f"signal {spec.name!r}: timeframes {sorted(timeframes - configured)} "
                            "are not in TP_TIMEFRAMES")  # fmt: skip
        for tf in timeframes:
            if window + CATCH_UP > retention[tf]:
                raise PlanError(
                    f"signal {spec.name!r} needs {window} {tf} candles (+{CATCH_UP}): "
                    f"raise TP_CANDLE_RETENTION for {tf} above {retention[tf]}"
                )
        symbols = frozenset(spec.symbols) if spec.symbols is not None else None
        return Planned(spec.name, formula, params, window, symbols, frozenset(timeframes))

    def for_series(self, symbol: str, timeframe: str) -> list[Planned]:
        key = (symbol, timeframe)
        found = self._by_series.get(key)
        if found is None:
            found = [p for p in self.signals if timeframe in p.timeframes
                     and (p.symbols is None or symbol in p.symbols)]  # fmt: skip
            if len(self._by_series) < 100_000:  # bounded: symbols x timeframes in practice
                self._by_series[key] = found
        return found


@dataclass
class SeriesResult:
    signals: list[Signal] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (signal, kind, message)
    short: int = 0  # closed candles missing for the longest window (0: none missing)
    waiting_partial: int = 0  # closed values held back by a partial candle in their window


def evaluate_series(
    planned: Sequence[Planned],
    candles: Sequence[Candle],
    last_done: dict[str, int | None],
    *,
    now_ms: int,
    time_limit_s: float,
) -> SeriesResult:
    """Evaluate ``planned`` on one series' latest ``candles`` (oldest first).

    ``last_done`` maps a signal name to the open time of its latest closed value (None: none yet).
    """
    out = SeriesResult()
    closed = [c for c in candles if c.closed]
    current = candles[-1] if candles and not candles[-1].closed else None
    rows = [*closed, current] if current is not None else closed
    if not rows:
        return out
    arrays = Window.from_candles(rows)  # once per series: every evaluation reads a span of it
    for p in planned:
        done = last_done.get(p.name)
        due = [i for i, c in enumerate(closed) if done is None or c.open_time_ms > done]
        due = due[-1:] if done is None else due[-CATCH_UP:]
        for i in due:
            if i + 1 < p.window:
                out.short = max(out.short, p.window - i - 1)
                break
            if any(c.source == "partial" for c in closed[i + 1 - p.window : i + 1]):
                out.waiting_partial += 1
                break  # later ones wait too: values are written in candle order
            window = arrays.span(i + 1 - p.window, i + 1)
            if not _evaluate(p, window, closed[i], now_ms, time_limit_s, out):
                break
        if current is not None and len(rows) >= p.window:
            window = arrays.span(len(rows) - p.window, len(rows))
            _evaluate(p, window, current, now_ms, time_limit_s, out)
    return out


def _evaluate(
    p: Planned, window: Window, last: Candle, now_ms: int, time_limit_s: float, out: SeriesResult
) -> bool:
    result = evaluate(p.formula, p.params, window, time_limit_s=time_limit_s)
    if result.output is None:
        out.errors.append((p.name, result.error or "raised", result.message))
        return False
    value, state = result.output
    out.signals.append(Signal(last.symbol, last.timeframe, p.name, last.open_time_ms, value, state,
                              not last.closed, now_ms))  # fmt: skip
    return True
