"""Candle writes to Redis: one Lua script call per write, so a write lands whole or not at all.

Two writers, two scripts:

* :data:`BUILD` (the consumer's candle builds, ``workers/candles.py``): compare-and-set on the
  shard's cursor (the last trades and klines entries applied), then every candle, the fold
  state, the acks of the entries applied, dead letters, repairs, counters and one
  candle-updates entry. A build that lost the race to
  another consumer changes nothing and returns 0.
* :data:`EXCHANGE` (backfill): the exchange's closed klines, written over whatever was there.

In both, a candle the exchange closed (source ``exchange``, the member's last field) is final: a
candle built from trades never replaces it. The scripts tell a member's source by its last bytes
(``core.schemas.candle_ending``, :data:`_ENDINGS`). A member is a whole encoded
:class:`~core.schemas.Candle`, scored by open time; replacing one is remove-by-score then add
(docs/stack.md, "Replacing a candle in a sorted set"), then the set is trimmed to its retention by
rank. Every key the scripts touch is declared in KEYS and shares the shard's hash tag, so they run
unchanged on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from core.keys import Keys
from core.redis_clients import in_pipeline
from core.schemas import Candle, candle_ending, encode

# Shared by the scripts: the last bytes of a member by its source (source is a candle's last field).
_ENDINGS = f"""
local EXCHANGE_END = '{candle_ending("exchange").decode()}'
local PARTIAL_END = '{candle_ending("partial").decode()}'
local TRADES_END = '{candle_ending("trades").decode()}'
local function ends(member, ending) return string.sub(member, -#ending) == ending end
"""

# Shared by the scripts: write one candle unless an exchange candle is there and this one is not;
# a candle marked partial (known to miss trades) stays partial until the exchange's replaces it.
# Return the member written, or false.
_PUT = (
    _ENDINGS
    + """
local function put(key, score, member, keep, final)
  if not final then
    local old = redis.call('ZRANGEBYSCORE', key, score, score)
    if old[1] then
      if ends(old[1], EXCHANGE_END) then return false end
      if ends(old[1], PARTIAL_END) and ends(member, TRADES_END) then
        member = string.sub(member, 1, -#TRADES_END - 1) .. PARTIAL_END
      end
    end
  end
  local replaced = redis.call('ZREMRANGEBYSCORE', key, score, score)
  redis.call('ZADD', key, score, member)
  if replaced == 0 then redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1)) end
  return member
end
"""
)

# Marks the series whose candles changed for the signal stage (``signal-dirty``: update counter per
# "SYM|tf") and sets ``signal-queued`` if absent: returns 2 when the caller should send
# evaluate_signals for the shard.
_DIRTY = """
local function dirty(dirty_key, queued_key, fields, flag_ms)
  for _, f in ipairs(fields) do redis.call('HINCRBY', dirty_key, f, 1) end
  if #fields > 0 and redis.call('SET', queued_key, '1', 'NX', 'PX', flag_ms) then return 2 end
  return 1
end
"""

# KEYS: cursor, trades, klines, updates, dead, metrics, repairs, signal-dirty, signal-queued, then
# candle sets and state hashes. Returns 0 if the cursor moved, else 1, or 2 (see _DIRTY).
# ARGV[1]: the JSON payload; ARGV[2...]: the candle texts it refers to by index, passed apart:
# cjson need not scan them, and the state hash shares the candle set's text instead of a copy.
BUILD = (
    _PUT
    + _DIRTY
    + """
local a = cjson.decode(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'trades', 'klines')
if (cur[1] or '0-0') ~= a.expect[1] or (cur[2] or '0-0') ~= a.expect[2] then return 0 end
local written, skipped = {}, 0
for _, c in ipairs(a.candles) do
  local m = put(KEYS[c[1]], c[2], ARGV[c[3]], c[4], c[5] == 1)
  if m then
    written[#written + 1] = m
  else
    skipped = skipped + 1
  end
end
for _, s in ipairs(a.state) do
  for i = 3, #s, 2 do
    if type(s[i]) == 'number' then s[i] = ARGV[s[i]] end
  end
  redis.call('HSET', KEYS[s[1]], unpack(s, 2))
end
for _, d in ipairs(a.dead) do
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', a.dead_maxlen, '*',
             'stream', d[1], 'id', d[2], 'error', d[3], 'd', d[4])
end
for _, r in ipairs(a.repairs) do redis.call('ZADD', KEYS[7], 'NX', r[1], r[2]) end
for i = 1, #a.ack_t, 1000 do
  redis.call('XACK', KEYS[2], a.group, unpack(a.ack_t, i, math.min(i + 999, #a.ack_t)))
end
for i = 1, #a.ack_k, 1000 do
  redis.call('XACK', KEYS[3], a.group, unpack(a.ack_k, i, math.min(i + 999, #a.ack_k)))
end
if #written > 0 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', a.updates_maxlen, '*',
             'd', '[' .. table.concat(written, ',') .. ']')
end
for _, m in ipairs(a.metrics) do redis.call('HINCRBY', KEYS[6], m[1], m[2]) end
if skipped > 0 then redis.call('HINCRBY', KEYS[6], 'final_kept', skipped) end
redis.call('HSET', KEYS[1], 'trades', a.cursor[1], 'klines', a.cursor[2])
redis.call('HDEL', KEYS[1], 'fail:trades', 'fail:klines')
for _, f in ipairs(a.fail) do redis.call('HSET', KEYS[1], f[1], f[2]) end
return dirty(KEYS[8], KEYS[9], a.dirty, a.flag_ms)
"""
)

# KEYS: cursor, trades, klines. ARGV: group, max entries per stream, consumer name ("": none).
# A build's reads in one round trip (each one costs the builder a wait for Redis): the cursor and
# failure notes, and per stream the entries after the cursor up to what the group has delivered
# (empty without a group), having first delivered the stream's new entries to the group as the
# named consumer (pending until BUILD acks them) when a name is given. Delivering here, not in the
# caller's blocking read, sends each entry over the wire once.
READ = """
local cur = redis.call('HMGET', KEYS[1], 'trades', 'klines', 'fail:trades', 'fail:klines')
local out = {cur}
for i = 2, 3 do
  local upto = nil
  if redis.call('EXISTS', KEYS[i]) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[i])) do
      local info = {}
      for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
      if info['name'] == ARGV[1] then upto = info['last-delivered-id'] end
    end
  end
  if upto and ARGV[3] ~= '' then
    local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[3], 'COUNT', ARGV[2],
                           'STREAMS', KEYS[i], '>')
    if got and #got[1][2] > 0 then upto = got[1][2][#got[1][2]][1] end
  end
  local after = cur[i - 1] or '0-0'
  if upto and upto ~= after then
    out[i] = redis.call('XRANGE', KEYS[i], '(' .. after, upto, 'COUNT', ARGV[2])
  else
    out[i] = {}
  end
end
return out
"""

# KEYS: updates, metrics, repairs, signal-dirty, signal-queued, then candle sets.
# ARGV[1]: {candles, metrics, done, later, dirty, maxlen}. Returns {written, 1 or 2 (_DIRTY)}.
EXCHANGE = (
    _PUT
    + _DIRTY
    + """
local a = cjson.decode(ARGV[1])
local written = {}
for _, c in ipairs(a.candles) do
  put(KEYS[c[1]], c[2], c[3], c[4], true)
  written[#written + 1] = c[3]
end
for _, m in ipairs(a.metrics) do redis.call('HINCRBY', KEYS[2], m[1], m[2]) end
for _, r in ipairs(a.done) do redis.call('ZREM', KEYS[3], r) end
for _, r in ipairs(a.later) do redis.call('ZADD', KEYS[3], 'XX', r[1], r[2]) end
if #written > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', a.updates_maxlen, '*',
             'd', '[' .. table.concat(written, ',') .. ']')
end
return {#written, dirty(KEYS[4], KEYS[5], a.dirty, a.flag_ms)}
"""
)

# KEYS: updates, metrics, then candle sets. ARGV[1]: {ranges: [[key, from, to]], updates_maxlen}.
# Marks the trade-built candles scored in each range partial (an outage may have hidden trades).
MARK_PARTIAL = (
    _ENDINGS
    + """
local a = cjson.decode(ARGV[1])
local written = {}
for _, r in ipairs(a.ranges) do
  local found = redis.call('ZRANGEBYSCORE', KEYS[r[1]], r[2], r[3], 'WITHSCORES')
  for i = 1, #found, 2 do
    local m = found[i]
    if ends(m, TRADES_END) then
      local marked = string.sub(m, 1, -#TRADES_END - 1) .. PARTIAL_END
      redis.call('ZREM', KEYS[r[1]], m)
      redis.call('ZADD', KEYS[r[1]], found[i + 1], marked)
      written[#written + 1] = marked
    end
  end
end
if #written > 0 then
  redis.call('HINCRBY', KEYS[2], 'outage_marked', #written)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', a.updates_maxlen, '*',
             'd', '[' .. table.concat(written, ',') .. ']')
end
return #written
"""
)


@dataclass
class KeyTable:
    """KEYS of one script call: fixed keys first, then each other key once, by first use."""

    keys: list[str]
    index: dict[str, int] = field(default_factory=dict)

    def __call__(self, key: str) -> int:
        i = self.index.get(key)
        if i is None:
            self.keys.append(key)
            i = self.index[key] = len(self.keys)  # Lua indexes from 1
        return i


@dataclass
class BuildWrite:
    """Everything one build of one shard writes, gathered before the single script call."""

    keys: Keys
    shard: int
    expect: tuple[str, str]
    cursor: tuple[str, str]
    retention: dict[str, int]
    group: str
    updates_maxlen: int
    dead_maxlen: int = 10_000
    signal_flag_ms: int = 2_000
    candles: list[list[Any]] = field(default_factory=list)
    texts: list[bytes] = field(default_factory=list)  # ARGV[2...]
    state: list[list[Any]] = field(default_factory=list)
    dead: list[list[str]] = field(default_factory=list)
    repairs: list[list[Any]] = field(default_factory=list)
    ack_t: list[str] = field(default_factory=list)
    ack_k: list[str] = field(default_factory=list)
    metrics: dict[str, int] = field(default_factory=dict)
    fail: dict[str, str] = field(default_factory=dict)  # "fail:trades" -> "id|attempts|error"
    dirty: set[str] = field(default_factory=set)  # "SYM|tf" of every candle written

    def __post_init__(self) -> None:
        k, s = self.keys, self.shard
        self._table = KeyTable([k.candle_cursor(s), k.trades(s), k.klines(s),
                                 k.candle_updates(s), k.dead(s), k.candle_metrics(s),
                                 k.repairs(s), k.signal_dirty(s), k.signal_queued(s)])  # fmt: skip

    def candle(self, c: Candle) -> int:
        """Add ``c`` to the write; return the ARGV index of its text (for :meth:`symbol_state`)."""
        key = self._table(self.keys.candles(c.symbol, c.timeframe))
        final = 1 if c.source == "exchange" else 0
        ref = self.text(c)
        self.candles.append([key, c.open_time_ms, ref, self.retention[c.timeframe], final])
        self.dirty.add(f"{c.symbol}|{c.timeframe}")
        return ref

    def text(self, c: Candle) -> int:
        """Add the encoding of ``c`` to the script's arguments; return its ARGV index."""
        self.texts.append(encode(c))
        return len(self.texts) + 1  # ARGV[1] is the payload; Lua indexes from 1

    def symbol_state(self, symbol: str, fields: dict[str, str | int]) -> None:
        """Set ``symbol``'s state fields; an int value is the ARGV index of a candle's text."""
        key = self._table(self.keys.candle_state(symbol))
        self.state.append([key, *(x for kv in fields.items() for x in kv)])

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.metrics[name] = self.metrics.get(name, 0) + n

    def execute(self, client: redis.Redis, script: Any) -> int:
        """Run the write; return 0 when another build moved the cursor first, else 1, or 2 when
        the caller should send evaluate_signals for the shard."""
        payload = {
            "expect": list(self.expect), "cursor": list(self.cursor), "group": self.group,
            "candles": self.candles, "state": self.state, "dead": self.dead,
            "repairs": self.repairs, "ack_t": self.ack_t, "ack_k": self.ack_k,
            "metrics": sorted(self.metrics.items()), "fail": sorted(self.fail.items()),
            "updates_maxlen": self.updates_maxlen, "dead_maxlen": self.dead_maxlen,
            "dirty": sorted(self.dirty), "flag_ms": self.signal_flag_ms,
        }  # fmt: skip
        args = [_json(payload), *self.texts]
        return int(script(keys=self._table.keys, args=args, client=client))


def write_exchange(
    client: redis.Redis,
    script: Any,
    keys: Keys,
    shard: int,
    candles: list[Candle],
    *,
    retention: dict[str, int],
    updates_maxlen: int,
    metrics: dict[str, int],
    done: list[str],
    later: list[tuple[int, str]],
) -> tuple[int, bool]:
    """Write the exchange's closed candles (final); settle repairs: drop ``done``, defer ``later``.

    Return the number of candles written and whether to send evaluate_signals for the shard.
    """
    table = KeyTable([keys.candle_updates(shard), keys.candle_metrics(shard), keys.repairs(shard),
                       keys.signal_dirty(shard), keys.signal_queued(shard)])  # fmt: skip
    rows = [[table(keys.candles(c.symbol, c.timeframe)), c.open_time_ms, encode(c).decode(),
             retention[c.timeframe]] for c in candles]  # fmt: skip
    payload = {"candles": rows, "metrics": sorted(metrics.items()), "done": done,
               "later": [list(x) for x in later], "updates_maxlen": updates_maxlen,
               "dirty": sorted({f"{c.symbol}|{c.timeframe}" for c in candles}),
               "flag_ms": 2_000}  # fmt: skip
    n, flag = script(keys=table.keys, args=[_json(payload)], client=client)
    return int(n), flag == 2


def mark_partial(
    client: Any,
    script: Any,
    keys: Keys,
    shard: int,
    symbol: str,
    ranges: list[tuple[str, int, int]],
    *,
    updates_maxlen: int,
) -> Any:
    """Mark partial the trade-built candles of ``symbol`` opened in each (timeframe, first open,
    last open) range. ``client`` may be a pipeline (the call then joins its transaction)."""
    table = KeyTable([keys.candle_updates(shard), keys.candle_metrics(shard)])
    rows = [[table(keys.candles(symbol, tf)), first, last] for tf, first, last in ranges]
    payload = {"ranges": rows, "updates_maxlen": updates_maxlen}
    return in_pipeline(client, script, table.keys, [_json(payload)])


def _json(payload: dict[str, Any]) -> bytes:
    # cjson decodes an empty JSON array as an empty table, which is what every loop above wants.
    return orjson.dumps(payload)
