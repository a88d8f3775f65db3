"""Run a formula over the candles stored in Redis, offline: ``python -m examples.offline``.

    REDIS_URL=redis://localhost:6379/0 TP_FORMULA_MODULES=examples.range_position \\
        python -m examples.offline range_position BTCUSDT 1m --params period=30 band=0.15

Reads the series' stored candles (at most ``TP_CANDLE_RETENTION``), evaluates the formula on each
closed candle from the first one with a full window, exactly as the signals process does (the
same ``evaluate``, time limit included), and prints one line per candle: open time, value, state
(or the error). Nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from core.config import load_settings
from core.keys import Keys
from core.redis_clients import sync_client
from core.schemas import Candle, decode
from tasks.formulas import Evaluation, Window, evaluate, load_modules, resolve


def replay(
    name: str, params: dict[str, int | float], candles: Sequence[Candle], *, time_limit_s: float
) -> list[tuple[int, Evaluation]]:
    """Return (open time, evaluation) of formula ``name`` on each closed candle of ``candles``
    (oldest first) that has a full window of closed candles behind it."""
    f = resolve(name)
    need = f.window(params)
    closed = [c for c in candles if c.closed]
    window = Window.from_candles(closed)
    return [
        (closed[i].open_time_ms, evaluate(f, params, window.span(i + 1 - need, i + 1),
                                          time_limit_s=time_limit_s))
        for i in range(need - 1, len(closed))
    ]  # fmt: skip


def _param(raw: str) -> tuple[str, int | float]:
    key, _, value = raw.partition("=")
    return key, float(value) if "." in value else int(value)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.offline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("formula")
    p.add_argument("symbol")
    p.add_argument("timeframe")
    p.add_argument("--params", nargs="*", default=[], type=_param, help="name=value ...")
    args = p.parse_args(argv)
    settings = load_settings()
    load_modules(settings.signals.modules)
    client = sync_client(settings.require_redis_url(), max_connections=1, client_name="offline")
    members: Any = client.zrange(Keys.of(settings).candles(args.symbol, args.timeframe), 0, -1)
    candles = [decode(m, Candle) for m in members]
    limit_s = settings.signals.time_limit_ms / 1000
    for open_ms, ev in replay(args.formula, dict(args.params), candles, time_limit_s=limit_s):
        out = (
            f"{ev.output.value:.6g} {ev.output.state}" if ev.output else f"{ev.error}: {ev.message}"
        )
        print(open_ms, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
