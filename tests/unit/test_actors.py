"""Sending a message loads nothing of the process that runs it (tasks/actors.py).

A formula plugin that fails to import must not stop candles: the consumer (which builds them)
and backfill send ``evaluate_signals`` by name, never importing the signals actor, its plan,
TA-Lib or the formulas. Each check runs in a fresh interpreter, since this one may have loaded
anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Importing an actor module reads the settings and builds the (not yet connected) broker.
ENV = {"TP_DEMO": "1", "REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
SIGNAL_MODULES = ("tasks.signals", "tasks.signal_eval", "tasks.formulas", "talib")


def _run(code: str) -> object:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["workers.candles", "tasks.backfill", "workers.consumer"])
def test_a_sender_does_not_load_the_signals_process(module: str) -> None:
    loaded = _run(f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))")
    assert isinstance(loaded, list)
    assert [m for m in loaded if m.startswith(SIGNAL_MODULES)] == []


def test_the_references_name_the_actors_that_run() -> None:
    code = (
        "import json, dramatiq, tasks.backfill, tasks.signals\n"
        "from tasks.actors import BACKFILL_KLINES, EVALUATE_SIGNALS\n"
        "b = dramatiq.get_broker()\n"
        "refs = (BACKFILL_KLINES, EVALUATE_SIGNALS)\n"
        "print(json.dumps([[r.queue_name, b.get_actor(r.actor_name).queue_name] for r in refs]))"
    )
    pairs = _run(code)
    assert pairs == [["backfill", "backfill"], ["signals", "signals"]]
