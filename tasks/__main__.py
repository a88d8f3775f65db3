"""``python -m tasks <process type> <dramatiq arguments>``: a Dramatiq process type.

The Procfile's ``worker`` and ``signals`` run Dramatiq's own CLI through this entry point, which
differs from ``python -m dramatiq`` in one thing: logging. Dramatiq's CLI configures plain-text
logging at DEBUG in every process it starts, before our code runs; here the process logs JSON
lines at ``TP_LOG_LEVEL`` (core/logs.py) like every other process type, its worker processes
included (they are forked and keep the configuration), tagged with ``process type``.
"""

from __future__ import annotations

import sys

from dramatiq.cli import main as dramatiq_main
from dramatiq.cli import make_argument_parser

from core.config import load_settings
from core.logs import setup_logging
from core.redis_clients import wait_for_market_redis, wait_for_redis

USAGE = "usage: python -m tasks PROCESS_TYPE MODULE [MODULE ...] [dramatiq options]"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    process_type, dramatiq_args = argv[0], argv[1:]
    settings = load_settings()
    setup_logging(settings.log_level, process=process_type)
    wait_for_redis(settings.require_redis_url())  # quietly, before Dramatiq connects its broker
    wait_for_market_redis(settings.market_redis())
    parser = make_argument_parser()  # type: ignore[no-untyped-call]
    args = parser.parse_args(["--skip-logging", *dramatiq_args])
    return int(dramatiq_main(args) or 0)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
