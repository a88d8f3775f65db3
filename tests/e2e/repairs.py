"""Rewrite a stored candle the way backfill repairs one, for the web tests of issue 16."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import orjson

from core.schemas import Candle, decode
from tasks.candle_store import EXCHANGE, write_exchange
from tests.e2e.webstack import WebStack
from web.market import candle_json


def repair_candle(stack: WebStack, symbol: str, tf: str, open_time: int) -> dict[str, Any]:
    """Replace a stored candle with a different, final one through backfill's store call
    (tasks/backfill.py: ``write_exchange``, which also writes its candle-updates entry); return
    it as browsers get it."""
    key = stack.keys.candles(symbol, tf)
    (raw,) = stack.redis.zrangebyscore(key, open_time, open_time)
    old = decode(raw, Candle)
    fixed = dataclasses.replace(old, close=old.high, volume=old.volume + Decimal("0.5"),
                                source="exchange")  # fmt: skip
    script = stack.redis.register_script(EXCHANGE)
    written, _ = write_exchange(stack.redis, script, stack.keys, stack.keys.shard_of(symbol),
                                [fixed], retention={tf: 500}, updates_maxlen=1000, metrics={},
                                done=[], later=[])  # fmt: skip
    assert written == 1
    (raw,) = stack.redis.zrangebyscore(key, open_time, open_time)
    stored = candle_json(orjson.loads(raw))
    assert stored is not None
    assert stored["source"] == "exchange"
    return stored
