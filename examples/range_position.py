"""A deployment's own formula module: name it in ``TP_FORMULA_MODULES=examples.range_position``.

Importing the module registers its formulas; the signals process imports it at start and stops
with one clear line if it does not import or a formula is misdeclared (docs/formulas.md).
"""

from __future__ import annotations

import numpy as np

from tasks.formulas import Output, Params, Window, formula


def _check(p: Params) -> str | None:
    if p["period"] < 2:
        return "period must be at least 2"
    return None if 0 < p["band"] < 0.5 else "band must be between 0 and 0.5"


@formula("range_position", window=lambda p: p["period"], check=_check)
def range_position(w: Window, *, period: int = 20, band: float = 0.1) -> Output:
    """Where the last close sits in the range of the last ``period`` candles, 0 (its low) to 1
    (its high): long in the top ``band`` of the range, short in the bottom one, flat between.

    A range of zero width (every candle at one price) is 0.5 and flat.
    """
    top, bottom = float(np.max(w.high)), float(np.min(w.low))
    if top <= bottom:
        return Output(0.5, "flat")
    value = (float(w.close[-1]) - bottom) / (top - bottom)
    state = "long" if value >= 1 - band else "short" if value <= band else "flat"
    return Output(value, state)
