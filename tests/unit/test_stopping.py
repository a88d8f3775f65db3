"""SIGTERM stops an asyncio process even when a cancellation is swallowed (core/stopping.py).

Python 3.11's asyncio.wait_for can drop a cancellation that arrives as its inner future completes
(cpython#86296); the feeder and execution then ran on after SIGTERM until killed (2 in 50 starts
under load). Real processes and real signals here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from core.stopping import run_until_stopped

    state = {"stopping": False}

    async def main() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if sys.argv[1] == "swallow":  # what wait_for does in the bug: the task runs on
                print("swallowed", flush=True)
                await asyncio.sleep(3600)
            raise
        finally:
            state["stopping"] = True
            await asyncio.sleep(1.0)  # a clean-up that must not be cut short
            print("cleaned up", flush=True)

    print("ready", flush=True)
    stopped = asyncio.run(run_until_stopped(main(), lambda: state["stopping"]))
    print("stopped" if stopped else "returned", flush=True)
    """
)


def run(mode: str) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)  # the signal handlers are installed once the loop runs
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    return out.split()


def test_sigterm_stops_and_lets_the_clean_up_finish() -> None:
    lines = run("plain")
    assert lines == ["cleaned", "up", "stopped"]


def test_a_swallowed_cancellation_is_repeated() -> None:
    lines = run("swallow")
    assert lines == ["swallowed", "cleaned", "up", "stopped"]
