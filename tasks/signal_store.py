"""Signal writes to Redis: one Lua script call per evaluation round of a shard.

For each result, in order (a series' closed candles oldest first, then its provisional value):

* a closed-candle value is added to the signal's history only if that candle has none yet
  (``ZADD NX``): a duplicate evaluation writes nothing, so a value, once written, never changes
  (no repainting). Its state is compared with the previous closed candle's: a change is one entry
  in ``signal-events``;
* the latest value (hash field per signal) is replaced by anything newer: a later candle, or the
  closed value of the candle it held provisionally; never by an older or provisional one;
* every value written goes to ``signal-updates`` (one entry per call) for the web tier.

Then the series evaluated are removed from ``signal-dirty`` if nothing changed them meanwhile
(compare-and-delete on their update counter), and counters and last errors are recorded. Every
key shares the shard's hash tag (Redis Cluster: one slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from core.keys import Keys
from core.schemas import Signal, encode
from tasks.candle_store import KeyTable

# KEYS: dirty, updates, events, metrics, errors, then latest hashes and history sets.
# Encoded Signal (JSON array, 1-based in Lua): 6 open_time_ms, 8 state, 9 provisional.
WRITE = """
local a = cjson.decode(ARGV[1])
local written, events = {}, 0
for _, r in ipairs(a.results) do
  local latest, hist, name, open, member, closed = KEYS[r[1]], KEYS[r[2]], r[3], r[4], r[5], r[6]
  local fresh = true
  if closed == 1 then
    fresh = redis.call('ZADD', hist, 'NX', open, member) == 1
    if fresh then
      redis.call('ZREMRANGEBYRANK', hist, 0, -(a.history + 1))
      local prev = redis.call('ZREVRANGEBYSCORE', hist, '(' .. open, '-inf', 'LIMIT', 0, 1)
      if prev[1] and cjson.decode(prev[1])[8] ~= r[7] then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', a.events_maxlen, '*', 'd', member)
        events = events + 1
      end
    end
  end
  if fresh then
    local old = redis.call('HGET', latest, name)
    local replace = true
    if old then
      local o = cjson.decode(old)
      replace = open > o[6] or (open == o[6] and o[9] and (closed == 1 or old ~= member))
    end
    if replace then
      redis.call('HSET', latest, name, member)
      written[#written + 1] = member
    end
  end
end
if #written > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', a.maxlen, '*',
             'd', '[' .. table.concat(written, ',') .. ']')
end
for _, d in ipairs(a.dirty) do
  if redis.call('HGET', KEYS[1], d[1]) == d[2] then redis.call('HDEL', KEYS[1], d[1]) end
end
for _, m in ipairs(a.metrics) do redis.call('HINCRBY', KEYS[4], m[1], m[2]) end
for _, g in ipairs(a.gauges) do redis.call('HSET', KEYS[4], g[1], g[2]) end
if events > 0 then redis.call('HINCRBY', KEYS[4], 'events', events) end
for _, e in ipairs(a.errors) do redis.call('HSET', KEYS[5], e[1], e[2]) end
return #written
"""


@dataclass
class SignalWrite:
    """Everything one evaluation round of one shard writes, gathered before the script call."""

    keys: Keys
    shard: int
    history: int
    maxlen: int = 1_000  # signal-updates entries (TP_UPDATES_MAXLEN)
    events_maxlen: int = 10_000
    results: list[list[Any]] = field(default_factory=list)
    dirty: list[list[str]] = field(default_factory=list)
    metrics: dict[str, int] = field(default_factory=dict)  # counters: added
    gauges: dict[str, int] = field(default_factory=dict)  # levels: set
    errors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k, s = self.keys, self.shard
        self._key = KeyTable([k.signal_dirty(s), k.signal_updates(s), k.signal_events(s),
                              k.signal_metrics(s), k.signal_errors(s)])  # fmt: skip

    def result(self, sig: Signal) -> None:
        latest = self._key(self.keys.signals(sig.symbol, sig.timeframe))
        hist = self._key(self.keys.signal_history(sig.symbol, sig.timeframe, sig.formula))
        self.results.append([latest, hist, sig.formula, sig.open_time_ms, encode(sig).decode(),
                             0 if sig.provisional else 1, sig.state])  # fmt: skip

    def evaluated(self, series_field: str, counter: str) -> None:
        """The series was evaluated as of update counter ``counter``: clear it unless changed."""
        self.dirty.append([series_field, counter])

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.metrics[name] = self.metrics.get(name, 0) + n

    def execute(self, client: redis.Redis, script: Any) -> int:
        payload = {"results": self.results, "dirty": self.dirty, "history": self.history,
                   "metrics": sorted(self.metrics.items()), "gauges": sorted(self.gauges.items()),
                   "errors": sorted(self.errors.items()),
                   "maxlen": self.maxlen, "events_maxlen": self.events_maxlen}  # fmt: skip
        return int(script(keys=self._key.keys, args=[orjson.dumps(payload)], client=client))
