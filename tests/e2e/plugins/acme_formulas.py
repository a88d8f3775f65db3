"""A deployment's own formulas, loaded by name (``TP_FORMULA_MODULES``): one good, two bad."""

from __future__ import annotations

from tasks.formulas import Output, Window, formula


@formula("close_vs_open", window=lambda p: 1)
def close_vs_open(w: Window, *, scale: float = 1.0) -> Output:
    value = float(w.close[-1] - w.open[-1]) * scale
    return Output(value, "long" if value > 0 else "short" if value < 0 else "flat")


@formula("always_raises", window=lambda p: 1)
def always_raises(w: Window, *, x: int = 1) -> Output:
    raise RuntimeError("a bug in a proprietary formula")


@formula("spins", window=lambda p: 1)
def spins(w: Window, *, x: int = 1) -> Output:
    while True:  # never returns: stopped by the time limit
        x += 1
