"""Run one formula on one window, isolated: what it raises, returns or costs stays here.

Outcomes: ``ok`` with an Output, or an error kind (``ERROR_KINDS``):

* ``short_window``: fewer candles than the formula needs; it is not run on a partial window;
* ``raised``: it raised an exception (``Type: message``);
* ``garbage``: it returned something other than ``(finite number, one of SIGNAL_STATES)``;
* ``timeout``: it ran past its time limit.

The time limit works as Dramatiq's TimeLimit middleware does (formulas run in its worker threads,
where SIGALRM cannot reach): one daemon watchdog thread per process raises :class:`FormulaTimeout`
in the evaluating thread with ``PyThreadState_SetAsyncExc``. It limits the thread's CPU time, so
that a formula slowed down by others (the GIL, a busy machine) is not the one stopped. CPython
delivers it between bytecodes, so Python code stops on time; a blocking C call (``time.sleep``,
I/O, a lock, one long NumPy or TA-Lib call) cannot be interrupted from another thread and is
stopped only when it returns. An interrupt fired just as the formula returns lands inside
``evaluate`` (a timeout) or is cancelled, never after it returned (Dramatiq's can). Not
reentrant: a formula must not call ``evaluate``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import numbers
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from core.schemas import SIGNAL_STATES
from tasks.formulas.registry import Formula, Output, Params, Window

ERROR_KINDS = ("raised", "garbage", "timeout", "short_window")
T = TypeVar("T")


class FormulaTimeout(BaseException):
    """Raised inside a formula that runs past its time limit.

    A BaseException, like Dramatiq's Interrupt, so that a formula's ``except Exception`` does not
    swallow it.
    """


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one evaluation: ``output`` if it succeeded, else ``error`` and ``message``."""

    output: Output | None
    error: str | None = None  # one of ERROR_KINDS
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def evaluate(
    formula: Formula, params: Params | None, window: Window, *, time_limit_s: float
) -> Evaluation:
    """Return the outcome of ``formula`` on the last ``formula.window(params)`` candles.

    Raise ValueError if ``params`` are not valid for the formula (a configuration error, which
    :meth:`Formula.params` reports at start-up) or ``time_limit_s`` is not positive.
    """
    if not time_limit_s > 0:
        raise ValueError(f"time_limit_s must be positive, got {time_limit_s!r}")
    full = formula.params(params)
    need = formula.window(full)
    if len(window) < need:
        return Evaluation(
            None, "short_window", f"{formula.name} needs {need} candles, has {len(window)}"
        )
    w = window.tail(need)
    try:
        result = WATCHDOG.run(lambda: _checked(formula.fn(w, **full)), time_limit_s)
    except FormulaTimeout:
        return Evaluation(None, "timeout", f"{formula.name} ran past {time_limit_s:g} s")
    except Exception as exc:
        return Evaluation(None, "raised", f"{type(exc).__name__}: {exc}")
    if isinstance(result, str):
        return Evaluation(None, "garbage", f"{formula.name} returned {result}")
    return Evaluation(result)


def _checked(raw: object) -> Output | str:
    # Runs under the time limit too: float() and repr() may call the formula's own code.
    if not isinstance(raw, tuple) or len(raw) != 2:
        return f"{raw!r:.80}, not an Output(value, state)"
    value, state = raw
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"value {value!r:.40}, not a number"
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        return f"value {number}, not a finite number"
    if not isinstance(state, str) or state not in SIGNAL_STATES:
        return f"state {state!r:.40}, not one of {', '.join(SIGNAL_STATES)}"
    return Output(number, str(state))


_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)  # our own prototype: setting argtypes on ctypes.pythonapi's would change Dramatiq's calls


class Watchdog:
    """One daemon thread that interrupts calls running past their limit (see module doc).

    The limit is on the evaluating thread's own CPU time (``pthread_getcpuclockid``), not on the
    wall clock: a formula waiting for the GIL while another thread spins is not the culprit, and
    must not be stopped for it. A wall-clock backstop (``BACKSTOP`` x the limit) still stops one
    that burns no CPU (as far as it can be stopped: see the module doc).

    The interrupt may land anywhere in the evaluating thread, this bookkeeping included, so that
    thread only ever holds a C ``Lock`` entered with ``with`` (an interrupt inside the block
    releases it; ``Condition.__enter__`` is Python code and could leave it held) and wakes the
    loop with ``SimpleQueue.put``, also C.
    """

    BACKSTOP = 3.0

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also after a fork: the parent's thread and lock do not exist in the child.
        self._lock = threading.Lock()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        # thread id -> [cpu clock, CPU deadline, wall backstop, next check]; None: fired
        self._armed: dict[int, list[float] | None] = {}
        self._clocks: dict[int, int] = {}
        self._wake_at = math.inf  # when the loop wakes next: a later check need not wake it
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], T], time_limit_s: float) -> T:
        """Return ``fn()``; raise FormulaTimeout in it if it uses more than ``time_limit_s`` of
        CPU (or runs ``BACKSTOP`` times that long)."""
        tid = threading.get_ident()
        try:
            self._arm(tid, time_limit_s)
            return fn()
        finally:
            self._disarm(tid)

    def _arm(self, tid: int, limit_s: float) -> None:
        clk = self._clocks.get(tid)
        if clk is None:
            if len(self._clocks) > 10_000:  # threads come and go: bounded
                self._clocks.clear()
            clk = self._clocks[tid] = time.pthread_getcpuclockid(tid)
        now = time.monotonic()
        entry = [clk, time.clock_gettime(clk) + limit_s, now + limit_s * self.BACKSTOP,
                 now + limit_s]  # fmt: skip
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="formula-watchdog", daemon=True
                )
                self._thread.start()
            self._armed[tid] = entry
            wake, self._wake_at = entry[3] < self._wake_at, min(entry[3], self._wake_at)
        if wake:
            self._wake.put(None)

    def _disarm(self, tid: int) -> None:
        with self._lock:
            # Fired (None) but maybe not delivered yet: cancel it. Under the lock, and with the
            # entry gone, the loop cannot fire again for this call.
            if tid in self._armed and self._armed.pop(tid) is None:
                _set_async_exc(tid, ctypes.py_object())  # NULL clears a pending exception

    def _loop(self) -> None:
        timeout: float | None = None
        while True:
            with contextlib.suppress(queue.Empty):
                self._wake.get(timeout=timeout)
            with self._lock:
                now = time.monotonic()
                for tid, entry in list(self._armed.items()):
                    if entry is None or entry[3] > now:
                        continue
                    clk, cpu_deadline, backstop, _ = entry
                    left = cpu_deadline - time.clock_gettime(int(clk))
                    if left <= 0 or backstop <= now:
                        self._armed[tid] = None
                        _set_async_exc(tid, FormulaTimeout)
                    else:  # CPU time cannot run out sooner than this
                        entry[3] = min(now + left, backstop)
                checks = [e[3] for e in self._armed.values() if e is not None]
                self._wake_at = wake_at = min(checks, default=math.inf)
            wait_s = wake_at - now
            timeout = None if wait_s > threading.TIMEOUT_MAX else max(wait_s, 0.0)


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._reset)
