"""``backfill_klines``: replace candles that miss trades with the exchange's own klines.

Repairs (``<ns>:{sN}:repairs``, windows by due time: ``tasks.repairs``) come from the candle
actor (lost trades, a candle that started before we did, a reconciliation difference), from gap
records, from the start-up history and from signals short of candles. The consumer sends the
due ones here, coalesced per symbol and timeframe and leased for a minute, so a window is not
fetched twice at once; a duplicate delivery is also turned away by a per-series lock.

One request per message, within the REST weight budget shared by every process
(``binance.rest``), less the reserve kept for users' cancels and order lookups
(``TP_REST_WEIGHT_RESERVE``): backfill is background work. When its share is spent, on 429 and
during a 418 ban the repairs are put back with the time they may be retried, and the message
ends: no worker thread sleeps on a rate limit. Bars still open on the exchange are left for
later; the closed ones are written as final (``tasks.candle_store.EXCHANGE``) and every
difference from what was stored is counted.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
import redis

from binance.rest import MarketRest
from core.clock import now_ms
from core.errors import RestError
from core.schemas import Candle, decode
from tasks.actors import BACKFILL_KLINES, EVALUATE_SIGNALS
from tasks.broker import clients, keys, send_bounded, settings, trigger_bound
from tasks.candle_store import EXCHANGE, write_exchange
from tasks.repairs import bar_count, classify, due_ms

log = logging.getLogger("tasks.backfill")

LOCK_MS = 30_000
UNAVAILABLE_RETRY_MS = 5_000

_lock = threading.Lock()
# One request in flight per process: after a 429 the backoff is recorded before the next request
# is admitted, so a burst of requests already in flight cannot collect the repeated 429s that
# earn a 418 ban.
_in_flight = threading.Lock()
_rest: MarketRest | None = None
clients.declare("backfill", max_connections=8)


def _clients() -> tuple[redis.Redis, MarketRest]:
    """Return the market-data client and the REST client (its weight budget: control Redis)."""
    global _rest
    client = clients.market("backfill")
    with _lock:
        if _rest is None:
            _rest = MarketRest(settings.market.rest_url, redis=clients.get("backfill"), keys=keys,
                               weight_budget=settings.candles.rest_weight_budget,
                               weight_reserve=settings.candles.rest_weight_reserve)  # fmt: skip
        return client, _rest


def difference(stored: Candle | None, exch: Candle) -> str:
    """Name what the exchange's closed kline does to the stored candle (a counter name)."""
    outcome, _ = classify(stored, exch)
    return "backfill_repaired" if outcome == "partial" else f"backfill_{outcome}"


@dramatiq.actor(actor_name=BACKFILL_KLINES.actor_name, queue_name=BACKFILL_KLINES.queue_name,
                max_retries=3, min_backoff=1_000, max_backoff=10_000,
                time_limit=60_000)  # fmt: skip
def backfill_klines(
    shard: int, symbol: str, timeframe: str, first_open_ms: int, last_open_ms: int,
    members: list[str],
) -> None:  # fmt: skip
    """Fetch the exchange's klines of ``symbol`` ``timeframe`` opening in the window; store them."""
    client, rest = _clients()
    lock = keys.repair_lock(shard, symbol, timeframe)
    if not client.set(lock, "1", nx=True, px=LOCK_MS):
        return  # the same series is being fetched now (a duplicate delivery): the lease covers it
    try:
        _backfill(client, rest, shard, symbol, timeframe, first_open_ms, last_open_ms, members)
    finally:
        client.delete(lock)


def _backfill(
    client: redis.Redis, rest: MarketRest, shard: int, symbol: str, timeframe: str,
    first_open_ms: int, last_open_ms: int, members: list[str],
) -> None:  # fmt: skip
    tf = next(t for t in settings.timeframes if t.name == timeframe)
    bars = bar_count(tf, first_open_ms, last_open_ms)
    script = client.register_script(EXCHANGE)
    try:
        with _in_flight:
            rows = rest.klines(symbol, timeframe, start_ms=first_open_ms, end_ms=last_open_ms,
                               limit=min(bars, 1500))  # fmt: skip
    except RestError as exc:
        if not exc.retryable:
            log.error(
                "backfill %s %s dropped: %s", symbol, timeframe, exc, extra={"symbol": symbol}
            )
            write_exchange(client, script, keys, shard, [], retention={}, updates_maxlen=1,
                           metrics={"backfill_dropped": 1}, done=members, later=[])  # fmt: skip
            return
        wait = exc.retry_after_ms or UNAVAILABLE_RETRY_MS
        log.debug("backfill %s %s deferred %d ms: %s", symbol, timeframe, wait, exc)
        later = [(now_ms() + wait, m) for m in members]
        write_exchange(client, script, keys, shard, [], retention={}, updates_maxlen=1,
                       metrics={"backfill_deferred": 1}, done=[], later=later)  # fmt: skip
        return
    closed = [c for c in rows if c.closed and first_open_ms <= c.open_time_ms <= last_open_ms]
    metrics = {"backfill_requests": 1}
    key = keys.candles(symbol, timeframe)
    pipe = client.pipeline(transaction=False)
    for c in closed:
        pipe.zrange(key, c.open_time_ms, c.open_time_ms, byscore=True)
    for c, stored in zip(closed, pipe.execute(), strict=True):
        name = difference(decode(stored[0], Candle) if stored else None, c)
        metrics[name] = metrics.get(name, 0) + 1
    still_open = any(not c.closed for c in rows if c.open_time_ms <= last_open_ms)
    settle = due_ms(tf, last_open_ms)
    done, later = (members, []) if not still_open else ([], [(settle, m) for m in members])
    _, signals_due = write_exchange(
        client, script, keys, shard, closed, retention=dict(settings.candles.retention),
        updates_maxlen=settings.candles.updates_maxlen, metrics=metrics, done=done, later=later,
    )  # fmt: skip
    if signals_due and not send_bounded(EVALUATE_SIGNALS, shard, bound=trigger_bound()):
        client.hincrby(keys.candle_metrics(shard), "signals_refused", 1)
