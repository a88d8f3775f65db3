"""The demo's process manager (demo/processes.py): a SIGTERM that arrives while honcho has not
yet read every child's pid still stops every child at once, not after honcho's kill timeout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import honcho.manager
    from demo.processes import DemoManager
    honcho.manager.KILL_WAIT = 60  # what a stuck child would cost: longer than the test waits

    class SignalledAtStart(getattr(sys.modules[__name__], sys.argv[1])):
        def _start(self):
            super()._start()
            os.kill(os.getpid(), signal.SIGTERM)  # before the loop reads any "started" message

    manager = SignalledAtStart()
    for name in ("a", "b", "c"):
        manager.add_process(name, "sleep 120 # tp-demo-processes-test")
    manager.loop()
""")


def children_left() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if "tp-demo-processes-test" in " ".join(p.info["cmdline"] or ())
            and "sleep" in " ".join(p.info["cmdline"] or ())]  # fmt: skip


def test_a_signal_during_start_up_stops_every_child_at_once() -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "DemoManager"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert time.monotonic() - started < 20, proc.stdout
    assert "sending SIGTERM to a" in proc.stdout, proc.stdout
    assert "SIGKILL" not in proc.stdout, proc.stdout  # stopped by the SIGTERM, not the timeout
    time.sleep(0.5)
    assert children_left() == []
