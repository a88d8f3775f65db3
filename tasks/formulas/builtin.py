"""The built-in formulas, computed with TA-Lib on the window's closes (and volumes, for VWAP).

Each returns its value on the window's last candle and a state level (long, short or flat) read
from that candle alone; the engine turns changes of state into events. ``evaluate`` hands each
formula exactly ``window(params)`` candles, so an output depends on those candles only.

Windows. EMAs and Wilder's average are recursive: their seed (an SMA of the first ``n`` values)
never quite washes out. A window is long enough for the seed to weigh about 2% at the last
candle: an EMA of period n (alpha 2/(n+1)) gets 2n candles after its seed, hence ``3 * n``;
Wilder's smoothing (alpha 1/n) decays half as fast, hence ``5 * n + 1`` (one extra close for the
first change); MACD's signal EMA runs on the MACD line, hence ``3 * (slow + signal)``.
Bollinger, Donchian and VWAP are exact over ``period`` (+1 for Donchian's previous candles).

Zero. A difference of averages of a flat series is float noise (1e-17, not 0), so |x| below
``ZERO_REL`` times the last close counts as zero: flat, reported as 0.0.
"""

from __future__ import annotations

import talib

from tasks.formulas.registry import Output, Params, Window, formula

ZERO_REL = 1e-12


def _sign(value: float, scale: float) -> Output:
    if abs(value) <= ZERO_REL * abs(scale):
        return Output(0.0, "flat")
    return Output(value, "long" if value > 0 else "short")


def _check_ema(p: Params) -> str | None:
    if p["fast"] < 2:
        return "fast must be at least 2 (TA-Lib's minimum)"
    return None if p["fast"] < p["slow"] else "fast must be less than slow"


@formula("ema_cross", window=lambda p: 3 * p["slow"], check=_check_ema)
def ema_cross(w: Window, *, fast: int = 12, slow: int = 26) -> Output:
    """EMA(fast) - EMA(slow) of the close: long above zero, short below, flat at zero."""
    value = talib.EMA(w.close, timeperiod=fast)[-1] - talib.EMA(w.close, timeperiod=slow)[-1]
    return _sign(float(value), w.close[-1])


def _check_rsi(p: Params) -> str | None:
    if p["period"] < 2:
        return "period must be at least 2 (TA-Lib's minimum)"
    return None if 0 <= p["low"] < p["high"] <= 100 else "need 0 <= low < high <= 100"


@formula("rsi", window=lambda p: 5 * p["period"] + 1, check=_check_rsi)
def rsi(w: Window, *, period: int = 14, low: float = 30.0, high: float = 70.0) -> Output:
    """Wilder's RSI of the close: long below ``low`` (oversold), short above ``high``.

    A window whose close never moves has no RSI (TA-Lib says 0): 50 and flat.
    """
    if w.close.min() == w.close.max():
        return Output(50.0, "flat")
    value = float(talib.RSI(w.close, timeperiod=period)[-1])
    return Output(value, "long" if value < low else "short" if value > high else "flat")


def _check_macd(p: Params) -> str | None:
    if min(p["fast"], p["signal"]) < 2:
        return "fast and signal must be at least 2 (TA-Lib's minimum)"
    return None if p["fast"] < p["slow"] else "fast must be less than slow"


@formula("macd", window=lambda p: 3 * (p["slow"] + p["signal"]), check=_check_macd)
def macd(w: Window, *, fast: int = 12, slow: int = 26, signal: int = 9) -> Output:
    """MACD histogram (MACD line - its signal EMA): long above zero, short below."""
    hist = talib.MACD(w.close, fastperiod=fast, slowperiod=slow, signalperiod=signal)[2]
    return _sign(float(hist[-1]), w.close[-1])


def _check_bollinger(p: Params) -> str | None:
    if p["period"] < 2:
        return "period must be at least 2 (TA-Lib's minimum)"
    return None if p["k"] > 0 else "k must be positive"


@formula("bollinger", window=lambda p: p["period"], check=_check_bollinger)
def bollinger(w: Window, *, period: int = 20, k: float = 2.0) -> Output:
    """%B, (close - lower) / (upper - lower), of SMA +- k population stdevs.

    Long when the close is above the upper band, short below the lower one. Bands of no width
    (a flat window): 0.5, flat.
    """
    bands = talib.BBANDS(w.close, timeperiod=period, nbdevup=k, nbdevdn=k)  # matype: SMA
    upper, middle, lower = (float(band[-1]) for band in bands)
    close = float(w.close[-1])
    if upper - lower <= ZERO_REL * abs(middle):
        return Output(0.5, "flat")
    value = (close - lower) / (upper - lower)
    return Output(value, "long" if close > upper else "short" if close < lower else "flat")


def _check_period(p: Params) -> str | None:
    return None if p["period"] >= 2 else "period must be at least 2 (TA-Lib's minimum)"


@formula("donchian", window=lambda p: p["period"] + 1, check=_check_period)
def donchian(w: Window, *, period: int = 20) -> Output:
    """Breakout of the previous ``period`` candles' channel (the current one excluded).

    Long if the close is above their highest high, short if below their lowest low. Value: the
    close's position in that channel, 0 at the low, 1 at the high (beyond on a breakout); in a
    channel of no width, 1.0 long, 0.0 short, 0.5 flat.
    """
    top = float(talib.MAX(w.high[:-1], timeperiod=period)[-1])
    bottom = float(talib.MIN(w.low[:-1], timeperiod=period)[-1])
    close = float(w.close[-1])
    state = "long" if close > top else "short" if close < bottom else "flat"
    if top > bottom:
        return Output((close - bottom) / (top - bottom), state)
    return Output({"long": 1.0, "short": 0.0, "flat": 0.5}[state], state)


def _check_vwap(p: Params) -> str | None:
    if p["period"] < 2:
        return "period must be at least 2 (TA-Lib's minimum)"
    return None if p["threshold"] >= 0 else "threshold must not be negative"


@formula("vwap_deviation", window=lambda p: p["period"], check=_check_vwap)
def vwap_deviation(w: Window, *, period: int = 20, threshold: float = 0.01) -> Output:
    """close / VWAP - 1, VWAP being quote volume / volume over the last ``period`` candles.

    Mean reversion: long when the close is more than ``threshold`` below the VWAP, short when
    more than ``threshold`` above. No volume in the window (no VWAP): 0.0, flat.
    """
    volume = float(talib.SUM(w.volume, timeperiod=period)[-1])
    if volume <= 0:
        return Output(0.0, "flat")
    vwap = float(talib.SUM(w.quote_volume, timeperiod=period)[-1]) / volume
    value = float(w.close[-1]) / vwap - 1
    return Output(value, "long" if value < -threshold else "short" if value > threshold else "flat")
