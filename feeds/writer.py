"""The Redis side of the feeder: drains the outbox into the streams in pipelined batches.

One task, one asyncio client. Each batch is one pipeline (no transaction): pending gaps first,
then, per shard, one call of :data:`XADD_SHARD` carrying, per stream of the shard, all of the
batch's entries for it in one argument, newline-separated (``XADD ... MAXLEN ~ <bound>`` each),
and the last trade written per symbol of the shard (so a restarted feeder can tell what it
missed; one hash per shard, beside its streams), atomically. One script call per shard instead
of one XADD per event cuts the client's per-command cost (packing, reply parsing) that otherwise
dominates the feeder's CPU (and one per shard instead of one per stream and one HSET cut it 4x
again at light load, where a batch is small: issue 19), and one argument per stream instead of
one per entry cuts the packing again (redis-py packs argument by argument, in Python: ~1 µs
each). An encoded record never holds a raw newline (JSON escapes it in strings). The script is
called by its SHA and loaded once (again after a ``NOSCRIPT``: Redis restarted), not checked
with ``SCRIPT EXISTS`` before every batch as a registered script in a pipeline is. It touches
only its declared keys, all of one shard (one hash tag), so it is Redis-Cluster safe.

While Redis is down the batch is kept and retried with capped backoff; the outbox meanwhile
fills to its bound and sheds, so memory stays bounded and writing resumes by itself when Redis
returns. A retried batch whose first attempt half-landed
writes some entries twice: the candle builder ignores trade ids it has already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass

import redis.asyncio
from redis.exceptions import NoScriptError, RedisError

from core.keys import ENTRY_FIELD, Keys
from core.redis_clients import is_cluster
from core.schemas import Gap, encode
from feeds.outbox import Entry, Outbox
from feeds.sequencer import TradeLike

log = logging.getLogger(__name__)
GAP_STREAM_MAXLEN = 10_000
# KEYS[1] stream; ARGV[1] approximate MAXLEN; ARGV[2..] one encoded record per entry (the
# feeder wrote with it before the joined forms; bench/ seeds streams with it).
XADD_MANY = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i])
end
return #ARGV - 1
"""
# KEYS[1..n] streams of one shard, KEYS[n + 1] its last-trade hash; ARGV[1] approximate MAXLEN,
# ARGV[1 + k] the encoded records for KEYS[k] separated by newlines, then symbol, last-trade
# pairs for the hash (none if the batch holds no trade of the shard).
XADD_SHARD = """
local n = #KEYS - 1
local written = 0
for k = 1, n do
  for record in string.gmatch(ARGV[k + 1], '[^\\n]+') do
    redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[1], '*', 'd', record)
    written = written + 1
  end
end
for i = n + 2, #ARGV, 2 do
  redis.call('HSET', KEYS[n + 1], ARGV[i], ARGV[i + 1])
end
return written
"""
# Entries per batch at most. Saturated, the readers take in up to 64 KiB per connection per turn of
# the loop (binance/market_ws.py READ_MAX_BYTES, ~1,500 events over 5 connections) while a batch
# takes two turns (send, reply): at 2,000 a batch the writer fell behind the readers and the
# outbox filled and shed at ~60,000 events/s; at 20,000 it writes 150,000/s (issue 19). A batch
# is bounded in bytes by the outbox it comes from (32 MiB).
BATCH_MAX = 20_000
RETRY_MAX_S = 2.0
LINGER_S = 0.002  # a batch smaller than LINGER_BELOW entries waits this long before it goes
LINGER_BELOW = 500


@dataclass(slots=True)
class WriterCounters:
    written: int = 0
    gaps_written: int = 0
    batches: int = 0
    redis_errors: int = 0
    outages: int = 0


class StreamWriter:
    """Drains an Outbox into Redis Streams until cancelled."""

    def __init__(
        self, client: redis.asyncio.Redis, outbox: Outbox, keys: Keys, *, maxlen: int
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.keys = keys
        self.maxlen = maxlen
        self.counters = WriterCounters()
        self.redis_up = True
        self.in_flight = 0  # entries taken from the outbox and not yet written
        self._wake = asyncio.Event()
        self.waiting = False  # run() waits for a wake(): the outbox was empty
        self._closing = False
        self._sha = hashlib.sha1(XADD_SHARD.encode()).hexdigest()  # noqa: S324 - Redis's id
        self._loaded = False  # SCRIPT LOAD done on this server
        self.cluster = is_cluster(client)

    def close(self) -> None:
        """Ask run() to return once the outbox is empty."""
        self._closing = True
        self._wake.set()

    def wake(self) -> None:
        """Tell the writer there is something to write. Needed only while :attr:`waiting` (the
        feeder checks that first: one attribute read per event instead of two calls)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            if LINGER_S and not self._closing and 0 < len(self.outbox) < LINGER_BELOW:
                # A small batch waits a moment to grow: each batch costs a script call per
                # stream whatever its size, so below saturation tiny batches doubled the CPU
                # an event costs (bench/RESULTS.md, "A short linger").
                await asyncio.sleep(LINGER_S)
            gaps, entries = self.outbox.take(BATCH_MAX)
            if not gaps and not entries:
                if self._closing:
                    return
                self._wake.clear()
                self.waiting = True
                # A timeout too, so a missed wake-up can only delay, never stall, the writer.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.5)
                self.waiting = False
                continue
            self.in_flight = len(entries)
            await self._write_until_done(gaps, entries)
            self.in_flight = 0

    async def _write_until_done(self, gaps: list[Gap], entries: list[Entry]) -> None:
        delay = 0.05
        down_since = 0.0
        while True:
            try:
                if not self._loaded:
                    await self.client.script_load(XADD_SHARD)
                    self._loaded = True
                await self._write(gaps, entries)
            except NoScriptError:  # Redis restarted and lost its scripts: load it, write again
                self._loaded = False
                continue
            except RedisError as exc:
                self.counters.redis_errors += 1
                if self.redis_up:
                    self.redis_up = False
                    self.counters.outages += 1
                    down_since = time.monotonic()
                    log.warning("redis write failed, keeping the batch and retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if not self.redis_up:
                self.redis_up = True
                log.warning("redis writes resumed after %.1f s", time.monotonic() - down_since)
            return

    async def _write(self, gaps: list[Gap], entries: list[Entry]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for gap in gaps:
            stream = self.keys.gaps(self.keys.shard_of(gap.symbol))
            pipe.xadd(
                stream, {ENTRY_FIELD: encode(gap)}, maxlen=GAP_STREAM_MAXLEN, approximate=True
            )
        last: dict[str, TradeLike] = {}
        by_stream: dict[str, list[bytes]] = {}
        for stream, payload, trade in entries:
            payloads = by_stream.get(stream)
            if payloads is None:
                by_stream[stream] = [payload]
            else:
                payloads.append(payload)  # a symbol's order is kept
            if trade is not None:
                last[trade.symbol] = trade
        shards: dict[int, tuple[list[str], list[bytes], list[str]]] = {}
        for stream, payloads in by_stream.items():
            streams, joined, _ = shards.setdefault(self.keys.shard_in(stream), ([], [], []))
            streams.append(stream)
            joined.append(b"\n".join(payloads))
        for sym, t in last.items():
            marks = shards.setdefault(self.keys.shard_of(sym), ([], [], []))[2]
            marks += (sym, f"{t.trade_id}:{t.last_id}:{t.trade_time_ms}")
        # The script writes field 'd', which is core.keys.ENTRY_FIELD. redis-py refuses EVALSHA
        # in a cluster's pipeline: there the script's text goes with each call.
        script = ("EVAL", XADD_SHARD) if self.cluster else ("EVALSHA", self._sha)
        for shard, (streams, joined, marks) in shards.items():
            pipe.execute_command(*script, len(streams) + 1, *streams,
                                 self.keys.feed_last_trade(shard), self.maxlen, *joined,
                                 *marks)  # fmt: skip
        await pipe.execute()
        self.counters.batches += 1
        self.counters.written += len(entries)
        self.counters.gaps_written += len(gaps)
        for gap in gaps:
            log.warning(
                "gap recorded: %s raw trade ids %d..%d (%s)",
                gap.symbol, gap.from_trade_id, gap.to_trade_id, gap.reason,
                extra={"symbol": gap.symbol},
            )  # fmt: skip


async def read_last_trades(
    client: redis.asyncio.Redis, keys: Keys, symbols: list[str]
) -> dict[str, tuple[int, int, int]]:
    """Return symbol -> (trade_id, last_raw_id, trade_time_ms) as the last run left them."""
    shards = sorted({keys.shard_of(s) for s in symbols})
    pipe = client.pipeline(transaction=False)
    for shard in shards:
        pipe.hgetall(keys.feed_last_trade(shard))
    raw = {k: v for part in await pipe.execute() for k, v in part.items()}
    out: dict[str, tuple[int, int, int]] = {}
    for symbol, mark in raw.items():
        text = mark.decode() if isinstance(mark, bytes) else mark
        try:
            a, b, c = (int(x) for x in text.split(":"))
        except ValueError:
            log.error("ignoring malformed last-trade mark %r for %r", mark, symbol)
            continue
        out[symbol.decode() if isinstance(symbol, bytes) else symbol] = (a, b, c)
    return out
