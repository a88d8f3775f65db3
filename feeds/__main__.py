"""``python -m feeds [--shard K/N]``: the feeder process (Procfile: feeder).

With ``--shard 2/4`` this process takes the second quarter of the universe (symbols whose
``crc32 % 4 == 1``); four such processes split the market between them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import zlib

from binance.exchange_info import load_universe
from core.config import Settings, load_settings, parse_shard
from core.errors import ConfigError
from core.logs import setup_logging
from core.redis_clients import (
    async_client,
    async_market_client,
    wait_for_market_redis,
    wait_for_redis,
)
from core.stopping import run_until_stopped
from feeds.feeder import Feeder

log = logging.getLogger("feeds")


def shard_symbols(symbols: list[str], k: int, n: int) -> list[str]:
    """Return the symbols of feeder shard ``k`` of ``n`` (1-based)."""
    return [s for s in symbols if zlib.crc32(s.encode()) % n == k - 1]


async def main_async(settings: Settings, symbols: list[str], shard: tuple[int, int]) -> None:
    client = async_client(settings.require_redis_url(), max_connections=4, client_name="feeder")
    market = async_market_client(settings.market_redis(), client, max_connections=4,
                                 client_name="feeder")  # fmt: skip
    feeder = Feeder(settings, symbols, client, market=market,
                    feeder_id=f"feeder-{shard[0]}of{shard[1]}")  # fmt: skip
    try:
        await run_until_stopped(feeder.run(), lambda: feeder.stopping)
    finally:
        if market is not client:
            await market.aclose()
        await client.aclose()
    log.info("feeder stopped")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m feeds", description=__doc__)
    parser.add_argument("--shard", type=parse_shard, default=(1, 1), help="K/N (default 1/1)")
    args = parser.parse_args()
    settings = load_settings()
    setup_logging(settings.log_level, process="feeder")
    wait_for_redis(settings.require_redis_url())
    wait_for_market_redis(settings.market_redis())
    try:
        symbols = shard_symbols(load_universe(settings), *args.shard)
        asyncio.run(main_async(settings, symbols, args.shard))
    except ConfigError as exc:  # e.g. a configured symbol the exchange does not trade
        for var, what in exc.problems:
            print(f"configuration error: {var}: {what}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
