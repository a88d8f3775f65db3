"""The symbol universe: which symbols the pipeline follows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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
