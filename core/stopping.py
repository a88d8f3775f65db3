"""Stop an asyncio process on SIGTERM or SIGINT, even when a cancellation gets swallowed.

A single ``task.cancel()`` is not enough on Python 3.11: ``asyncio.wait_for`` (used by redis-py and
websockets) drops a cancellation that arrives as its inner future completes
(https://github.com/python/cpython/issues/86296, fixed in 3.12), and the process then runs on
until killed. So the signal sets a flag, and the task is cancelled again until it says it is
stopping (``stopping()``: its clean-up, such as writing what it buffered, has begun and must not
be cut short), or ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

RECANCEL_S = 0.5  # a cancellation that was swallowed is repeated this often


async def run_until_stopped(
    main: Coroutine[Any, Any, None], stopping: Callable[[], bool] = lambda: False
) -> bool:
    """Run ``main`` until it returns or the process gets SIGTERM/SIGINT; return True if stopped
    by a signal. Must run in the main thread (signal handlers)."""
    task = asyncio.create_task(main)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        while not task.done():
            if not stopping():
                task.cancel()
            await asyncio.wait({task}, timeout=RECANCEL_S)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()  # a failure of main is raised here
        return stop.is_set()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
