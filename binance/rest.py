"""Binance USD-M market-data REST (klines, server time) inside one weight budget per IP.

Binance counts request weight per IP per calendar minute and reports the count in
``X-MBX-USED-WEIGHT-1M`` on every response; past the limit it answers 429, and a client that keeps
sending is banned with 418 for 2 minutes to 3 days (docs/binance.md, "Rate limits and bans"). Every
worker process on one IP shares that budget, so the accounting lives in Redis:

* ``Keys.rest_weight()``: hash ``minute -> weight used`` (minute = server ms // 60 000). A request
  reserves its weight first (atomically: check and ``HINCRBY`` in one script), and each response
  raises the minute's value to at least the exchange's header. A *background* request (this
  client's klines; reconciliation and account reads in binance/account.py) may fill the minute up
  to ``weight_budget - weight_reserve`` only; the reserve is left to the calls a user waits for
  (cancels, order lookups). Past its limit the call raises :class:`Throttled` *without sending*:
  the caller (an actor) reschedules itself rather than block a worker thread.
* ``Keys.rest_ban()``: hash ``"418" -> ban end``, ``"429" -> backoff end``, ``"429o" -> backoff
  end for zero-weight requests too`` (server ms). A 418 stops every request of every process. A
  429 stops every request that carries IP weight; placing an order weighs 0 on the IP (reference
  §2.5), so orders go on unless an order itself was answered 429 (:func:`refusal`).

Times are the exchange's: the offset to ``GET /fapi/v1/time`` is measured lazily and refreshed
every :data:`TIME_SYNC_S` seconds (the ``Date`` header has only second resolution).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from decimal import Decimal
from types import TracebackType
from typing import Any, NoReturn

import httpx
import redis

from core.clock import now_ms
from core.errors import Banned, RateLimited, RestError, RestUnavailable, Throttled
from core.keys import Keys
from core.schemas import Candle
from core.timeframes import MINUTE_MS, SUPPORTED

log = logging.getLogger(__name__)

KLINES_PATH = "/fapi/v1/klines"
TIME_PATH = "/fapi/v1/time"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
KLINES_MAX_LIMIT = 1500  # reference §2.1
# Binance's kline intervals that core.timeframes knows (sub-minute ones are ours only).
KLINE_INTERVALS = frozenset(tf for tf in SUPPORTED if not tf.endswith("s"))
TIME_SYNC_S = 600.0  # re-measure the server clock offset this often
DEFAULT_BAN_MS = 120_000  # "Bans scale from 2 minutes to 3 days": assume the shortest if unsaid
JITTER_MS = 250  # spread the retries of throttled callers past the minute boundary
WEIGHT_TTL_MS = 2 * MINUTE_MS
_BANNED_UNTIL = re.compile(r"banned until (\d{12,})")
# Fields of the rest_ban hash: the 418 ban; the 429 backoff of weighted requests; the 429 backoff
# of zero-weight ones too (set only when such a request was itself answered 429).
_BAN, _BACKOFF, _BACKOFF_ALL = "418", "429", "429o"

# KEYS[1]: weight hash. ARGV: minute, weight, budget, ttl ms. Returns {reserved 0/1, used}.
# One script, so that two processes cannot both pass the check with the last bit of budget.
_RESERVE = """
local minute = tonumber(ARGV[1])
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if used + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {0, used} end
used = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if tonumber(field) < minute - 1 then redis.call('HDEL', KEYS[1], field) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, used}
"""
# KEYS[1]: a hash. ARGV: field, value, ttl ms. Raise the field to at least value; extend the TTL.
_RAISE_TO = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
"""


def default_reserve(budget: int) -> int:
    """Return the weight kept for user-facing calls when none is configured: a quarter."""
    return budget // 4  # core/config.py's TP_REST_WEIGHT_RESERVE default says the same


def weight_limit(budget: int, reserve: int | None) -> int:
    """Return what background calls may use of ``budget``; raise ValueError for a bad reserve."""
    kept = default_reserve(budget) if reserve is None else reserve
    if not 0 <= kept < budget:
        raise ValueError(f"weight reserve {kept} must be at least 0 and below the budget {budget}")
    return budget - kept


def refusal(
    ban_until: int, backoff_until: int, backoff_all_until: int, *, weight: int, now_ms: int
) -> RestError | None:
    """Return the error that stops a request of ``weight`` now, or None if it may be sent.

    A 418 ban stops everything. A 429 is about the IP's request weight: it stops requests that
    carry weight, not those that weigh 0 on the IP (``POST /fapi/v1/order``, reference §2.5),
    unless one of those was answered 429 itself (``backoff_all_until``): then they wait too.
    """
    if ban_until > now_ms:
        return Banned(ban_until, ban_until - now_ms, f"IP banned until {ban_until} (418 seen)")
    until = backoff_all_until if weight == 0 else max(backoff_until, backoff_all_until)
    if until > now_ms:
        return RateLimited(until - now_ms, f"backing off until {until} (429 seen)")
    return None


def klines_weight(limit: int) -> int:
    """Return the request weight of ``GET /fapi/v1/klines`` for ``limit`` (reference §2.1)."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def candle_from_row(
    symbol: str, interval: str, row: Any, *, server_now_ms: int, settle_ms: int
) -> Candle:
    """Return the Candle of one klines row; raise RestError if the row is malformed.

    A real BTCUSDT 1h row (hummingbot's test data)::

        [1718654400000,"66661.40","66746.20","66122.30","66376.00","14150.996",1718657999999,
         "939449103.58380",155369,"7106.240","471742093.14380","0"]

    The bar counts as closed once its close time plus ``settle_ms`` has passed on the server's
    clock: Binance may still amend a bar for a second or two after it ends.
    """
    try:
        if not isinstance(row, list) or len(row) < 11:
            raise ValueError("not a list of 12")
        open_ms, close_ms, trades = row[0], row[6], row[8]
        if not (type(open_ms) is int and type(close_ms) is int and type(trades) is int):
            raise ValueError("times and trade count must be integers")
        o, h, low, c, v, qv, tbv, tbq = (_decimal(row[i]) for i in (1, 2, 3, 4, 5, 7, 9, 10))
    except (ValueError, ArithmeticError) as exc:  # decimal.InvalidOperation is an ArithmeticError
        raise RestError(200, None, f"malformed klines row ({exc}): {row!r:.120}") from exc
    return Candle(
        symbol=symbol,
        timeframe=interval,
        open_time_ms=open_ms,
        close_time_ms=close_ms,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        quote_volume=qv,
        trades=trades,
        taker_buy_volume=tbv,
        taker_buy_quote_volume=tbq,
        first_trade_id=-1,  # REST klines do not say
        last_trade_id=-1,
        closed=close_ms + settle_ms < server_now_ms,
        source="exchange",
    )


def _decimal(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a decimal string")
    return Decimal(value)


class MarketRest:
    """A synchronous, thread-safe client of Binance USD-M market data REST.

    Its requests are background work: they use at most ``weight_budget - weight_reserve`` of a
    minute (``weight_reserve`` None: :func:`default_reserve`), so that the users' cancels and
    order lookups still find weight when backfill has spent its share.

    ``stats`` counts: ``requests`` sent, ``weight_used_last`` (the IP's weight this minute in the
    last response header), ``throttled`` (calls refused without sending: budget spent, or a
    backoff or ban recorded by any process), ``rate_limited`` and ``banned`` (429 and 418
    answers), ``errors`` (every other failed request).
    """

    def __init__(
        self,
        base_url: str,
        *,
        redis: redis.Redis,
        keys: Keys,
        weight_budget: int = 1200,
        weight_reserve: int | None = None,
        timeout_s: float = 10.0,
        settle_ms: int = 3000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.weight_budget = weight_budget
        self.weight_limit = weight_limit(weight_budget, weight_reserve)
        self.settle_ms = settle_ms
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests", "weight_used_last", "throttled", "rate_limited", "banned", "errors"), 0
        )
        self._redis = redis
        self._weight_key = keys.rest_weight()
        self._ban_key = keys.rest_ban()
        self._reserve = redis.register_script(_RESERVE)
        self._raise_to = redis.register_script(_RAISE_TO)
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)
        self._offset_ms = 0  # server clock minus ours
        self._synced_at: float | None = None  # time.monotonic() of the last measurement
        self._sync_lock = threading.Lock()
        self._stats_lock = threading.Lock()

    def close(self) -> None:
        """Close the HTTP connections (the Redis client belongs to the caller)."""
        self._http.close()

    def __enter__(self) -> MarketRest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- endpoints --------------------------------------------------------------------------

    def server_time_ms(self) -> int:
        """Return the exchange's clock now, measuring the offset first if it is due.

        Raises what a request raises (RestError and its subclasses) when a measurement is due.
        """
        with self._sync_lock:
            due = self._synced_at is None or time.monotonic() - self._synced_at >= TIME_SYNC_S
            if due:
                t0 = now_ms()
                body = self._get(TIME_PATH, {}, 1)
                t1 = now_ms()
                server = body.get("serverTime") if isinstance(body, dict) else None
                if type(server) is not int:
                    self._count("errors")
                    raise RestError(200, None, f"unexpected /time answer: {body!r:.120}")
                self._offset_ms = server - (t0 + t1) // 2  # half the round trip each way
                self._synced_at = time.monotonic()
        return self._now_ms()

    def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Candle]:
        """Return the klines of ``symbol``, oldest first, as ``source="exchange"`` Candles.

        Raises Throttled, RateLimited or Banned (retry after ``retry_after_ms``),
        RestUnavailable (retry), RestError (do not: e.g. code -1121 for an unknown symbol), and
        ValueError for an interval or limit Binance does not accept.
        """
        if interval not in KLINE_INTERVALS:
            raise ValueError(f"{interval!r} is not a kline interval ({sorted(KLINE_INTERVALS)})")
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            raise ValueError(f"limit {limit} is out of range 1..{KLINES_MAX_LIMIT}")
        self.server_time_ms()  # measure the clock first: a fetched page must not be wasted
        params: dict[str, str | int] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        rows = self._get(KLINES_PATH, params, klines_weight(limit))
        if not isinstance(rows, list):
            self._count("errors")
            raise RestError(200, None, f"klines answer is not a list: {rows!r:.120}")
        now = self._now_ms()
        return [
            candle_from_row(symbol, interval, row, server_now_ms=now, settle_ms=self.settle_ms)
            for row in rows
        ]

    # --- one request ------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str | int], weight: int) -> Any:
        self._admit(path, weight)
        self._count("requests")
        try:
            resp = self._http.get(path, params=params)
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            self._count("errors")
            raise RestUnavailable(None, None, f"GET {path}: {exc!r}") from exc
        self._observe_weight(resp)
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError as exc:  # a truncated body: the next try may do better
                self._count("errors")
                raise RestUnavailable(200, None, f"GET {path}: body is not JSON") from exc
        self._fail(path, resp)

    def _admit(self, path: str, weight: int) -> None:
        """Raise Banned, RateLimited or Throttled unless the request may be sent; reserve it."""
        now = self._now_ms()
        stops = self._redis.hmget(self._ban_key, [_BAN, _BACKOFF, _BACKOFF_ALL])
        ban_until, backoff_until, all_until = (int(raw or 0) for raw in stops)
        refused = refusal(ban_until, backoff_until, all_until, weight=weight, now_ms=now)
        if refused is not None:
            self._count("throttled")
            raise refused
        minute = now // MINUTE_MS
        limit = self.weight_limit
        reserved, used = self._reserve(
            keys=[self._weight_key], args=[minute, weight, limit, WEIGHT_TTL_MS]
        )
        if not reserved:
            self._count("throttled")
            retry_ms = (minute + 1) * MINUTE_MS - now + secrets.randbelow(JITTER_MS)
            log.debug("throttled %s: used %d + %d > background limit %d", path, used, weight,
                      limit, extra={"path": path})  # fmt: skip
            kept = self.weight_budget - limit
            raise Throttled(retry_ms, f"background weight {limit}/min spent ({used} used, "
                            f"{weight} asked; {kept} kept for users' orders)")  # fmt: skip

    def _observe_weight(self, resp: httpx.Response) -> None:
        raw = resp.headers.get(WEIGHT_HEADER)
        if raw is None or not raw.isdigit():
            return
        used = int(raw)
        with self._stats_lock:
            self.stats["weight_used_last"] = used
        minute = self._now_ms() // MINUTE_MS  # the exchange's minute the header counts
        self._raise_to(keys=[self._weight_key], args=[minute, used, WEIGHT_TTL_MS])

    def _fail(self, path: str, resp: httpx.Response) -> NoReturn:
        status = resp.status_code
        code, text = _binance_error(resp)
        now = self._now_ms()
        retry_after_ms = _retry_after_ms(resp)
        if status == 429:
            wait_ms = retry_after_ms if retry_after_ms is not None else _to_next_minute(now)
            self._record_stop(_BACKOFF, now + wait_ms, now)
            self._count("rate_limited")
            log.warning("REST 429 on %s: every process backs off for %d ms", path, wait_ms,
                        extra={"path": path, "retry_after_ms": wait_ms})  # fmt: skip
            raise RateLimited(wait_ms, text)
        if status == 418:
            until = _ban_until_ms(text, now)
            if until is None:
                until = now + (retry_after_ms if retry_after_ms is not None else DEFAULT_BAN_MS)
            self._record_stop(_BAN, until, now)
            self._count("banned")
            log.error("REST 418 on %s: IP banned until %d (%d ms): %s", path, until, until - now,
                      text, extra={"path": path, "banned_until_ms": until})  # fmt: skip
            raise Banned(until, until - now, text)
        self._count("errors")
        if status >= 500 or status == 408:  # 408: timeout waiting for the backend
            raise RestUnavailable(status, code, text, retry_after_ms=retry_after_ms)
        raise RestError(status, code, text)

    def _record_stop(self, field: str, until_ms: int, now_ms: int) -> None:
        ttl_ms = max(until_ms - now_ms, 1)
        self._raise_to(keys=[self._ban_key], args=[field, until_ms, ttl_ms])

    # --- helpers ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return now_ms() + self._offset_ms

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1


def _to_next_minute(now_ms: int) -> int:
    return (now_ms // MINUTE_MS + 1) * MINUTE_MS - now_ms


def _retry_after_ms(resp: httpx.Response) -> int | None:
    raw = resp.headers.get("Retry-After", "").strip()
    return int(raw) * 1000 if raw.isdigit() else None  # the HTTP-date form: never seen here


def _ban_until_ms(text: str, now_ms: int) -> int | None:
    """Return the end of the ban in "Way too many requests; IP banned until 1700000000000."."""
    m = _BANNED_UNTIL.search(text)
    until = int(m.group(1)) if m else None
    return until if until is not None and until > now_ms else None


def _binance_error(resp: httpx.Response) -> tuple[int | None, str]:
    """Return (code, msg) of Binance's ``{"code": -1121, "msg": "Invalid symbol."}``."""
    try:
        body = resp.json()
    except ValueError:
        return None, resp.text[:200] or resp.reason_phrase
    if isinstance(body, dict):
        code = body.get("code")
        return (code if type(code) is int else None), str(body.get("msg", ""))[:500]
    return None, resp.text[:200]
