"""aiohttp handlers of the trading REST API: authentication, then the engine, then JSON.

ApiError becomes Binance's ``{"code": ..., "msg": ...}`` here and only here. Security types:
orders and account endpoints are SIGNED (API key + HMAC or Ed25519 signature over the raw query
string and body), TRADE ones also need a key that may trade (else 401 -2015), listenKey
endpoints need the API key only; the ``/sim/accounts`` admin routes (``admin.py``) are open.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator.trading import payloads
from simulator.trading.accounts import Account
from simulator.trading.ed25519 import verify_ed25519
from simulator.trading.errors import ApiError
from simulator.trading.order_params import symbol_rules
from simulator.trading.signing import check_timestamp, parse_params, verify_signature

if TYPE_CHECKING:
    from simulator.trading.engine import TradingEngine

log = logging.getLogger(__name__)

API_KEY_FORMAT = re.compile(r"^[A-Za-z0-9]{64}$")
REJECTED_KEY = "Invalid API-key, IP, or permissions for action."
Handler = Callable[[web.Request], Awaitable[web.Response]]


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Return a JSON response serialized by orjson."""
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _binance_errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except ApiError as e:
            return json_response(e.body(), status=e.status, headers=dict(e.headers))
        except Exception:  # the HTTP boundary: answer like Binance, never a bare 500 page
            log.exception("trading request failed: %s %s", request.method, request.path)
            return json_response(
                {"code": -1000, "msg": "An unknown error occured while processing the request."},
                status=500,
            )

    return wrapped


class TradingApi:
    """The route handlers, bound to one engine."""

    def __init__(self, engine: TradingEngine) -> None:
        self.engine = engine

    async def _auth(
        self, request: web.Request, *, signed: bool, trade: bool = False
    ) -> tuple[Account, dict[str, str]]:
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if not API_KEY_FORMAT.fullmatch(api_key):
            raise ApiError(-2014, "API-key format invalid.", status=401)
        account = self.engine.accounts.get(api_key)
        if account is None:
            raise ApiError(-2015, REJECTED_KEY, status=401)
        # raw bytes as sent: never re-encode what the client signed
        query = request.raw_path.partition("?")[2].encode("utf-8", "surrogateescape")
        body = await request.read()
        params = parse_params(query, body)
        if signed:
            if account.public_key is not None:
                verify_ed25519(account.public_key, query, body)
            elif account.secret_key is not None:
                verify_signature(account.secret_key, query, body)
            else:  # no key material: nothing can verify
                raise ApiError(-1022, "Signature for this request is not valid.")
            check_timestamp(params, self.engine.now_ms())
        if trade and not account.can_trade:  # futures trading not enabled for this key
            raise ApiError(-2015, REJECTED_KEY, status=401)
        return account, params

    def _marks(self, symbol: str) -> Decimal | None:
        return self.engine.market.mark_price(symbol)

    # -- orders --------------------------------------------------------------------------------

    async def new_order(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True, trade=True)
        headers = self.engine.order_counter(account).hit(self.engine.now_ms())
        try:
            body = self.engine.place_order(account, params)
        except ApiError as e:
            e.headers = {**headers, **e.headers}
            raise
        return json_response(body, headers=headers)

    async def cancel_order(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True, trade=True)
        return json_response(self.engine.cancel_order(account, params))

    async def query_order(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True)
        return json_response(self.engine.query_order(account, params))

    async def open_orders(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True)
        return json_response(self.engine.open_orders(account, params))

    async def cancel_all(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True, trade=True)
        return json_response(self.engine.cancel_all(account, params))

    async def all_orders(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True)
        return json_response(self.engine.all_orders(account, params))

    async def user_trades(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True)
        return json_response(self.engine.user_trades(account, params))

    # -- account -------------------------------------------------------------------------------

    def _all_rules(self, account: Account) -> dict[str, Any]:
        return {s: self.engine.rules(s) for s in account.positions}

    async def account_v2(self, request: web.Request) -> web.Response:
        account, _ = await self._auth(request, signed=True)
        return json_response(
            payloads.account_info(account, self._marks, self._all_rules(account), v3=False)
        )

    async def account_v3(self, request: web.Request) -> web.Response:
        account, _ = await self._auth(request, signed=True)
        return json_response(
            payloads.account_info(account, self._marks, self._all_rules(account), v3=True)
        )

    async def balance(self, request: web.Request) -> web.Response:
        account, _ = await self._auth(request, signed=True)
        return json_response(payloads.balances(account, self._marks))

    async def _position_risk(self, request: web.Request, *, v3: bool) -> web.Response:
        account, params = await self._auth(request, signed=True)
        if params.get("symbol"):
            symbols = [symbol_rules(params, self.engine.rules).symbol]
        elif v3:  # v3 lists only symbols with a position or open orders
            symbols = sorted(
                {s for s, p in account.positions.items() if p.amount != 0}
                | {o.symbol for o in account.open_orders()}
            )
        else:
            symbols = sorted(self.engine.market.exchange_symbols())
        rows = []
        for symbol in symbols:
            rules = self.engine.rules(symbol)
            if rules is not None:
                rows.append(
                    payloads.position_risk(account, symbol, self._marks(symbol), rules, v3=v3)
                )
        return json_response(rows)

    async def position_risk_v2(self, request: web.Request) -> web.Response:
        return await self._position_risk(request, v3=False)

    async def position_risk_v3(self, request: web.Request) -> web.Response:
        return await self._position_risk(request, v3=True)

    async def leverage(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True, trade=True)
        return json_response(self.engine.change_leverage(account, params))

    async def margin_type(self, request: web.Request) -> web.Response:
        account, params = await self._auth(request, signed=True, trade=True)
        return json_response(self.engine.change_margin_type(account, params))

    async def position_mode(self, request: web.Request) -> web.Response:
        await self._auth(request, signed=True)
        return json_response({"dualSidePosition": False})

    # -- user data stream ----------------------------------------------------------------------

    async def listen_key_start(self, request: web.Request) -> web.Response:
        account, _ = await self._auth(request, signed=False)
        return json_response({"listenKey": self.engine.listen_keys.start(account.api_key)})

    async def listen_key_keepalive(self, request: web.Request) -> web.Response:
        account, _ = await self._auth(request, signed=False)
        key = self.engine.listen_keys.keepalive(account.api_key)
        if key is None:
            raise ApiError(
                -1125,
                "This listenKey does not exist. Please use "
                "`POST /fapi/v1/listenKey` to recreate `listenKey`",
            )
        return json_response({"listenKey": key})

    async def listen_key_close(self, request: web.Request) -> web.Response:
        account, _ = await self._auth(request, signed=False)
        self.engine.listen_keys.close(account.api_key)
        return json_response({})


def add_routes(app: web.Application, engine: TradingEngine) -> None:
    """Register every trading route of ``engine`` on ``app``, and the admin routes."""
    from simulator.trading.admin import AdminApi

    api, admin = TradingApi(engine), AdminApi(engine)
    table: list[tuple[str, str, Handler]] = [
        ("POST", "/fapi/v1/order", api.new_order),
        ("DELETE", "/fapi/v1/order", api.cancel_order),
        ("GET", "/fapi/v1/order", api.query_order),
        ("GET", "/fapi/v1/openOrders", api.open_orders),
        ("DELETE", "/fapi/v1/allOpenOrders", api.cancel_all),
        ("GET", "/fapi/v1/allOrders", api.all_orders),
        ("GET", "/fapi/v1/userTrades", api.user_trades),
        ("GET", "/fapi/v2/account", api.account_v2),
        ("GET", "/fapi/v3/account", api.account_v3),
        ("GET", "/fapi/v2/balance", api.balance),
        ("GET", "/fapi/v3/balance", api.balance),
        ("GET", "/fapi/v2/positionRisk", api.position_risk_v2),
        ("GET", "/fapi/v3/positionRisk", api.position_risk_v3),
        ("POST", "/fapi/v1/leverage", api.leverage),
        ("POST", "/fapi/v1/marginType", api.margin_type),
        ("GET", "/fapi/v1/positionSide/dual", api.position_mode),
        ("POST", "/fapi/v1/listenKey", api.listen_key_start),
        ("PUT", "/fapi/v1/listenKey", api.listen_key_keepalive),
        ("DELETE", "/fapi/v1/listenKey", api.listen_key_close),
        ("POST", "/sim/accounts", admin.create_account),
        ("GET", "/sim/accounts/{api_key}/trades", admin.account_trades),
    ]
    for method, path, handler in table:
        app.router.add_route(method, path, _binance_errors(handler))
