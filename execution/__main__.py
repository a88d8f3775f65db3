"""``python -m execution [--name NAME] [--shard K/N]``: the execution process (Procfile:
execution).

``--name`` is this process's consumer name in the ``execution`` group; keep it stable across
restarts of the same slot (Heroku: pass the dyno name), so that the commands it left pending
when it died are the first it reads again.

``--shard K/N`` (N = ``TP_EXECUTION_SHARDS``, which the web processes route by): this process
runs the accounts whose address falls in shard K, and reads their commands' stream only. One
process per shard; a stopped one's commands wait in its stream for its restart.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from core.config import load_settings, parse_shard
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
    parser.add_argument("--shard", type=parse_shard, default=(1, 1),
                        help="K/N: shard K of N = TP_EXECUTION_SHARDS (default 1/1)")  # fmt: skip
    args = parser.parse_args()
    settings = load_settings()
    setup_logging(settings.log_level, process="execution")
    k, n = args.shard
    if n != settings.execution.shards:
        print(f"configuration error: --shard {k}/{n}: N must equal TP_EXECUTION_SHARDS "
              f"({settings.execution.shards}), which the web processes route commands by",
              file=sys.stderr)  # fmt: skip
        return 2
    wait_for_redis(settings.require_redis_url())
    client = async_client(settings.require_redis_url(), max_connections=32, client_name="execution")
    try:
        service = ExecutionService(settings, client, consumer=args.name, shard=k - 1)
        asyncio.run(main_async(service))
    except ConfigError as exc:
        for var, what in exc.problems:
            print(f"configuration error: {var}: {what}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
