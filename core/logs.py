"""Logging setup: one JSON object per line on stderr (Heroku collects stdout and stderr).

Context goes in ``extra`` and comes out as fields: ``log.warning("reconnecting %s", url,
extra={"stream": name})``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "websockets.client", "rlp.codec")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: ts, level, logger, msg, extra fields, exc.

    ``process_type`` tags records that :func:`setup_logging` did not (gunicorn's master process
    logs before our code is imported: web/gunicorn_conf.py).
    """

    def __init__(self, process_type: str | None = None) -> None:
        super().__init__()
        self.process_type = process_type

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = value
        if self.process_type is not None:
            out.setdefault("process_type", self.process_type)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str, *, process: str) -> None:
    """Send every log record of this process to stderr as JSON, tagged with ``process``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    old_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old_factory(*args, **kwargs)
        record.process_type = process
        return record

    logging.setLogRecordFactory(factory)
    # httpx logs every request's URL at INFO (a signed request's query with it) and httpcore
    # every step at DEBUG: neither is ours to report, and both would drown what is.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class QuietWait:
    """A start-up wait for a dependency, told quietly: one line, a warning only if it lasts.

    Processes start together (the demo, a deploy), so a dependency that refuses the first
    seconds is expected and worth one INFO line. Past ``warn_after_s`` it is a problem: a
    warning names the host and ``hint`` (what to check or set), repeated every ``warn_every_s``
    while it lasts. Every other failure goes to DEBUG.
    """

    def __init__(self, log: logging.Logger, what: str, where: str, hint: str, *,
                 warn_after_s: float = 30.0, warn_every_s: float = 300.0) -> None:  # fmt: skip
        self.log, self.what, self.where, self.hint = log, what, where, hint
        self.warn_after_s, self.warn_every_s = warn_after_s, warn_every_s
        self.since: float | None = None
        self.warned_at = -float("inf")

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self.log.info("waiting for %s at %s (%s)", self.what, self.where, exc)
            return
        if now - self.since < self.warn_after_s or now - self.warned_at < self.warn_every_s:
            self.log.debug("%s still unavailable: %s", self.what, exc)
            return
        self.warned_at = now
        self.log.warning("no answer from %s at %s for %.0f s (%s): %s",
                         self.what, self.where, now - self.since, exc, self.hint)  # fmt: skip

    def answered(self) -> None:
        if self.since is not None:
            self.log.info("%s at %s answers", self.what, self.where)
