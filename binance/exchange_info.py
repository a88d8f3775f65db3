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
from core.errors import ConfigError

log = logging.getLogger(__name__)

EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIMEOUT_S = 10.0
RETRY_FIRST_S = 1.0  # then doubled after each failure, up to RETRY_CAP_S
RETRY_CAP_S = 30.0


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
    settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Return (the universe, the whole exchangeInfo body): for the trading filters."""
    loaded = _load(settings, stop=None, transport=transport)
    if loaded is None:  # only a stop event ends the retries, and none was given
        raise RuntimeError("exchangeInfo loading stopped")
    return loaded


def _load(
    settings: Settings,
    *,
    stop: threading.Event | None,
    transport: httpx.BaseTransport | None,
) -> tuple[list[str], dict[str, Any]] | None:
    """Fetch exchangeInfo and resolve the universe, retrying until it answers.

    Until exchangeInfo answers (a connection error, an error status, a body that is not JSON) log
    a warning and try again, after 1 s, then twice as long each time up to 30 s. Return None if
    ``stop`` is set first (without it, only the process ending stops the retries).

    Raise ConfigError naming ``TP_SYMBOLS`` when a configured symbol is not a trading perpetual:
    no retry will fix that.
    """
    stopped = stop if stop is not None else threading.Event()
    delay = RETRY_FIRST_S
    with httpx.Client(
        base_url=settings.market.rest_url, timeout=TIMEOUT_S, transport=transport
    ) as http:
        while not stopped.is_set():
            try:
                response = http.get(EXCHANGE_INFO_PATH)
                response.raise_for_status()
                info = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("exchangeInfo unavailable (%s); retrying in %.0f s", exc, delay)
                stopped.wait(delay)
                delay = min(delay * 2, RETRY_CAP_S)
                continue
            try:
                return resolve_universe(settings.symbols, info), info
            except ValueError as exc:
                raise ConfigError([("TP_SYMBOLS", str(exc))]) from None
    return None
