"""``python -m execution [--name NAME]``: the execution process (Procfile: execution).

``--name`` is this process's consumer name in the ``execution`` group; keep it stable across
restarts of the same slot (Heroku: pass the dyno name), so that the commands it left pending
when it died are the first it reads again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from core.config import load_settings
from core.errors import ConfigError
from core.logs import setup_logging
from core.redis_clients import async_client, wait_for_redis
from core.stopping import run_until_stopped
from execution.service import ExecutionService

log = logging.getLogger("execution")


async def main_async(service: ExecutionService) -> None:
    await run_until_stopped(service.run(), lambda: service.stopping)
    log.info("execution stopped")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m execution", description=__doc__)
    parser.add_argument("--name", default="execution-1", help="consumer name (stable per slot)")
    args = parser.parse_args()
    settings = load_settings()
    setup_logging(settings.log_level, process="execution")
    wait_for_redis(settings.require_redis_url())
    client = async_client(settings.require_redis_url(), max_connections=32, client_name="execution")
    try:
        asyncio.run(main_async(ExecutionService(settings, client, consumer=args.name)))
    except ConfigError as exc:
        for var, what in exc.problems:
            print(f"configuration error: {var}: {what}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
