"""The symbol universe: which symbols the pipeline follows, from ``GET /fapi/v1/exchangeInfo``.

:func:`trading_perpetuals` and :func:`resolve_universe` are pure; :func:`load_universe` fetches
exchangeInfo at start-up (the feeder and the consumer both call it) and retries until it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, overload

import httpx

from core.config import Settings
from core.errors import ConfigError

log = logging.getLogger(__name__)

EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIMEOUT_S = 10.0
# Then doubled after each failure, up to RETRY_CAP_S: short, because at start-up (the demo, a
# deploy) the exchange or simulator is often seconds away, and the page has no symbols until the
# consumer has them. One exchangeInfo every 5 s is 1 weight in Binance's 2,400 a minute.
RETRY_FIRST_S = 0.5
RETRY_CAP_S = 5.0
WARN_AFTER_S = 30.0  # waiting longer than this is a problem worth a warning...
WARN_EVERY_S = 300.0  # ...repeated this often while it lasts


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

    Until exchangeInfo answers (a connection error, an error status, a body that is not JSON) try
    again, after 0.5 s, then twice as long each time up to 5 s, saying so quietly (_Waiting).
    Return None if ``stop`` is set first (without it, only the process ending stops the retries).

    Raise ConfigError naming ``TP_SYMBOLS`` when a configured symbol is not a trading perpetual:
    no retry will fix that.
    """
    stopped = stop if stop is not None else threading.Event()
    delay = RETRY_FIRST_S
    waiting = _Waiting(settings)
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


class _Waiting:
    """Start-up wait for the exchange, told quietly: one line, then a warning only if it lasts.

    In the demo every process starts before the simulator listens, so a refused connection in the
    first seconds is expected. Past :data:`WARN_AFTER_S` it is not: the warning names the host
    and what to check.
    """

    def __init__(self, settings: Settings) -> None:
        self.market = settings.market
        self.since: float | None = None
        self.warned_at = 0.0

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.info("waiting for the exchange at %s (%s)", self.market.rest_url, exc)
            return
        if now - self.since < WARN_AFTER_S or now - self.warned_at < WARN_EVERY_S:
            log.debug("exchangeInfo still unavailable: %s", exc)
            return
        self.warned_at = now
        hint = (
            "is the simulator running (Procfile: simulator)?"
            if self.market.source == "sim"
            else f"check TP_MARKET={self.market.source}, TP_REST_URL and the route to that host"
            " (Binance answers HTTP 451 where it serves no clients)"
        )
        log.warning("no answer from the exchange at %s for %.0f s (%s): %s",
                    self.market.rest_url, now - self.since, exc, hint)  # fmt: skip

    def answered(self) -> None:
        if self.since is not None:
            log.info("the exchange at %s answers", self.market.rest_url)
