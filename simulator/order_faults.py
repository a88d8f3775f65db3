"""The ``order_unknown`` fault: a new order is executed, its HTTP answer is lost.

The order goes through the trading engine as usual (created, matched, user-stream events sent,
counted by the order rate limit); only the answer changes, by ``mode``:

* ``"503"``: HTTP 503 ``{"code":-1000,"msg":"Unknown error, please check your request or try
  again later."}``, Binance's "execution status unknown" answer;
* ``"408"``: HTTP 408 ``{"code":-1007,"msg":"Timeout waiting for response from backend server.
  Send status unknown; execution status unknown."}``;
* ``"timeout"``: the real answer is held ``ms`` milliseconds (default 30000) before it is sent,
  so a client with a shorter timeout gives up; the hold ends early if the client disconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from simulator.faults import Faults

log = logging.getLogger(__name__)

ORDER_PATH = "/fapi/v1/order"
DEFAULT_HOLD_MS = 30_000
_ANSWERS = {
    "503": (503, -1000, "Unknown error, please check your request or try again later."),
    "408": (
        408,
        -1007,
        "Timeout waiting for response from backend server. "
        "Send status unknown; execution status unknown.",
    ),
}
_POLL_S = 0.05
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_new_order(request: web.Request) -> bool:
    """Return whether ``request`` places an order (what ``order_unknown`` applies to)."""
    return request.method == "POST" and request.path == ORDER_PATH


async def _symbol(request: web.Request) -> str | None:
    """Return the ``symbol`` sent in the query string or the form body (query wins)."""
    symbol = request.query.get("symbol")
    if symbol is not None:
        return symbol
    body = await request.read()  # aiohttp keeps the bytes: the handler reads them again
    for name, value in parse_qsl(body.decode("utf-8", "replace")):
        if name == "symbol":
            return value
    return None


async def _hold(request: web.Request, ms: int) -> None:
    """Wait ``ms``, or until the client has gone (nobody will read the answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ms / 1000
    while (left := deadline - loop.time()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(_POLL_S, left))


async def place_order(faults: Faults, handler: Handler, request: web.Request) -> web.StreamResponse:
    """Run the order handler, then answer as the matching ``order_unknown`` fault says."""
    if not faults.active("order_unknown"):
        return await handler(request)
    fault = faults.take_order_unknown(await _symbol(request))
    response = await handler(request)
    if fault is None:
        return response
    mode = str(fault.params.get("mode", "503"))
    log.warning("order answer lost (%s)", mode, extra={"fault": fault.id, "mode": mode})
    if mode == "timeout":
        await _hold(request, int(fault.params.get("ms", DEFAULT_HOLD_MS)))
        return response
    status, code, msg = _ANSWERS[mode]
    return web.Response(
        body=orjson.dumps({"code": code, "msg": msg}),
        status=status,
        content_type="application/json",
    )
