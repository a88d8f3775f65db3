"""Gunicorn settings of the web process type (Procfile: ``-c python:web.gunicorn_conf``).

Only logging lives here: gunicorn's own lines ("Booting worker", "Handling signal") come out as
JSON at ``TP_LOG_LEVEL`` like every other line of every process type (core/logs.py), instead of
gunicorn's plain text. The server flags stay on the Procfile line, where operators look for them.
Access logs stay off (gunicorn's default): one line per request is noise for a websocket app,
and request counts are in /metrics.
"""

from __future__ import annotations

from core.config import load_settings

_level = load_settings().log_level
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": _level, "handlers": []},
    "formatters": {"json": {"()": "core.logs.JsonFormatter", "process_type": "web"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "gunicorn.error": {"level": _level, "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": _level, "handlers": ["stderr"], "propagate": False},
    },
}
