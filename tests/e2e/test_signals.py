"""Signals end to end: simulator -> feeder -> candles -> evaluate_signals -> values and events.

Real processes and Redis. The proof of "no look-ahead, no repainting": every closed-candle value
the running pipeline wrote (through a kill -9 of the signals worker) equals an offline evaluation
of the same formula on the closed candles up to that candle, read from Redis after the run; and the
state-change events are exactly the changes in that history.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import BUILTIN_FORMULAS
from core.schemas import Candle, Signal, decode
from tasks.formulas import REGISTRY, Window, evaluate, load_modules, resolve
from tests.e2e.conftest import RunningSim
from tests.e2e.pipeline import Pipeline

PLUGIN = "tests.e2e.plugins.acme_formulas"
HISTORY = 12  # closed values kept per series and signal: the run makes more
# Candles the signals worker caches, 40 per shard (4 shards): a 1 s series needs 22 (the longest
# window, RSI's 16, + CATCH_UP 5 + the open candle), and shard 0 holds two symbols (ETHUSDT,
# XRPUSDT), so its windows are evicted and read again all the time while the other shards keep
# theirs. The values must not tell the difference.
CACHE = 160
# Small windows on 1 s candles, so that they fill within seconds (the longest, 16, sets how long
# the run waits for every signal's first value).
PARAMS = {"ema_cross": {"fast": 3, "slow": 5}, "rsi": {"period": 3}, "macd": {"fast": 2, "slow": 3,
          "signal": 2}, "bollinger": {"period": 5}, "donchian": {"period": 5},
          "vwap_deviation": {"period": 5, "threshold": 0.0005}}  # fmt: skip


def signals_file(path: Path) -> Path:
    lines = []
    for name in BUILTIN_FORMULAS:
        params = ", ".join(f"{k} = {v}" for k, v in PARAMS[name].items())
        lines += ["[[signal]]", f'name = "{name}_1s"', f'formula = "{name}"',
                  f"params = {{ {params} }}", 'timeframes = ["1s"]', ""]  # fmt: skip
    lines += ["[[signal]]", 'name = "ema_1m"', 'formula = "ema_cross"', 'timeframes = ["1m"]', ""]
    for name, formula in (("cvo", "close_vs_open"), ("broken", "always_raises"),
                          ("slow", "spins")):  # fmt: skip
        lines += ["[[signal]]", f'name = "{name}"', f'formula = "{formula}"',
                  'timeframes = ["1s"]', ""]  # fmt: skip
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def plugin_registered() -> Iterator[None]:
    """Register the plugin's formulas in this process too (for the offline evaluation)."""
    snapshot = REGISTRY.snapshot()
    load_modules([PLUGIN])
    yield
    REGISTRY.restore(snapshot)


@pytest.mark.timeout(240)
def test_signals_never_repaint_and_a_bad_formula_hurts_no_other(
    sim_factory: Callable[..., RunningSim],
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
    plugin_registered: None,
) -> None:
    sim = sim_factory(rate=0.0, symbol_count=4)
    config = signals_file(tmp_path / "signals.toml")
    p = start_pipeline(sim, TP_TIMEFRAMES="1s,1m", TP_SIGNALS_FILE=str(config),
                       TP_FORMULA_MODULES=PLUGIN, TP_FORMULA_TIME_LIMIT_MS="100",
                       TP_SIGNAL_PACE_MS="500", TP_SIGNAL_HISTORY=str(HISTORY),
                       TP_SIGNAL_CACHE_CANDLES=str(CACHE))  # fmt: skip
    symbols = [i.symbol for i in sim.sim.model.instruments]
    sim.admin("POST", "/sim/rate", {"rate": 60})
    slowest = max(PARAMS, key=lambda f: resolve(f).window(PARAMS[f]))  # rsi: 16 candles
    longest = [p.keys.signal_history(s, "1s", f"{slowest}_1s") for s in symbols]
    p.wait_for("every signal's first closed value",
               lambda: all(p.redis.exists(k) for k in longest), timeout_s=90)  # fmt: skip

    # While the market trades: the open candle's values are published, marked provisional.
    def provisional_published() -> bool:
        latest = p.redis.hgetall(p.keys.signals(symbols[0], "1s")).values()
        return any(decode(v, Signal).provisional for v in latest)

    p.wait_for("a provisional value", provisional_published, timeout_s=10)
    killed_ms = time.time_ns() // 1_000_000
    p.signals.kill9()  # mid-round: whatever it was writing is written once or not at all
    time.sleep(1)
    p.signals.start()
    names = [f"{f}_1s" for f in BUILTIN_FORMULAS] + ["cvo"]

    def every_signal_went_on() -> bool:  # values of candles opened after the kill
        with p.redis.pipeline(transaction=False) as pipe:
            for sym in symbols:
                for name in names:
                    pipe.zcount(p.keys.signal_history(sym, "1s", name), killed_ms, "+inf")
            return min(pipe.execute()) >= 6

    p.wait_for("six new closed values of every signal from the restarted signals worker",
               every_signal_went_on, timeout_s=90)  # fmt: skip
    sim.admin("POST", "/sim/rate", {"rate": 0})
    time.sleep(4)
    m = p.signal_metrics()

    # Isolation: the bad formulas are counted and reported, every other one kept running.
    assert m.get("errors:broken", 0) > 0, m
    assert m.get("errors:slow", 0) > 0, m
    errors = {k.decode(): v.decode() for s in range(4)
              for k, v in p.redis.hgetall(p.keys.signal_errors(s)).items()}  # fmt: skip
    assert errors["broken"].startswith("raised|"), errors
    assert "a bug in a proprietary formula" in errors["broken"]
    # The slow one stopped at its limit, then suspended: it cannot eat the worker's time.
    assert errors["slow"].startswith(("timeout|", "suspended|")), errors
    assert m.get("suspended:slow", 0) >= 1, m
    assert m["errors:slow"] < m["errors:broken"] / 4, m
    assert set(errors) == {"broken", "slow"}, errors

    events = [decode(f[b"d"], Signal) for s in range(4)
              for _, f in p.redis.xrange(p.keys.signal_events(s))]  # fmt: skip
    checked = full = 0
    for sym in symbols:
        candles = [decode(c, Candle) for c in p.redis.zrange(p.keys.candles(sym, "1s"), 0, -1)]
        closed = [c for c in candles if c.closed]
        for name in names:
            formula = resolve(name[:-3] if name.endswith("_1s") else "close_vs_open")
            params = PARAMS.get(formula.name, {})
            need = formula.window(params)
            history = [decode(m, Signal) for m in
                       p.redis.zrange(p.keys.signal_history(sym, "1s", name), 0, -1)]  # fmt: skip
            assert 6 <= len(history) <= HISTORY, (sym, name, m)  # ran on every symbol; bounded
            full += len(history) == HISTORY
            for sig in history:
                assert not sig.provisional
                upto = [c for c in closed if c.open_time_ms <= sig.open_time_ms]
                assert upto[-1].open_time_ms == sig.open_time_ms
                window = upto[-need:]
                assert len(window) == need  # never on a short window
                partial = [c for c in window if c.source == "partial"]
                assert not partial, (sig, partial, p.metrics())
                offline = evaluate(formula, params, Window.from_candles(window), time_limit_s=5)
                assert offline.output is not None, offline
                assert (sig.value, sig.state) == tuple(offline.output), (sym, name, sig)
                checked += 1
            # Events: exactly the state changes along the history (its kept part).
            changes = [b for a, b in itertools.pairwise(history) if a.state != b.state]
            sent = [e for e in events if (e.symbol, e.formula) == (sym, name)
                    and e.open_time_ms > history[0].open_time_ms]  # fmt: skip
            assert [(e.open_time_ms, e.state) for e in sent] == [
                (c.open_time_ms, c.state) for c in changes
            ], (sym, name)
    assert checked >= 4 * 7 * 6
    # The cache stayed within its bound by evicting.
    assert m.get("cache_evictions", 0) > 0, m
    cached = [int(p.redis.hget(p.keys.signal_metrics(s), "cache_candles") or 0) for s in range(4)]
    assert max(cached) <= CACHE // 4, cached
    assert sum(c > 0 for c in cached) >= 2, cached  # the shards of one symbol kept their windows
    assert full > 0  # some made more values than the history keeps: the bound held
    # History first: the 1m signal needs 78 candles, the history holds 3: never evaluated.
    assert not any(p.redis.zcard(p.keys.signal_history(s, "1m", "ema_1m")) for s in symbols)
    assert m.get("short_window", 0) > 0, m
