"""One stop signal is enough: a Dramatiq worker process stops gracefully however many arrive.

Dramatiq's worker process treats a second SIGTERM as "kill now" (it logs "Killing worker
process..." and exits with its tasks unfinished). But a stop of the whole process group, as
Heroku does on a dyno restart (SIGTERM to every process, SIGKILL 30 s later:
https://devcenter.heroku.com/articles/dynos#shutdown) and honcho does on Ctrl-C in the demo,
reaches a worker process twice: once directly, once forwarded by Dramatiq's main process. So the
worker's ``--worker-shutdown-timeout`` (25 s, inside Heroku's 30) was never honoured.

:class:`OneStopSignal` wraps the worker process's SIGTERM handler once it is installed: the
first signal starts Dramatiq's graceful stop, later ones are logged and ignored. What bounds the
stop is the shutdown timeout, then the supervisor's SIGKILL.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)


class OneStopSignal(Middleware):
    """After the worker process boots, pass on its first SIGTERM only."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        graceful = signal.getsignal(signal.SIGTERM)
        if not callable(graceful):
            return
        stopping = False

        def once(signum: int, frame: FrameType | None) -> Any:
            nonlocal stopping
            if stopping:
                log.debug("stop signal %d again: already stopping", signum)
                return None
            stopping = True
            return graceful(signum, frame)

        signal.signal(signal.SIGTERM, once)
