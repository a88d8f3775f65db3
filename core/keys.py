"""Every Redis key, stream and consumer-group name of the system, and nothing else.

Layout (docs/architecture.md has the full table with record types and bounds)::

    <ns>:{s<shard>}:trades                   stream   Trade records of the shard's symbols
    <ns>:{s<shard>}:klines                   stream   exchange klines (Candle records)
    <ns>:{s<shard>}:book                     stream   BookTicker records
    <ns>:{s<shard>}:gaps                     stream   Gap records (lost trade ids) for backfill
    <ns>:{s<shard>}:dead                     stream   entries that failed N deliveries
    <ns>:{s<shard>}:candle-updates           stream   candles changed, for the web tier
    <ns>:{s<shard>}:signal-events            stream   signal state changes, for the web tier
    <ns>:{s<shard>}:signal-updates           stream   every signal result written, for the web tier
    <ns>:{s<shard>}:candles:<SYMBOL>:<tf>    zset     candles scored by open time
    <ns>:{s<shard>}:candle-state:<SYMBOL>    hash     fold state: last trade, candle per tf
    <ns>:{s<shard>}:candle-cursor            hash     last entries applied; failing entries
    <ns>:{s<shard>}:candle-metrics           hash     counters (applied, gaps, reconciled)
    <ns>:{s<shard>}:repairs                  zset     repair windows by due time (tasks/repairs.py)
    <ns>:{s<shard>}:builder                  string   the consumer building the shard (a lease)
    <ns>:{s<shard>}:repairs:lock:<SYM>:<tf>  string   set while backfill fetches that series
    <ns>:{s<shard>}:signals:<SYMBOL>:<tf>    hash     latest value per signal
    <ns>:{s<shard>}:signal-history:<SYMBOL>:<tf>:<signal>  zset  closed-candle values by open time
    <ns>:{s<shard>}:signal-dirty             hash     "SYM|tf" -> updates since last evaluated
    <ns>:{s<shard>}:signal-queued            string   set while an evaluate_signals(shard) is queued
    <ns>:{s<shard>}:signal-metrics           hash     counters (evaluations, errors per signal)
    <ns>:{s<shard>}:signal-errors            hash     signal -> last error (kind|message|ms)
    <ns>:{s<shard>}:feed:last-trade          hash     last trade written per symbol (restarts)
    <ns>:feed:health                         hash     feeder health, one field per feeder process
    <ns>:consumer:health                     hash     stream consumer health, one field per consumer
    <ns>:rest:weight                         hash     REST weight used per minute, every process
    <ns>:rest:ban-until                      hash     end (ms): 418 ban, 429 backoff, 429o (orders)
    <ns>:universe                            string   JSON list of the symbols followed
    <ns>:web:health                          hash     web process health, one field per process
    <ns>:worker:health                       hash     Dramatiq worker health (worker, signals roles)
    <ns>:auth:nonce:<nonce>                  string   an unused SIWE nonce (TTL 5 min)
    <ns>:auth:refresh:<sha256>               hash     a refresh token: family, address, used
    <ns>:auth:family:<family>                hash     a login session: address; gone = revoked
    <ns>:auth:rate:<kind>:<who>:<minute>     string   login attempts per IP or address
    <ns>:ops:audit                           stream   ops-page actions (MAXLEN ~ 1,000)
    <ns>:socketio                            channel  Flask-SocketIO message queue (pub/sub)
    <ns>:accounts:<address>                  hash     a user's linked exchange account (encrypted)
    <ns>:orders:commands[:<k>]               stream   trade commands, web -> execution shard k
    <ns>:orders:events                       stream   outcomes and order/account updates -> web
    <ns>:orders:audit                        stream   every command and its outcome (bounded)
    <ns>:orders:request:<address>:<req id>   string   a request id's client order id (idempotency)
    <ns>:orders:reply:<request id>           list     the outcome a waiting web request pops
    <ns>:orders:result:<address>:<req id>    string   a command's outcome (TTL 1 day)
    <ns>:orders:live:<address>               hash     client order id -> order not yet final
    <ns>:orders:done:<address>               list     final orders, newest first (bounded)
    <ns>:orders:fills:<address>              zset     fills by time, member unique per trade
    <ns>:orders:state:<address>              hash     balances, positions, stream status
    <ns>:orders:rate:<kind>:<address>:<win>  string   per-user command and order-budget counters
    <ns>:instruments                         string   JSON symbol -> trading filters
    <ns>:execution:health                    hash     execution process health
    <ns>:dramatiq:*                          Dramatiq broker keys (its own layout)
    <ns>:dead-letters-trimmed                hash     queue -> dead letters dropped past the bound

Market data is sharded by a stable hash of the symbol (CRC-32, identical in every process and
language, unlike Python's salted ``hash``). The shard is also the Redis Cluster hash tag (``{s3}``),
so a shard's input streams, its candles and its output streams share one slot: one script or
transaction may touch any of them, and a cluster spreads the load shard by shard. Dramatiq's keys
cannot live on a cluster (its Lua builds key names; docs/stack.md, "Dramatiq's Redis layout").

Two Redis roles: every per-shard key (``{sN}``) is market data and lives on the market-data Redis
(``TP_MARKET_REDIS_URL``: a server or a cluster); every other key on the control Redis
(``REDIS_URL``). Unset, the control Redis holds both.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

# Consumer groups, named for the role that reads.
GROUP_EXECUTION = "execution"  # trade commands -> the execution process
GROUP_CANDLES = "candles"  # stream consumer: trades and klines -> candle actors
GROUP_BACKFILL = "backfill"  # stream consumer: gaps -> backfill actors

# The single field of a market-data stream entry: the encoded record (core.schemas).
ENTRY_FIELD = b"d"


def execution_shard_of(address: str, shards: int) -> int:
    """Return the execution shard (0..shards-1) that owns the account of ``address``."""
    return zlib.crc32(address.lower().encode()) % shards


def shard_of(symbol: str, shards: int) -> int:
    """Return the shard (0..shards-1) of ``symbol``: CRC-32 of its name modulo the shard count."""
    return zlib.crc32(symbol.encode()) % shards


class _Deployment(Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def stream_shards(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names of one deployment: a namespace prefix and a shard count."""

    namespace: str = "tp"
    shards: int = 8

    @classmethod
    def of(cls, settings: _Deployment) -> Keys:
        """Return the keys of the deployment ``settings`` (``core.config.Settings``) describes."""
        return cls(settings.namespace, settings.stream_shards)

    def shard_of(self, symbol: str) -> int:
        return shard_of(symbol, self.shards)

    def _shard(self, shard: int) -> str:
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} out of range 0..{self.shards - 1}")
        return f"{self.namespace}:{{s{shard}}}"

    def _sym(self, symbol: str) -> str:
        return self._shard(self.shard_of(symbol))

    @staticmethod
    def shard_in(key: str | bytes) -> int:
        """Return the shard of a per-shard key or stream name (its ``{sN}`` hash tag, as Redis
        returns it in a reply); raise ValueError if it has none."""
        name = key.decode() if isinstance(key, bytes) else key
        _, tag, rest = name.partition(":{s")
        shard, brace, _ = rest.partition("}")
        if not (tag and brace and shard.isdigit()):
            raise ValueError(f"{name!r} is not a per-shard key")
        return int(shard)

    def shard_stream(self, shard: int, name: str) -> str:
        """Return the stream ``name`` (``trades``, ``klines``, ...) of ``shard``."""
        return f"{self._shard(shard)}:{name}"

    # --- streams (one per shard) ---
    def trades(self, shard: int) -> str:
        return f"{self._shard(shard)}:trades"

    def klines(self, shard: int) -> str:
        return f"{self._shard(shard)}:klines"

    def book(self, shard: int) -> str:
        return f"{self._shard(shard)}:book"

    def mark(self, shard: int) -> str:
        """Stream: encoded ``MarkPrice`` records (mark, index, funding), about 1/s per symbol."""
        return f"{self._shard(shard)}:mark"

    def gaps(self, shard: int) -> str:
        return f"{self._shard(shard)}:gaps"

    def dead(self, shard: int) -> str:
        return f"{self._shard(shard)}:dead"

    def candle_updates(self, shard: int) -> str:
        return f"{self._shard(shard)}:candle-updates"

    def signal_events(self, shard: int) -> str:
        return f"{self._shard(shard)}:signal-events"

    # --- per symbol ---
    def candles(self, symbol: str, timeframe: str) -> str:
        return f"{self._sym(symbol)}:candles:{symbol}:{timeframe}"

    def candle_state(self, symbol: str) -> str:
        return f"{self._sym(symbol)}:candle-state:{symbol}"

    def candle_cursor(self, shard: int) -> str:
        return f"{self._shard(shard)}:candle-cursor"

    def candle_metrics(self, shard: int) -> str:
        return f"{self._shard(shard)}:candle-metrics"

    def repairs(self, shard: int) -> str:
        return f"{self._shard(shard)}:repairs"

    def builder_lease(self, shard: int) -> str:
        """String: the name of the consumer that builds the shard's candles (workers/leases.py)."""
        return f"{self._shard(shard)}:builder"

    def repair_lock(self, shard: int, symbol: str, timeframe: str) -> str:
        """String: set while a backfill fetches ``symbol`` ``timeframe`` (duplicate deliveries)."""
        return f"{self.repairs(shard)}:lock:{symbol}:{timeframe}"

    def signals(self, symbol: str, timeframe: str) -> str:
        return f"{self._sym(symbol)}:signals:{symbol}:{timeframe}"

    def signal_history(self, symbol: str, timeframe: str, signal: str) -> str:
        return f"{self._sym(symbol)}:signal-history:{symbol}:{timeframe}:{signal}"

    def signal_updates(self, shard: int) -> str:
        return f"{self._shard(shard)}:signal-updates"

    def signal_dirty(self, shard: int) -> str:
        return f"{self._shard(shard)}:signal-dirty"

    def signal_queued(self, shard: int) -> str:
        return f"{self._shard(shard)}:signal-queued"

    def signal_metrics(self, shard: int) -> str:
        return f"{self._shard(shard)}:signal-metrics"

    def signal_errors(self, shard: int) -> str:
        return f"{self._shard(shard)}:signal-errors"

    # --- process-wide ---
    def feed_health(self) -> str:
        return f"{self.namespace}:feed:health"

    def consumer_health(self) -> str:
        """Hash: consumer name -> JSON health (counters, pending, lag), every 2 s."""
        return f"{self.namespace}:consumer:health"

    def feed_last_trade(self, shard: int) -> str:
        """Hash: symbol -> ``trade_id:last_raw_id:trade_time_ms`` of the last trade written, per
        shard: written in the same pipeline as the shard's streams, on the same node."""
        return f"{self._shard(shard)}:feed:last-trade"

    def rest_weight(self) -> str:
        """Hash: exchange minute (ms // 60000) -> REST request weight this IP used in it."""
        return f"{self.namespace}:rest:weight"

    def rest_ban(self) -> str:
        """Hash: ``418`` -> end of the IP's ban, ``429`` -> end of the backoff (server ms)."""
        return f"{self.namespace}:rest:ban-until"

    def universe(self) -> str:
        """String: JSON list of the symbols the pipeline follows (the consumer writes it)."""
        return f"{self.namespace}:universe"

    def signal_plan(self) -> str:
        """Hash: signal name -> JSON ``{"window", "timeframes", "symbols"}`` (the signals process
        writes it at start; the page says how many candles a series still needs)."""
        return f"{self.namespace}:signal-plan"

    def web_health(self) -> str:
        """Hash: web process name -> JSON health (clients, pump, backlog bounds), every 2 s."""
        return f"{self.namespace}:web:health"

    def worker_health(self) -> str:
        """Hash: Dramatiq process name -> JSON health (role, queues, messages), every 2 s."""
        return f"{self.namespace}:worker:health"

    def auth_nonce(self, nonce: str) -> str:
        return f"{self.namespace}:auth:nonce:{nonce}"

    def auth_refresh(self, token_hash: str) -> str:
        return f"{self.namespace}:auth:refresh:{token_hash}"

    def auth_family(self, family: str) -> str:
        return f"{self.namespace}:auth:family:{family}"

    def auth_rate(self, kind: str, who: str, minute: int) -> str:
        return f"{self.namespace}:auth:rate:{kind}:{who}:{minute}"

    def ops_audit(self) -> str:
        """Stream: one entry per ops-page action (who, what, ids, results)."""
        return f"{self.namespace}:ops:audit"

    # --- trading (control Redis: user data, kept across restarts) ---
    def account(self, address: str) -> str:
        """Hash: a user's linked exchange account; credentials only as ciphertext (core/vault)."""
        return f"{self.namespace}:accounts:{address.lower()}"

    def accounts_pattern(self) -> str:
        return f"{self.namespace}:accounts:*"

    def order_commands(self, shard: int = 0) -> str:
        """Stream: the commands of execution shard ``shard`` (``execution_shard_of``); shard 0
        keeps the plain name, so one execution process needs no setting."""
        base = f"{self.namespace}:orders:commands"
        return base if shard == 0 else f"{base}:{shard}"

    def order_events(self) -> str:
        return f"{self.namespace}:orders:events"

    def order_audit(self) -> str:
        return f"{self.namespace}:orders:audit"

    def order_request(self, address: str, request_id: str) -> str:
        return f"{self.namespace}:orders:request:{address.lower()}:{request_id}"

    def order_reply(self, request_id: str, address: str) -> str:
        return f"{self.namespace}:orders:reply:{address.lower()}:{request_id}"

    def order_result(self, request_id: str, address: str) -> str:
        """String: the outcome of a command (its `result` event), for repeats of its request id."""
        return f"{self.namespace}:orders:result:{address.lower()}:{request_id}"

    def orders_live(self, address: str) -> str:
        return f"{self.namespace}:orders:live:{address.lower()}"

    def orders_done(self, address: str) -> str:
        return f"{self.namespace}:orders:done:{address.lower()}"

    def order_fills(self, address: str) -> str:
        return f"{self.namespace}:orders:fills:{address.lower()}"

    def account_state(self, address: str) -> str:
        return f"{self.namespace}:orders:state:{address.lower()}"

    def order_rate(self, kind: str, address: str, window: int) -> str:
        return f"{self.namespace}:orders:rate:{kind}:{address.lower()}:{window}"

    def instruments(self) -> str:
        """String: JSON ``{symbol: filters}`` of the tradable symbols (execution writes it)."""
        return f"{self.namespace}:instruments"

    def execution_health(self) -> str:
        return f"{self.namespace}:execution:health"

    def socketio_channel(self) -> str:
        return f"{self.namespace}:socketio"

    def dramatiq_namespace(self) -> str:
        return f"{self.namespace}:dramatiq"

    def dead_letters_trimmed(self) -> str:
        """Hash: queue -> dead letters dropped, oldest first, past the bound (tasks/broker.py)."""
        return f"{self.namespace}:dead-letters-trimmed"

    # Dramatiq's own layout (dramatiq/brokers/redis.py and its dispatch.lua; docs/stack.md):
    # per queue a list of waiting ids and a hash of their messages, the same pair for delayed
    # messages (``<queue>.DQ``), and dead letters in a zset by failure time and a hash.
    def dramatiq_queue(self, queue_name: str) -> str:
        """List: the ids of a Dramatiq queue's messages waiting to be fetched (broker layout)."""
        return f"{self.dramatiq_namespace()}:{queue_name}"

    def dramatiq_messages(self, queue_name: str) -> str:
        """Hash: message id -> encoded message, for the queue's waiting messages."""
        return f"{self.dramatiq_queue(queue_name)}.msgs"

    def dramatiq_delayed_messages(self, queue_name: str) -> str:
        """Hash: message id -> encoded message, for the queue's delayed messages."""
        return f"{self.dramatiq_queue(queue_name)}.DQ.msgs"

    def dramatiq_failed(self, queue_name: str) -> str:
        """Zset: the queue's dead letters by failure time (ms)."""
        return f"{self.dramatiq_queue(queue_name)}.XQ"

    def dramatiq_failed_messages(self, queue_name: str) -> str:
        """Hash: message id -> encoded message, for the queue's dead letters."""
        return f"{self.dramatiq_failed(queue_name)}.msgs"

    def dramatiq_failed_pattern(self) -> str:
        """Return a SCAN pattern matching every queue's dead-letter zset."""
        return self.dramatiq_failed("*")

    def dramatiq_queue_of_failed(self, key: str) -> str:
        """Return the queue name of a dead-letter zset's key."""
        return key.removeprefix(self.dramatiq_namespace() + ":").removesuffix(".XQ")

    def all_keys_pattern(self) -> str:
        """Return a SCAN pattern matching every key of this namespace (tests clean up with it)."""
        return f"{self.namespace}:*"
