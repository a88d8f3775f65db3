"""The simulator-only account routes: create a paper account, read its every fill.

``POST /sim/accounts`` stands for Binance's API-key management page (HMAC "system-generated"
keys, or a pasted Ed25519 public key); ``GET /sim/accounts/{apiKey}/trades`` is the exchange's
own record of an account's fills across symbols, for tests that check nothing was missed. Both
are open: the simulator is a local test tool.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.trading import payloads
from simulator.trading.ed25519 import load_public_key
from simulator.trading.errors import ApiError, invalid
from simulator.trading.routes import API_KEY_FORMAT, REJECTED_KEY, json_response

if TYPE_CHECKING:
    from simulator.trading.engine import TradingEngine


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw or b"{}", parse_float=Decimal)
    except ValueError:
        raise ApiError(-1130, "Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(-1130, "Request body must be a JSON object.")
    return body


class AdminApi:
    """The ``/sim/accounts`` handlers, bound to one engine."""

    def __init__(self, engine: TradingEngine) -> None:
        self.engine = engine

    async def create_account(self, request: web.Request) -> web.Response:
        """``POST /sim/accounts {"balance", "apiKey", "secretKey", "publicKey", "canTrade"}``."""
        body = await _json_object(request)
        try:
            balance = Decimal(str(body.get("balance", "10000")))
        except InvalidOperation:
            raise invalid("balance") from None
        if not balance.is_finite() or balance < 0:
            raise invalid("balance")
        api_key, secret_key = body.get("apiKey"), body.get("secretKey")
        for name, value in (("apiKey", api_key), ("secretKey", secret_key)):
            if value is not None and not (
                isinstance(value, str) and API_KEY_FORMAT.fullmatch(value)
            ):
                raise invalid(name)
        pem = body.get("publicKey")
        public_key = None
        if pem is not None:
            if not isinstance(pem, str):
                raise invalid("publicKey")
            try:
                public_key = load_public_key(pem)
            except ValueError:
                raise invalid("publicKey") from None
            if secret_key is not None:
                raise invalid("secretKey")  # an Ed25519 key has no secret
        can_trade = body.get("canTrade", True)
        if not isinstance(can_trade, bool):
            raise invalid("canTrade")
        try:
            account = self.engine.create_account(
                balance,
                api_key=api_key,
                secret_key=secret_key,
                public_key=public_key,
                can_trade=can_trade,
            )
        except ValueError:
            raise invalid("apiKey") from None
        answer: dict[str, Any] = {"apiKey": account.api_key}
        if account.secret_key is None:
            answer["keyType"] = "ED25519"
        else:
            answer["secretKey"] = account.secret_key
        answer["balance"] = payloads.money(account.wallet_balance)
        return json_response(answer)

    async def account_trades(self, request: web.Request) -> web.Response:
        """``GET /sim/accounts/{apiKey}/trades``: every kept fill, in execution order."""
        account = self.engine.accounts.get(request.match_info["api_key"])
        if account is None:
            raise ApiError(-2015, REJECTED_KEY, status=404)
        return json_response(self.engine.every_trade(account))
