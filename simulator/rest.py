"""REST server (aiohttp): market data endpoints, request weights, REST faults and the admin API.

Market data (reference §2): ``/fapi/v1/ping``, ``/time``, ``/exchangeInfo``, ``/klines``,
``/aggTrades``. Every response carries ``X-MBX-USED-WEIGHT-1M``: the weight this client IP used
in the current minute. Past the limit the answer is 429 with ``Retry-After`` (not to a request of
weight 0 on the IP, such as ``POST /fapi/v1/order``); a client that keeps sending after
``ban_after`` 429s is banned with 418 for ``ban_base_s`` (doubling per ban, capped at 3 days): a
ban refuses everything. Admin endpoints under ``/sim/`` carry no weight and ignore REST faults;
they are documented in docs/simulator.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator.faults import Fault
from simulator.ledger import INTERVALS, SymbolLedger
from simulator.model import Clock
from simulator.order_faults import is_new_order, place_order
from simulator.payloads import agg_trade_row, kline_row

if TYPE_CHECKING:
    from simulator.app import Simulator

log = logging.getLogger(__name__)

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
MARKET_WEIGHTS = {
    "/fapi/v1/ping": 1,
    "/fapi/v1/time": 1,
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/aggTrades": 20,
}
_MAX_BAN_MS = 3 * 24 * 3_600_000  # "Bans scale from 2 minutes to 3 days"
_UNKNOWN_503 = "Unknown error, please check your request or try again later."
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def too_many_msg(limit: int) -> str:
    return (
        f"Too many requests; current limit is {limit} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API."
    )


def banned_msg(until_ms: int) -> str:
    return (
        f"Way too many requests; IP banned until {until_ms}. "
        "Please use the websocket for live updates to avoid bans."
    )


def klines_weight(limit_param: str | None) -> int:
    """Return the weight of /fapi/v1/klines for its ``limit`` (reference §2.1)."""
    try:
        limit = int(limit_param) if limit_param else 500
    except ValueError:
        limit = 500
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass(slots=True)
class _IpState:
    window: int = -1
    used: int = 0
    rejected: int = 0  # 429s answered in this window
    bans: int = 0
    banned_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int  # 200, 429 or 418
    used: int
    retry_after_s: int = 0
    banned_until_ms: int = 0


class WeightLimiter:
    """Request weight per client IP per minute, with 429 and growing 418 bans.

    Refused requests count too (``used`` goes on rising, as the header shows). A request that
    weighs 0 on the IP is never refused for the weight, only while the IP is banned.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        limit: int = 2400,
        ban_after: int = 2,
        ban_base_s: float = 120.0,
        window_s: float = 60.0,
    ) -> None:
        self.clock = clock
        self.window_ms = int(window_s * 1000)
        self.limit = limit
        self.ban_after = ban_after
        self.ban_base_ms = int(ban_base_s * 1000)
        self._ips: dict[str, _IpState] = {}

    def charge(self, ip: str, weight: int) -> Verdict:
        """Count ``weight`` for ``ip`` and return whether the request may proceed."""
        now = self.clock.now_ms()
        st = self._ips.setdefault(ip, _IpState())
        window = now // self.window_ms
        if st.window != window:
            st.window, st.used, st.rejected = window, 0, 0
            if len(self._ips) > 10_000:  # bounded: forget idle clients
                self._ips = {k: v for k, v in self._ips.items() if v.window >= window - 1}
        if st.banned_until_ms > now:
            return Verdict(418, st.used, math.ceil((st.banned_until_ms - now) / 1000),
                           st.banned_until_ms)  # fmt: skip
        st.used += weight
        if st.used <= self.limit or weight == 0:
            # A request of weight 0 on the IP (POST /fapi/v1/order: "0 on IP rate limit",
            # reference §2.5) is not refused by the IP's weight limit; only a ban stops it.
            return Verdict(200, st.used)
        st.rejected += 1
        if st.rejected <= self.ban_after:
            return Verdict(429, st.used, math.ceil(((window + 1) * self.window_ms - now) / 1000))
        st.bans += 1
        duration = min(self.ban_base_ms * 2 ** (st.bans - 1), _MAX_BAN_MS)
        st.banned_until_ms = now + duration
        log.warning("banning %s for %d ms", ip, duration, extra={"ip": ip, "bans": st.bans})
        return Verdict(418, st.used, math.ceil(duration / 1000), st.banned_until_ms)

    def used(self, ip: str) -> int:
        st = self._ips.get(ip)
        return st.used if st and st.window == self.clock.now_ms() // self.window_ms else 0

    def reset(self) -> None:
        self._ips.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "ips": {
                ip: {"used": s.used, "bans": s.bans, "bannedUntil": s.banned_until_ms}
                for ip, s in self._ips.items()
            },
        }


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def binance_error(status: int, code: int, msg: str) -> web.Response:
    """Return Binance's error shape ``{"code": -1121, "msg": "Invalid symbol."}``."""
    return json_response({"code": code, "msg": msg}, status)


class _BadParam(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _mandatory(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise _BadParam(
            binance_error(
                400,
                -1102,
                f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
            )
        )
    return value


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 20:
        raise _BadParam(
            binance_error(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        )
    return int(value)


class RestApi:
    """The aiohttp application of one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.limiter = WeightLimiter(
            sim.clock,
            limit=sim.config.weight_limit,
            ban_after=sim.config.ban_after,
            ban_base_s=sim.config.ban_base_s,
            window_s=sim.config.weight_window_s,
        )
        self.route_weights: dict[tuple[str, str], int] = {}
        self.request_weight: Callable[[str, str, Mapping[str, str]], int] | None = None
        self.app = web.Application(middlewares=[self._middleware])
        r = self.app.router
        r.add_get("/fapi/v1/ping", self.ping)
        r.add_get("/fapi/v1/time", self.time)
        r.add_get("/fapi/v1/exchangeInfo", self.exchange_info)
        r.add_get("/fapi/v1/klines", self.klines)
        r.add_get("/fapi/v1/aggTrades", self.agg_trades)
        r.add_get("/sim/state", self.state)
        r.add_post("/sim/reset", self.reset)
        r.add_post("/sim/rate", self.set_rate)
        r.add_get("/sim/trades", self.trades)
        r.add_get("/sim/faults", self.list_faults)
        r.add_post("/sim/faults", self.add_fault)
        r.add_delete("/sim/faults", self.clear_faults)
        r.add_delete("/sim/faults/{fault_id}", self.clear_faults)
        r.add_post("/sim/replay", self.start_replay)

    # --- middleware ---------------------------------------------------------------------------

    def _weight(self, request: web.Request) -> int:
        path = request.path
        if path == "/fapi/v1/klines":
            return klines_weight(request.query.get("limit"))
        weight = MARKET_WEIGHTS.get(path)
        if weight is not None:
            return weight
        if self.request_weight is not None:  # the trading routes, incl. parameter-dependent ones
            return self.request_weight(request.method, path, request.query)
        return self.route_weights.get((request.method, path), 1)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/sim/"):
            return await handler(request)
        ip = request.remote or "?"
        fault = self.sim.faults.take_rest_fault(request.path)
        if fault is not None:
            return self._fault_response(fault, ip)
        verdict = self.limiter.charge(ip, self._weight(request))
        headers = {WEIGHT_HEADER: str(verdict.used)}
        if verdict.status == 429:
            headers["Retry-After"] = str(verdict.retry_after_s)
            resp = binance_error(429, -1003, too_many_msg(self.limiter.limit))
        elif verdict.status == 418:
            headers["Retry-After"] = str(verdict.retry_after_s)
            resp = binance_error(418, -1003, banned_msg(verdict.banned_until_ms))
        else:
            try:
                if is_new_order(request):  # the order_unknown fault may replace the answer
                    resp_any = await place_order(self.sim.faults, handler, request)
                else:
                    resp_any = await handler(request)
            except _BadParam as exc:
                resp_any = exc.response
            except web.HTTPException as exc:
                exc.headers.update(headers)
                raise
            resp_any.headers.update(headers)
            return resp_any
        resp.headers.update(headers)
        return resp

    def _fault_response(self, fault: Fault, ip: str) -> web.Response:
        status = int(fault.params["status"])
        headers = {WEIGHT_HEADER: str(self.limiter.used(ip))}
        now = self.sim.clock.now_ms()
        if status == 429:
            code, msg = -1003, too_many_msg(self.limiter.limit)
            headers["Retry-After"] = str(fault.params.get("retry_after", 60))
        elif status == 418:
            retry_s = int(fault.params.get("retry_after", 120))
            code, msg = -1003, banned_msg(now + retry_s * 1000)
            headers["Retry-After"] = str(retry_s)
        elif status == 503:
            code, msg = -1000, _UNKNOWN_503  # execution status UNKNOWN (reference §2.5)
        else:
            code, msg = -1000, "An unknown error occured while processing the request."
        code = int(fault.params.get("code", code))
        msg = str(fault.params.get("msg", msg))
        resp = binance_error(status, code, msg)
        resp.headers.update(headers)
        return resp

    # --- market data --------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self.sim.clock.now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        body = self.sim.exchange_info_body()
        return web.Response(body=body, content_type="application/json")

    def _ledger(self, query: Mapping[str, str]) -> tuple[int, SymbolLedger]:
        symbol = _mandatory(query, "symbol")
        i = self.sim.model.index.get(symbol)
        if i is None:
            raise _BadParam(binance_error(400, -1121, "Invalid symbol."))
        return i, self.sim.model.ledgers[i]

    async def klines(self, request: web.Request) -> web.Response:
        q = request.query
        _mandatory(q, "symbol")
        interval = _mandatory(q, "interval")
        i, ledger = self._ledger(q)
        if interval not in INTERVALS:
            return binance_error(400, -1120, "Invalid interval.")
        limit = _int_param(q, "limit")
        limit = 500 if limit is None else min(max(limit, 1), 1500)
        bars = ledger.klines(
            interval,
            start_ms=_int_param(q, "startTime"),
            end_ms=_int_param(q, "endTime"),
            limit=limit,
        )
        inst = self.sim.model.instruments[i]
        return json_response([kline_row(inst, interval, b) for b in bars])

    async def agg_trades(self, request: web.Request) -> web.Response:
        return self._agg_trades(request.query, max_limit=1000, extended=False)

    def _agg_trades(self, q: Mapping[str, str], *, max_limit: int, extended: bool) -> web.Response:
        i, ledger = self._ledger(q)
        limit = _int_param(q, "limit")
        limit = 500 if limit is None else min(max(limit, 1), max_limit)
        start, end = _int_param(q, "startTime"), _int_param(q, "endTime")
        if not extended and start is not None and end is not None and end - start >= 3_600_000:
            return binance_error(400, -1127, "More than 1 hours between startTime and endTime.")
        trades = ledger.agg_trades(
            from_id=_int_param(q, "fromId"), start_ms=start, end_ms=end, limit=limit
        )
        inst = self.sim.model.instruments[i]
        rows = []
        for t in trades:
            row = agg_trade_row(inst, t)
            if extended:
                row["nq"] = row["q"]
                row["s"] = inst.symbol
            rows.append(row)
        return json_response(rows)

    # --- admin --------------------------------------------------------------------------------

    async def trades(self, request: web.Request) -> web.Response:
        """GET /sim/trades?symbol=&fromId=&startTime=&endTime=&limit= (ground truth)."""
        try:
            return self._agg_trades(request.query, max_limit=100_000, extended=True)
        except _BadParam as exc:
            return exc.response

    async def state(self, request: web.Request) -> web.Response:
        return json_response(self.sim.state() | {"rest": self.limiter.stats()})

    async def reset(self, request: web.Request) -> web.Response:
        self.sim.faults.clear()
        self.limiter.reset()
        log.info("state reset (faults, weights, bans)")
        return json_response({"faults": [], "weights": "reset"})

    async def set_rate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self.sim.model.set_rate(float(body.get("rate", -1)))
        except (TypeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        log.info("event rate set to %s/s", self.sim.model.rate)
        return json_response({"rate": self.sim.model.rate})

    async def list_faults(self, request: web.Request) -> web.Response:
        return json_response(self.sim.faults.as_list())

    async def add_fault(self, request: web.Request) -> web.Response:
        spec = await _json_body(request)
        try:
            result = self.sim.apply_fault(spec)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(result)

    async def clear_faults(self, request: web.Request) -> web.Response:
        raw = request.match_info.get("fault_id")
        fault_id = int(raw) if raw and raw.isdigit() else None
        removed = self.sim.faults.clear(fault_id)
        return json_response({"removed": removed})

    async def start_replay(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            started = self.sim.start_replay(body.get("speed"))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"started": started})


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


async def stop_site(site: web.TCPSite, runner: web.AppRunner) -> None:
    """Stop listening and cut every open HTTP connection (the REST side of a ``down`` fault)."""
    await site.stop()
    server = runner.server
    if server is not None:
        for proto in list(server.connections):
            proto.force_close()
            if proto.transport is not None:
                proto.transport.abort()
    await asyncio.sleep(0)
