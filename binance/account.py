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
* 429 / 418: :class:`~core.errors.RateLimited` / :class:`~core.errors.Banned`.

No method logs a request's query (it carries the signature) or the API key.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import httpx
import redis.asyncio

from binance.rest import (
    _BACKOFF,
    _BAN,
    _RAISE_TO,
    _RESERVE,
    WEIGHT_TTL_MS,
    _ban_until_ms,
    _binance_error,
    _retry_after_ms,
)
from binance.signing import Signer
from core.clock import now_ms
from core.errors import Banned, NotSent, OutcomeUnknown, RateLimited, RestError, Throttled
from core.keys import Keys
from core.timeframes import MINUTE_MS

log = logging.getLogger(__name__)

TIME_SYNC_S = 600.0
UNKNOWN_CODES = frozenset({-1006, -1007})  # "execution status unknown" (reference §2.5)
# IP request weight per call (reference §3.4). Placing an
# order weighs 0 on the IP (it counts on the account's order limits instead).
WEIGHTS = {
    ("POST", "/fapi/v1/order"): 0, ("GET", "/fapi/v1/openOrders"): 40,
    ("GET", "/fapi/v2/account"): 5, ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v1/userTrades"): 5,
}  # fmt: skip


class SharedWeight:
    """The IP's request-weight budget and ban state, shared with every process through Redis.

    The same keys and scripts as binance/rest.py's MarketRest: a reconciliation of many accounts
    cannot spend the weight the candle backfill needs, and a 429 or 418 seen here stops every
    process until it ends.
    """

    def __init__(self, r: redis.asyncio.Redis, keys: Keys, budget: int) -> None:
        self.budget = budget
        self._r = r
        self._weight_key, self._ban_key = keys.rest_weight(), keys.rest_ban()
        self._reserve = r.register_script(_RESERVE)
        self._raise_to = r.register_script(_RAISE_TO)

    async def admit(self, weight: int, now_ms: int) -> None:
        """Reserve ``weight``; raise Banned, RateLimited or Throttled (nothing sent) if not."""
        ban_raw, backoff_raw = await self._r.hmget(self._ban_key, [_BAN, _BACKOFF])
        ban_until, backoff_until = int(ban_raw or 0), int(backoff_raw or 0)
        if ban_until > now_ms:
            raise Banned(ban_until, ban_until - now_ms, f"IP banned until {ban_until}")
        if backoff_until > now_ms:
            raise RateLimited(backoff_until - now_ms, f"backing off until {backoff_until}")
        if not weight:
            return
        minute = now_ms // MINUTE_MS
        reserved, _ = await self._reserve(
            keys=[self._weight_key], args=[minute, weight, self.budget, WEIGHT_TTL_MS]
        )
        if not reserved:
            raise Throttled((minute + 1) * MINUTE_MS - now_ms, "IP weight budget spent")

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
        self._pending_stop: tuple[str, int, int] | None = None

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

    async def sync_time(self) -> int:
        """Measure the offset to the server clock (half the round trip); return it."""
        t0 = now_ms()
        resp = await self._send("GET", "/fapi/v1/time", "", api_key=False)
        t1 = now_ms()
        server = int(resp["serverTime"])
        self._offset_ms = server - (t0 + t1) // 2
        self._synced_at = time.monotonic()
        return self._offset_ms

    # --- orders -------------------------------------------------------------------------------

    async def place_order(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order with ``newOrderRespType=RESULT``; see the module docstring."""
        result: dict[str, Any] = await self.signed(
            "POST", "/fapi/v1/order", {**params, "newOrderRespType": "RESULT"}, changes=True
        )
        return result

    async def query_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed(
            "GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": client_order_id}
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

    async def open_orders(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.signed("GET", "/fapi/v1/openOrders", {})
        return result

    async def user_trades(
        self, symbol: str, *, from_id: int | None = None, start_ms: int | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {"symbol": symbol, "limit": "1000"}
        if from_id is not None:
            params["fromId"] = str(from_id)
        elif start_ms is not None:
            params["startTime"] = str(start_ms)
        result: list[dict[str, Any]] = await self.signed("GET", "/fapi/v1/userTrades", params)
        return result

    # --- account ------------------------------------------------------------------------------

    async def account(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.signed("GET", "/fapi/v2/account", {})
        return result

    async def position_risk(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.signed("GET", "/fapi/v2/positionRisk", {})
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
        resp = await self._send("POST", "/fapi/v1/listenKey", "", api_key=True)
        return str(resp["listenKey"])

    async def keepalive_listen_key(self) -> None:
        await self._send("PUT", "/fapi/v1/listenKey", "", api_key=True)

    async def close_listen_key(self) -> None:
        await self._send("DELETE", "/fapi/v1/listenKey", "", api_key=True)

    # --- transport ----------------------------------------------------------------------------

    async def signed(
        self, method: str, path: str, params: dict[str, str], *, changes: bool = False
    ) -> Any:
        """Send a SIGNED request; ``changes``: a lost answer is OutcomeUnknown, not retryable."""
        if time.monotonic() - self._synced_at > TIME_SYNC_S:
            await self.sync_time()
        for attempt in (1, 2):
            timestamp = self.now_ms()
            if self._weight is not None:
                await self._weight.admit(WEIGHTS.get((method, path), 1), timestamp)
            stamped: dict[str, str | int] = {
                **params,
                "recvWindow": self._recv_window_ms,
                "timestamp": timestamp,
            }
            query = self._signer.sign_query(stamped)
            try:
                return await self._send(method, path, query, api_key=True, changes=changes)
            except RestError as exc:
                # -1021: refused for its timestamp, so certainly not executed: re-measure, retry
                if exc.code == -1021 and attempt == 1:
                    log.warning("clock offset re-measured after -1021 on %s", path)
                    await self.sync_time()
                    continue
                # The timestamp signed (exchange clock as estimated then): with recvWindow, the
                # latest moment an order whose answer was lost can go live.
                exc.sent_at_ms = timestamp
                raise
        raise AssertionError("unreachable")

    async def _send(
        self, method: str, path: str, query: str, *, api_key: bool, changes: bool = False
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
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError as exc:
                raise OutcomeUnknown(200, None, f"{method} {path}: unreadable answer") from exc
        try:
            self._fail(resp)
        finally:
            stop, self._pending_stop = self._pending_stop, None
            if stop is not None and self._weight is not None:
                log.warning("REST %s on %s: every process stops until %d", resp.status_code, path,
                            stop[1])  # fmt: skip
                await self._weight.stop(*stop)

    def _fail(self, resp: httpx.Response) -> Any:
        status = resp.status_code
        code, text = _binance_error(resp)
        retry_after = _retry_after_ms(resp)
        now = self.now_ms()
        if status == 429:
            wait = retry_after if retry_after is not None else 60_000
            if self._weight is not None:
                self._pending_stop = (_BACKOFF, now + wait, now)
            raise RateLimited(wait, text)
        if status == 418:
            until = _ban_until_ms(text, now) or now + (retry_after or 120_000)
            if self._weight is not None:
                self._pending_stop = (_BAN, until, now)
            raise Banned(until, until - now, text)
        if status == 408 or status >= 500 or code in UNKNOWN_CODES:
            raise OutcomeUnknown(status, code, text, retry_after_ms=retry_after)
        raise RestError(status, code, text)


def decimal_str(value: Decimal) -> str:
    """Return ``value`` as Binance wants it: plain digits, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text
