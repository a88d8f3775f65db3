"""Key names built in one place: per shard (and read back), and Dramatiq's own layout."""

from __future__ import annotations

import pytest

from core.keys import Keys

K = Keys("tp", 8)


def test_the_shard_of_every_per_shard_stream_reads_back_from_its_name() -> None:
    for s in range(K.shards):
        for stream in (K.trades(s), K.klines(s), K.gaps(s), K.repairs(s)):
            assert Keys.shard_in(stream) == s
            assert Keys.shard_in(stream.encode()) == s  # as a Redis reply names it


@pytest.mark.parametrize("name", ["tp:universe", "tp:{sX}:trades", "tp:{s3:trades", "trades"])
def test_a_name_without_a_shard_tag_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a per-shard key"):
        Keys.shard_in(name)


def test_shard_streams_and_the_backfill_lock_share_the_shard_tag() -> None:
    assert K.shard_stream(2, "trades") == K.trades(2) == "tp:{s2}:trades"
    assert K.shard_stream(5, "candle-updates") == K.candle_updates(5)
    assert K.repair_lock(1, "BTCUSDT", "1m") == "tp:{s1}:repairs:lock:BTCUSDT:1m"
    with pytest.raises(ValueError, match="out of range"):
        K.shard_stream(8, "trades")


def test_dramatiq_keys_follow_the_brokers_own_layout() -> None:
    from dramatiq.common import dq_name, xq_name

    ns = K.dramatiq_namespace()
    assert K.dramatiq_queue("candles") == f"{ns}:candles"
    assert K.dramatiq_messages("candles") == f"{ns}:candles.msgs"
    assert K.dramatiq_delayed_messages("candles") == f"{ns}:{dq_name('candles')}.msgs"
    assert K.dramatiq_failed("candles") == f"{ns}:{xq_name('candles')}"
    assert K.dramatiq_failed_messages("candles") == f"{ns}:{xq_name('candles')}.msgs"
    assert K.dramatiq_queue_of_failed(K.dramatiq_failed("backfill")) == "backfill"
    assert K.dramatiq_failed_pattern() == f"{ns}:*.XQ"
