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

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.config import Settings, SignalSpec
from core.errors import PlanError as PlanError  # raised here; tests import it from here
from core.schemas import Candle, Signal
from tasks.formulas import Formula, Param, Window, evaluate, load_modules, resolve

CATCH_UP = 5  # closed candles evaluated per signal per round at most (a missed trigger)


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


class Breaker:
    """Suspends a signal whose evaluations keep running past their time limit.

    A timeout costs the whole limit of a worker thread: a formula that times out on every series
    would starve the others. After ``after`` timeouts in a row it is skipped for ``cooldown_ms``,
    doubling (up to ``max_cooldown_ms``) each time it times out again once allowed back.
    Per worker process; thread-safe.
    """

    def __init__(
        self, *, after: int = 3, cooldown_ms: int = 30_000, max_cooldown_ms: int = 600_000
    ) -> None:
        self.after, self.cooldown_ms, self.max_cooldown_ms = after, cooldown_ms, max_cooldown_ms
        self._lock = threading.Lock()
        self._strikes: dict[str, int] = {}
        self._until: dict[str, int] = {}
        self._next_cooldown: dict[str, int] = {}

    def allowed(self, name: str, now_ms: int) -> bool:
        return self._until.get(name, 0) <= now_ms

    def timed_out(self, name: str, now_ms: int) -> int:
        """Count a timeout; return the suspension in ms it starts (0: none)."""
        with self._lock:
            strikes = self._strikes[name] = self._strikes.get(name, 0) + 1
            if strikes < self.after:
                return 0
            cooldown = self._next_cooldown.get(name, self.cooldown_ms)
            self._until[name] = now_ms + cooldown
            self._next_cooldown[name] = min(cooldown * 2, self.max_cooldown_ms)
            self._strikes[name] = self.after - 1  # allowed back, one more timeout suspends again
            return cooldown

    def succeeded(self, name: str) -> None:
        if name in self._strikes:
            with self._lock:
                self._strikes.pop(name, None)
                self._next_cooldown.pop(name, None)


@dataclass
class SeriesResult:
    signals: list[Signal] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (signal, kind, message)
    short: int = 0  # closed candles missing for the longest window (0: none missing)
    waiting_partial: int = 0  # closed values held back by a partial candle in their window
    suspended: list[tuple[str, int]] = field(default_factory=list)  # (signal, ms) just suspended
    skipped: int = 0  # evaluations not run: their signal is suspended


def evaluate_series(
    planned: Sequence[Planned],
    candles: Sequence[Candle],
    last_done: dict[str, int | None],
    *,
    now_ms: int,
    time_limit_s: float,
    breaker: Breaker | None = None,
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
        if breaker is not None and not breaker.allowed(p.name, now_ms):
            out.skipped += 1
            continue
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
            if not _evaluate(p, window, closed[i], now_ms, time_limit_s, out, breaker):
                break
        if current is not None and len(rows) >= p.window:
            window = arrays.span(len(rows) - p.window, len(rows))
            _evaluate(p, window, current, now_ms, time_limit_s, out, breaker)
    return out


def _evaluate(
    p: Planned,
    window: Window,
    last: Candle,
    now_ms: int,
    time_limit_s: float,
    out: SeriesResult,
    breaker: Breaker | None,
) -> bool:
    if breaker is not None and not breaker.allowed(p.name, now_ms):
        out.skipped += 1
        return False
    result = evaluate(p.formula, p.params, window, time_limit_s=time_limit_s)
    if result.output is None:
        out.errors.append((p.name, result.error or "raised", result.message))
        if result.error == "timeout" and breaker is not None:
            cooldown = breaker.timed_out(p.name, now_ms)
            if cooldown:
                out.suspended.append((p.name, cooldown))
        return False
    if breaker is not None:
        breaker.succeeded(p.name)
    value, state = result.output
    out.signals.append(Signal(last.symbol, last.timeframe, p.name, last.open_time_ms, value, state,
                              not last.closed, now_ms))  # fmt: skip
    return True
