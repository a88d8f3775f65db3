"""Signal formulas: named pure functions from a window of candles to a value and a state.

A formula is a plain function ``fn(w: Window, *, <params>) -> Output``, registered with
:func:`formula`. Its parameters are its keyword-only arguments, each with an int or float default;
``window`` says, from those parameters, how many candles it needs. Built-ins live in
:mod:`tasks.formulas.builtin`; a deployment adds its own by naming modules for
:func:`load_modules` to import (``TP_FORMULA_MODULES=acme.formulas``)::

    @formula("range_pos", window=lambda p: p["period"])
    def range_pos(w: Window, *, period: int = 20) -> Output:
        ...
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from core.errors import FormulaLoadError as FormulaLoadError  # raised here
from core.schemas import Candle

Param = int | float
Params = Mapping[str, Param]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FormulaFn = TypeVar("FormulaFn", bound=Callable[..., "Output"])

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # goes into Signal.formula and Redis keys


class Output(NamedTuple):
    """A formula's value on the window's last candle, and the state it stands for."""

    value: float
    state: str  # one of SIGNAL_STATES


@dataclass(frozen=True, eq=False, slots=True)
class Window:
    """Candles of one symbol and timeframe as read-only arrays, oldest first.

    Read-only because one window is shared by every formula evaluated on it.
    """

    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray  # base asset
    quote_volume: FloatArray
    taker_buy_volume: FloatArray
    trades: IntArray
    open_time_ms: IntArray

    def __post_init__(self) -> None:
        n = len(self.close)
        for name in _FIELDS:
            given = getattr(self, name)
            dtype = np.int64 if name in ("trades", "open_time_ms") else np.float64
            a = np.ascontiguousarray(given, dtype=dtype)
            if a.ndim != 1 or len(a) != n:
                raise ValueError(f"Window.{name}: expected {n} values, got shape {a.shape}")
            if a.flags.writeable:
                a = a.copy() if a is given else a  # never freeze (or share) the caller's array
                a.flags.writeable = False
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return len(self.close)

    @classmethod
    def from_candles(cls, candles: Sequence[Candle]) -> Window:
        """Return the window of ``candles``, oldest first.

        Raise ValueError if they are not of one symbol and timeframe in increasing open time.
        Missing periods are not detected: the caller knows whether its candles are contiguous.
        """
        for a, b in pairwise(candles):
            if (a.symbol, a.timeframe) != (b.symbol, b.timeframe):
                raise ValueError(
                    f"mixed candles: {a.symbol} {a.timeframe}, {b.symbol} {b.timeframe}"
                )
            if b.open_time_ms <= a.open_time_ms:
                raise ValueError(f"candles out of order at open_time_ms {b.open_time_ms}")
        rows = [
            (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.taker_buy_volume)
            for c in candles
        ]
        cols = np.array(rows, dtype=np.float64).reshape(len(rows), 7).T  # Decimal -> nearest float
        return cls(
            open=cols[0],
            high=cols[1],
            low=cols[2],
            close=cols[3],
            volume=cols[4],
            quote_volume=cols[5],
            taker_buy_volume=cols[6],
            trades=np.array([c.trades for c in candles], dtype=np.int64),
            open_time_ms=np.array([c.open_time_ms for c in candles], dtype=np.int64),
        )

    def span(self, start: int, stop: int) -> Window:
        """Return candles ``start`` to ``stop`` - 1 (views, no copy); raise ValueError if empty."""
        if not 0 <= start < stop <= len(self):
            raise ValueError(f"no candles in [{start}, {stop}) of a window of {len(self)}")
        return Window(*(getattr(self, f.name)[start:stop] for f in fields(self)))

    def tail(self, n: int) -> Window:
        """Return the last ``n`` candles (views, no copy); raise ValueError if ``n`` < 1."""
        if n < 1:
            raise ValueError(f"a window has at least one candle, not {n}")
        if n >= len(self):
            return self
        tail = object.__new__(Window)  # slices of checked read-only arrays: skip the checks
        for name in _FIELDS:
            object.__setattr__(tail, name, getattr(self, name)[-n:])
        return tail


_FIELDS = tuple(f.name for f in fields(Window))


@dataclass(frozen=True, slots=True)
class Formula:
    """A registered formula: its function, parameter defaults and window size."""

    name: str
    fn: Callable[..., Output]
    window_fn: Callable[[Params], float]  # candles needed, from the full parameters
    defaults: Mapping[str, Param]
    check: Callable[[Params], str | None] | None = None  # a problem with the parameters, or None

    def params(self, overrides: Params | None = None) -> dict[str, Param]:
        """Return the defaults updated with ``overrides``; raise ValueError naming a bad one."""
        out = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key not in out:
                known = ", ".join(self.defaults) or "none"
                raise ValueError(f"formula {self.name!r} has no parameter {key!r} (it has {known})")
            out[key] = _coerce(self.name, key, value, self.defaults[key])
        problem = self.check(out) if self.check else None
        if problem:
            raise ValueError(f"formula {self.name!r}: {problem}")
        return out

    def window(self, params: Params | None = None) -> int:
        """Return how many candles the formula needs with ``params`` (defaults if None).

        Raise ValueError if the parameters are invalid or give no positive whole number.
        """
        n = self.window_fn(self.params(params))
        if isinstance(n, bool) or not isinstance(n, int | float) or n < 1 or n != int(n):
            raise ValueError(f"formula {self.name!r}: window must be a positive integer, got {n!r}")
        return int(n)


class Registry:
    """Formulas by name. Tests ``snapshot`` and ``restore`` it to undo what they register."""

    def __init__(self) -> None:
        self._formulas: dict[str, Formula] = {}

    def formula(
        self,
        name: str,
        *,
        window: Callable[[Params], float],
        check: Callable[[Params], str | None] | None = None,
    ) -> Callable[[FormulaFn], FormulaFn]:
        """Register the decorated function as formula ``name``; return it unchanged.

        Raise ValueError if the name is taken or malformed, TypeError if the function's
        signature is not ``fn(w, *, name=<int or float default>, ...)``.
        """

        def register(fn: FormulaFn) -> FormulaFn:
            self.add(Formula(name, fn, window, _defaults(name, fn), check))
            return fn

        return register

    def add(self, f: Formula) -> None:
        """Add ``f``; raise ValueError if its name is taken, malformed or its defaults invalid."""
        if not _NAME.match(f.name):
            raise ValueError(f"formula name {f.name!r}: use lowercase letters, digits and _")
        if f.name in self._formulas:
            raise ValueError(f"formula {f.name!r} is already registered")
        f.window()  # the defaults must pass the check and give a window
        self._formulas[f.name] = f

    def resolve(self, name: str) -> Formula:
        """Return formula ``name``; raise ValueError naming the known ones if there is none."""
        try:
            return self._formulas[name]
        except KeyError:
            known = ", ".join(self.names())
            raise ValueError(f"unknown formula {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._formulas)

    def snapshot(self) -> dict[str, Formula]:
        return dict(self._formulas)

    def restore(self, snapshot: Mapping[str, Formula]) -> None:
        self._formulas = dict(snapshot)


REGISTRY = Registry()
formula = REGISTRY.formula
resolve = REGISTRY.resolve
names = REGISTRY.names


def load_modules(modules: Sequence[str]) -> list[str]:
    """Import each module (it registers its formulas); return the names they added, sorted.

    Raise FormulaLoadError naming the module and the cause if one cannot be imported or fails
    while importing; what that module had registered is undone.
    """
    before = set(REGISTRY.names())
    for module in modules:
        snapshot = REGISTRY.snapshot()
        try:
            importlib.import_module(module)
        except Exception as exc:  # anything the module raises at import: it is not usable
            REGISTRY.restore(snapshot)
            cause = f"{type(exc).__name__}: {exc}"
            raise FormulaLoadError(
                f"formula module {module!r} could not be loaded: {cause}"
            ) from exc
    return sorted(set(REGISTRY.names()) - before)


def _defaults(name: str, fn: Callable[..., Any]) -> Mapping[str, Param]:
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise TypeError(f"formula {name!r}: the first parameter must be the window")
    out: dict[str, Param] = {}
    for p in params[1:]:
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or type(p.default) not in (int, float):
            raise TypeError(
                f"formula {name!r}: parameter {p.name!r} must be keyword-only (after *) "
                "with an int or float default"
            )
        out[p.name] = p.default
    return MappingProxyType(out)


def _coerce(name: str, key: str, value: object, default: Param) -> Param:
    where = f"formula {name!r}: parameter {key!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r:.40}")
    if isinstance(default, int):
        if not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)
