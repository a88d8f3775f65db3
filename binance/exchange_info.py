"""The symbol universe: which symbols the pipeline follows, from ``GET /fapi/v1/exchangeInfo``.

:func:`trading_perpetuals` and :func:`resolve_universe` are pure; :func:`load_universe` fetches
exchangeInfo at start-up (the feeder and the consumer both call it) and retries until it answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, overload

import httpx

from core.config import Settings
from core.errors import ConfigError, Stopped
from core.logs import QuietWait

log = logging.getLogger(__name__)

EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIMEOUT_S = 10.0
# Then doubled after each failure, up to RETRY_CAP_S: short, because at start-up (the demo, a
# deploy) the exchange or simulator is often seconds away, and the page has no symbols until the
# consumer has them. One exchangeInfo every 5 s is 1 weight in Binance's 2,400 a minute.
RETRY_FIRST_S = 0.5
RETRY_CAP_S = 5.0


def trading_perpetuals(exchange_info: Mapping[str, Any]) -> list[str]:
    """Return the symbols of ``/fapi/v1/exchangeInfo`` that are TRADING PERPETUAL contracts, sorted.

    A trimmed real symbol entry::

        {"symbol": "BTCUSDT", "contractType": "PERPETUAL", "status": "TRADING", ...}
    """
    symbols: Sequence[Mapping[str, Any]] = exchange_info.get("symbols", ())
    return sorted(
        s["symbol"]
        for s in symbols
        if s.get("contractType") == "PERPETUAL" and s.get("status") == "TRADING"
    )


def resolve_universe(
    configured: Sequence[str] | None, exchange_info: Mapping[str, Any]
) -> list[str]:
    """Return the configured symbols, or every trading perpetual when none is configured.

    Raise ValueError naming configured symbols the exchange does not trade.
    """
    available = trading_perpetuals(exchange_info)
    if configured is None:
        return available
    unknown = sorted(set(configured) - set(available))
    if unknown:
        raise ValueError(f"not trading perpetuals on this exchange: {', '.join(unknown)}")
    return list(configured)


@overload
def load_universe(
    settings: Settings, *, stop: None = None, transport: httpx.BaseTransport | None = None
) -> list[str]: ...
@overload
def load_universe(
    settings: Settings, *, stop: threading.Event, transport: httpx.BaseTransport | None = None
) -> list[str] | None: ...
def load_universe(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[str] | None:
    """Return ``settings.symbols`` checked against exchangeInfo, or every trading perpetual.

    See :func:`load_exchange_info` for the retries and the errors.
    """
    loaded = _load(settings, stop=stop, transport=transport)
    return None if loaded is None else loaded[0]


def load_exchange_info(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    transport: httpx.BaseTransport | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Return (the universe, the whole exchangeInfo body): for the trading filters.

    Raise :class:`Stopped` if ``stop`` is set before exchangeInfo answers: a process stopping
    while the exchange is unreachable must not wait for it (asyncio.run joins the thread this
    runs in).
    """
    loaded = _load(settings, stop=stop, transport=transport)
    if loaded is None:
        raise Stopped("exchangeInfo loading stopped")
    return loaded


def _load(
    settings: Settings,
    *,
    stop: threading.Event | None,
    transport: httpx.BaseTransport | None,
) -> tuple[list[str], dict[str, Any]] | None:
    """Fetch exchangeInfo and resolve the universe, retrying until it answers.

    Until exchangeInfo answers (a connection error, an error status, a body that is not JSON) try
    again, after 0.5 s, then twice as long each time up to 5 s, saying so quietly
    (core.logs.QuietWait). Return None if ``stop`` is set first (without it, only the process
    ending stops the retries).

    Raise ConfigError naming ``TP_SYMBOLS`` when a configured symbol is not a trading perpetual:
    no retry will fix that.
    """
    stopped = stop if stop is not None else threading.Event()
    delay = RETRY_FIRST_S
    market = settings.market
    hint = (
        "is the simulator running (Procfile: simulator)?"
        if market.source == "sim"
        else f"check TP_MARKET={market.source}, TP_REST_URL and the route to that host"
        " (Binance answers HTTP 451 where it serves no clients)"
    )
    waiting = QuietWait(log, "the exchange", market.rest_url, hint)
    with httpx.Client(
        base_url=settings.market.rest_url, timeout=TIMEOUT_S, transport=transport
    ) as http:
        while not stopped.is_set():
            try:
                response = http.get(EXCHANGE_INFO_PATH)
                response.raise_for_status()
                info = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                waiting.failed(exc)
                stopped.wait(delay)
                delay = min(delay * 2, RETRY_CAP_S)
                continue
            waiting.answered()
            try:
                return resolve_universe(settings.symbols, info), info
            except ValueError as exc:
                raise ConfigError([("TP_SYMBOLS", str(exc))]) from None
    return None
