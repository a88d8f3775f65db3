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
