"""Key registry: stable sharding and Redis Cluster hash tags."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from redis.crc import key_slot

from binance.exchange_info import trading_perpetuals
from core.keys import Keys, shard_of
from tests.conftest import exchange_info


def universe() -> list[str]:
    return trading_perpetuals(exchange_info())


def test_shard_is_a_stable_crc32_not_pythons_salted_hash() -> None:
    # Literal values: a change here would silently move every symbol to another shard.
    assert [shard_of(s, 8) for s in ("BTCUSDT", "ETHUSDT", "SUSHIUSDT")] == [3, 4, 1]


def test_shards_spread_the_real_universe() -> None:
    counts = Counter(shard_of(s, 8) for s in universe())
    assert set(counts) == set(range(8))
    assert max(counts.values()) < 2.5 * min(counts.values())


def test_everything_a_candle_update_touches_is_in_one_cluster_slot() -> None:
    k = Keys("tp", 8)
    shard = k.shard_of("BTCUSDT")
    names = [k.trades(shard), k.klines(shard), k.candle_updates(shard), k.gaps(shard),
             k.candle_state("BTCUSDT"), k.signals("BTCUSDT", "1m"),
             *(k.candles("BTCUSDT", tf) for tf in ("1m", "5m", "1d"))]  # fmt: skip
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert all(n.startswith("tp:{s3}:") for n in names)


def test_different_shards_use_different_slots() -> None:
    k = Keys("tp", 16)
    assert len({key_slot(k.trades(i).encode()) for i in range(16)}) == 16


def test_namespace_prefixes_every_key() -> None:
    k = Keys("alpha", 4)
    names = [k.trades(0), k.candles("BTCUSDT", "1m"), k.feed_health(), k.dramatiq_namespace()]
    assert all(re.match(r"^alpha:", n) for n in names)


def test_shard_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="shard 4 out of range"):
        Keys("tp", 4).trades(4)
