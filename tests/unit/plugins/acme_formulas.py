"""A deployment's own formula module, as ``TP_FORMULA_MODULES=acme.formulas`` would name it."""

from __future__ import annotations

from tasks.formulas import Output, Window, formula


@formula("acme_range", window=lambda p: p["period"])
def acme_range(w: Window, *, period: int = 10) -> Output:
    """Where the close sits in the last ``period`` candles' range: long in its top tenth."""
    top, bottom = float(w.high.max()), float(w.low.min())
    value = (float(w.close[-1]) - bottom) / (top - bottom) if top > bottom else 0.5
    return Output(value, "long" if value > 0.9 else "short" if value < 0.1 else "flat")
