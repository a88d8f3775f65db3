"""A short chaos run: bench/chaos.py's harness (imported, not copied) for about half a minute.

Every process type is killed at least once, Redis restarts (clean or crashed, with the
append-only file), the simulator injects feed and trading-path faults, traders place orders and
clients stay subscribed; then every closed candle is compared with the simulator's ground
truth, every order and fill with its account records, and every client's candles with Redis's.
The long runs and their figures are bench/chaos.py's (run by hand).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import TYPES, Config, run, summary


@pytest.mark.timeout(300)
def test_a_short_chaos_run_loses_no_candle_order_or_fill(tmp_path: Path) -> None:
    # 31 s of warm-up first: the 15s candles of a quiet stretch are compared exactly (outages
    # flag theirs partial, and sub-minute candles have no exchange kline to repair them with).
    # Any 30 s holds one whole 15 s window; with 12 s, one CI run compared none.
    cfg = Config(minutes=0.3, warmup_s=31.0, kill_every_s=2.0, fault_every_s=2.0,
                 redis_every_s=10.0, traders=3, order_every_s=1.0, md_clients=2, symbols=4,
                 rate=30.0, seed=16, wait_minute_close=False,
                 work_dir=tmp_path / "chaos")  # fmt: skip
    report = run(cfg, log=lambda _: None)
    text = summary(report)  # shown by pytest with any failed assertion
    candles, orders = report["candles"], report["orders"]
    # The chaos happened: every process type killed, Redis restarted, faults injected, orders
    # placed and candles built from trades compared.
    assert set(report["kills"]) == set(TYPES), text
    assert sum(report["redis_restarts"].values()) >= 1, text
    assert report["faults_total"] >= 5, text
    assert orders["orders_placed"] >= 10, text
    assert candles["compared"].get("15s", 0) > 0, text
    assert not report["unsettled"], text
    # ... and lost nothing.
    assert sum(candles["mismatched"].values()) == 0, text
    assert sum(candles["missing"].values()) == 0, text
    assert sum(candles["never_repaired"].values()) == 0, text
    assert orders["lost"] == 0, text
    assert orders["duplicated"] == 0, text
    assert orders["unexpected_exchange_orders"] == 0, text
    assert orders["unresolved"] == 0, text
    assert orders["status_mismatch"] == 0, text
    assert orders["fills_missed"] == 0, text
    assert orders["fills_phantom"] == 0, text
    assert orders["fill_told_after_ms"]["max"] >= 0, text  # fills told through orders:events
    # Every client holds the closed candles Redis holds, repairs included (issue 16).
    # A str, not a tuple: pytest shows a message in full but cuts a tuple's repr to 240 chars.
    examples = "\n".join(report["clients"]["examples"])
    assert report["clients"]["gaps_untold"] == 0, f"{text}\n{examples}"
