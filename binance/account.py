"""Binance USD-M private REST: orders, account, positions, listen keys, for one API key (async).

Every call is signed (binance/signing.py) with ``timestamp`` = local clock + the measured offset
to ``GET /fapi/v1/time`` (re-measured every :data:`TIME_SYNC_S` and after a -1021, which keeps
"outside of the recvWindow" away) and a short ``recvWindow``: since 2023 the matching engine
itself re-checks it, so an order whose answer was lost cannot go live later than
``timestamp + recvWindow`` (docs/execution.md, "What we rely on from Binance").

Outcomes, for a request that changes state (an order, a cancel):

* a JSON answer: the result;
* a Binance error code in a 4xx: :class:`~core.errors.RestError` (definitely refused), except
  -1006 / -1007 (status unknown);
* 408, 5xx, -1006, -1007, a read timeout or a connection lost after sending:
  :class:`~core.errors.OutcomeUnknown`; the caller resolves it by looking the order up;
* a connection that could not be made: :class:`~core.errors.NotSent`;
* 429 / 418: :class:`~core.errors.RateLimited` / :class:`~core.errors.Banned`; a 429 with
  -1015 ("Too many new orders") is the account's own order limit, not the IP's: a
  :class:`~core.errors.RestError` for this account alone, whose orders wait for its Retry-After.

IP weight (binance/rest.py, docs/binance.md "Our weight budget"): every call reserves its weight
in the budget shared with every process. Calls are user-facing by default and may use the whole
budget; ``background=True`` (reconciliation, account refreshes: execution/reconcile.py) leaves
the reserve to them. Placing an order weighs 0 and is stopped only by a 418 ban, or by a 429
answered to an order itself.

No method logs a request's query (it carries the signature) or the API key.
"""

from __future__ import annotations

import contextlib
import logging
import time
from decimal import Decimal
from typing import Any

import httpx
import redis.asyncio

from binance.rest import (
    _BACKOFF,
    _BACKOFF_ALL,
    _BAN,
    _RAISE_TO,
    _RESERVE,
    WEIGHT_HEADER,
    WEIGHT_TTL_MS,
    _ban_until_ms,
    _binance_error,
    _retry_after_ms,
    refusal,
    weight_limit,
)
from binance.signing import Signer
from core.clock import now_ms
from core.errors import Banned, NotSent, OutcomeUnknown, RateLimited, RestError, Throttled
from core.keys import Keys
from core.timeframes import MINUTE_MS

log = logging.getLogger(__name__)

TIME_SYNC_S = 600.0
UNKNOWN_CODES = frozenset({-1006, -1007})  # "execution status unknown" (reference §2.5)
TOO_MANY_ORDERS = -1015  # the account's order rate limit (a 429, but not the IP's)
# IP request weight per call (reference §2.3, §3.4, §4); any other call weighs 1. Placing an
# order weighs 0 on the IP (it counts on the account's order limits instead, reference §2.5).
WEIGHTS = {
    ("POST", "/fapi/v1/order"): 0, ("GET", "/fapi/v1/openOrders"): 40,
    ("GET", "/fapi/v2/account"): 5, ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v1/userTrades"): 5,
}  # fmt: skip


class SharedWeight:
    """The IP's request-weight budget and ban state, shared with every process through Redis.

    The same keys and scripts as binance/rest.py's MarketRest: a reconciliation of many accounts
    cannot spend the weight the candle backfill needs, a 429 or 418 seen here stops every
    process until it ends (a 429 stops weighted requests only, unless an order got it), and
    background calls leave ``reserve`` (None: a quarter of ``budget``) to the users' calls.
    """

    def __init__(
        self, r: redis.asyncio.Redis, keys: Keys, budget: int, reserve: int | None = None
    ) -> None:
        self.budget = budget
        self.background_limit = weight_limit(budget, reserve)
        self.reserve = budget - self.background_limit
        self._r = r
        self._weight_key, self._ban_key = keys.rest_weight(), keys.rest_ban()
        self._reserve = r.register_script(_RESERVE)
        self._raise_to = r.register_script(_RAISE_TO)

    async def admit(self, weight: int, now_ms: int, *, background: bool = False) -> None:
        """Reserve ``weight``; raise Banned, RateLimited or Throttled (nothing sent) if not.

        ``background`` calls may fill the minute up to ``budget - reserve``, the others to
        ``budget``; a call of weight 0 reserves nothing.
        """
        stops = await self._r.hmget(self._ban_key, [_BAN, _BACKOFF, _BACKOFF_ALL])
        ban_until, backoff_until, all_until = (int(raw or 0) for raw in stops)
        refused = refusal(ban_until, backoff_until, all_until, weight=weight, now_ms=now_ms)
        if refused is not None:
            raise refused
        if not weight:
            return
        minute = now_ms // MINUTE_MS
        limit = self.background_limit if background else self.budget
        reserved, used = await self._reserve(
            keys=[self._weight_key], args=[minute, weight, limit, WEIGHT_TTL_MS]
        )
        if not reserved:
            which = "background weight" if background else "IP weight budget"
            raise Throttled((minute + 1) * MINUTE_MS - now_ms,
                            f"{which} {limit}/min spent ({used} used)")  # fmt: skip

    async def observe(self, used: int, now_ms: int) -> None:
        """Raise the minute's count to the exchange's ``X-MBX-USED-WEIGHT-1M``."""
        minute = now_ms // MINUTE_MS
        await self._raise_to(keys=[self._weight_key], args=[minute, used, WEIGHT_TTL_MS])

    async def stop(self, field: str, until_ms: int, now_ms: int) -> None:
        await self._raise_to(
            keys=[self._ban_key], args=[field, until_ms, max(until_ms - now_ms, 1)]
        )


class AccountClient:
    """Signed USD-M REST calls for one account. Build one per API key; ``aclose`` when done."""

    def __init__(
        self,
        base_url: str,
        signer: Signer,
        *,
        recv_window_ms: int = 3000,
        timeout_ms: int = 5000,
        http: httpx.AsyncClient | None = None,
        weight: SharedWeight | None = None,
    ) -> None:
        self._signer = signer
        self._weight = weight
        self._recv_window_ms = recv_window_ms
        self._own_http = http is None
        timeout = httpx.Timeout(timeout_ms / 1000, connect=min(timeout_ms / 1000, 3.0))
        self._http = http or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, limits=httpx.Limits(max_connections=20)
        )
        self._base = base_url
        self._offset_ms = 0
        self._synced_at = 0.0
        self.order_count_10s = 0  # X-MBX-ORDER-COUNT-10S of the latest order answer
        self._orders_until_ms = 0  # after a -1015: this account's orders wait until then
        self._pending_stops: list[tuple[str, int, int]] = []

    def __repr__(self) -> str:
        return f"AccountClient({self._base}, {self._signer!r})"

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    @property
    def offset_ms(self) -> int:
        return self._offset_ms

    def now_ms(self) -> int:
        """Return the exchange's clock as we estimate it."""
        return now_ms() + self._offset_ms

    async def sync_time(self, *, background: bool = False) -> int:
        """Measure the offset to the server clock (half the round trip); return it.

        Raises Throttled, RateLimited or Banned (nothing sent) when the IP's weight says no.
        """
        weight = await self._admit("GET", "/fapi/v1/time", background=background)
        t0 = now_ms()
        resp = await self._send("GET", "/fapi/v1/time", "", api_key=False, weight=weight)
        t1 = now_ms()
        server = int(resp["serverTime"])
        self._offset_ms = server - (t0 + t1) // 2
        self._synced_at = time.monotonic()
        return self._offset_ms

    # --- orders -------------------------------------------------------------------------------

    async def place_order(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order with ``newOrderRespType=RESULT``; see the module docstring.

        After a -1015 the account's orders are refused here, unsent, until its Retry-After.
        """
        now = self.now_ms()
        if self._orders_until_ms > now:
            until = self._orders_until_ms
            raise RestError(429, TOO_MANY_ORDERS,
                            f"Too many new orders: this account's orders wait until {until}",
                            retry_after_ms=until - now)  # fmt: skip
        result: dict[str, Any] = await self.signed(
            "POST", "/fapi/v1/order", {**params, "newOrderRespType": "RESULT"}, changes=True
        )
        return result

    async def query_order(
        self, symbol: str, client_order_id: str, *, background: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed(
            "GET",
            "/fapi/v1/order",
            {"symbol": symbol, "origClientOrderId": client_order_id},
            background=background,
        )
        return result

    async def cancel_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed(
            "DELETE",
            "/fapi/v1/order",
            {"symbol": symbol, "origClientOrderId": client_order_id},
            changes=True,
        )
        return result

    async def cancel_all(self, symbol: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed(
            "DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol}, changes=True
        )
        return result

    async def open_orders(self, *, background: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.signed(
            "GET", "/fapi/v1/openOrders", {}, background=background
        )
        return result

    async def user_trades(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        background: bool = False,
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {"symbol": symbol, "limit": "1000"}
        if from_id is not None:
            params["fromId"] = str(from_id)
        elif start_ms is not None:
            params["startTime"] = str(start_ms)
        result: list[dict[str, Any]] = await self.signed(
            "GET", "/fapi/v1/userTrades", params, background=background
        )
        return result

    # --- account ------------------------------------------------------------------------------

    async def account(self, *, background: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed(
            "GET", "/fapi/v2/account", {}, background=background
        )
        return result

    async def position_risk(self, *, background: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.signed(
            "GET", "/fapi/v2/positionRisk", {}, background=background
        )
        return result

    async def set_leverage(self, symbol: str, leverage: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed(
            "POST", "/fapi/v1/leverage", {"symbol": symbol, "leverage": str(leverage)}, changes=True
        )
        return result

    async def set_margin_type(self, symbol: str, margin_type: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.signed(
                "POST",
                "/fapi/v1/marginType",
                {"symbol": symbol, "marginType": margin_type},
                changes=True,
            )
        except RestError as exc:
            if exc.code == -4046:  # "No need to change margin type": already so
                return {"code": 200, "msg": "success"}
            raise
        return result

    # --- user data stream (API key only, not signed) ------------------------------------------

    async def new_listen_key(self) -> str:
        resp = await self._keyed("POST", "/fapi/v1/listenKey")
        return str(resp["listenKey"])

    async def keepalive_listen_key(self) -> None:
        await self._keyed("PUT", "/fapi/v1/listenKey")

    async def close_listen_key(self) -> None:
        await self._keyed("DELETE", "/fapi/v1/listenKey")

    async def _keyed(self, method: str, path: str) -> Any:
        weight = await self._admit(method, path, background=False)  # keeps users' events coming
        return await self._send(method, path, "", api_key=True, weight=weight)

    # --- transport ----------------------------------------------------------------------------

    async def signed(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        *,
        changes: bool = False,
        background: bool = False,
    ) -> Any:
        """Send a SIGNED request; ``changes``: a lost answer is OutcomeUnknown, not retryable.

        ``background``: the call leaves the IP's weight reserve to user-facing calls.
        """
        if time.monotonic() - self._synced_at > TIME_SYNC_S:
            # Refused by the IP's weight: keep the last offset; the request is admitted on its own.
            with contextlib.suppress(Throttled, RateLimited, Banned):
                await self.sync_time(background=background)
        for attempt in (1, 2):
            timestamp = self.now_ms()
            weight = await self._admit(method, path, background=background)
            stamped: dict[str, str | int] = {
                **params,
                "recvWindow": self._recv_window_ms,
                "timestamp": timestamp,
            }
            query = self._signer.sign_query(stamped)
            try:
                return await self._send(
                    method, path, query, api_key=True, changes=changes, weight=weight
                )
            except RestError as exc:
                # -1021: refused for its timestamp, so certainly not executed: re-measure, retry
                if exc.code == -1021 and attempt == 1:
                    log.warning("clock offset re-measured after -1021 on %s", path)
                    await self.sync_time(background=background)
                    continue
                # The timestamp signed (exchange clock as estimated then): with recvWindow, the
                # latest moment an order whose answer was lost can go live.
                exc.sent_at_ms = timestamp
                raise
        raise AssertionError("unreachable")

    async def _admit(self, method: str, path: str, *, background: bool) -> int:
        """Reserve the call's IP weight (raise Throttled, RateLimited or Banned); return it."""
        weight = WEIGHTS.get((method, path), 1)
        if self._weight is not None:
            await self._weight.admit(weight, self.now_ms(), background=background)
        return weight

    async def _send(
        self,
        method: str,
        path: str,
        query: str,
        *,
        api_key: bool,
        changes: bool = False,
        weight: int = 1,
    ) -> Any:
        headers = {"X-MBX-APIKEY": self._signer.api_key} if api_key else {}
        url = f"{path}?{query}" if query else path
        try:
            resp = await self._http.request(method, url, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise NotSent(None, None, f"{method} {path}: exchange unreachable") from exc
        except httpx.HTTPError as exc:
            what = type(exc).__name__
            if changes:
                raise OutcomeUnknown(None, None, f"{method} {path}: no answer ({what})") from exc
            raise OutcomeUnknown(None, None, f"{method} {path}: {what}") from exc
        if "X-MBX-ORDER-COUNT-10S" in resp.headers:
            count = resp.headers["X-MBX-ORDER-COUNT-10S"]
            self.order_count_10s = int(count) if count.isdigit() else 0
        used = resp.headers.get(WEIGHT_HEADER, "")
        if weight and used.isdigit() and self._weight is not None:
            await self._weight.observe(int(used), self.now_ms())  # what others on the IP spent
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError as exc:
                raise OutcomeUnknown(200, None, f"{method} {path}: unreadable answer") from exc
        try:
            self._fail(resp, weight)
        finally:
            stops, self._pending_stops = self._pending_stops, []
            if stops and self._weight is not None:
                log.warning("REST %s on %s: every process stops until %d", resp.status_code, path,
                            stops[0][1])  # fmt: skip
                for stop in stops:
                    await self._weight.stop(*stop)

    def _fail(self, resp: httpx.Response, weight: int) -> Any:
        status = resp.status_code
        code, text = _binance_error(resp)
        retry_after = _retry_after_ms(resp)
        now = self.now_ms()
        if status == 429 and code == TOO_MANY_ORDERS:
            # The account's order limit (reference §2.5: per account), not the IP's weight:
            # certainly refused; this account's orders wait, nobody else does.
            wait = retry_after if retry_after is not None else 10_000
            self._orders_until_ms = max(self._orders_until_ms, now + wait)
            raise RestError(status, code, text, retry_after_ms=wait)
        if status == 429:
            wait = retry_after if retry_after is not None else 60_000
            if self._weight is not None:
                self._pending_stops = [(_BACKOFF, now + wait, now)]
                if weight == 0:  # the exchange refuses zero-weight calls too: orders wait
                    self._pending_stops.append((_BACKOFF_ALL, now + wait, now))
            raise RateLimited(wait, text)
        if status == 418:
            until = _ban_until_ms(text, now) or now + (retry_after or 120_000)
            if self._weight is not None:
                self._pending_stops = [(_BAN, until, now)]
            raise Banned(until, until - now, text)
        if status == 408 or status >= 500 or code in UNKNOWN_CODES:
            raise OutcomeUnknown(status, code, text, retry_after_ms=retry_after)
        raise RestError(status, code, text)


def decimal_str(value: Decimal) -> str:
    """Return ``value`` as Binance wants it: plain digits, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text
