"""The symbol universe from the real exchangeInfo."""

from __future__ import annotations

import pytest

from core.universe import resolve_universe, trading_perpetuals
from tests.conftest import exchange_info


def test_all_means_every_trading_perpetual_of_the_real_exchange_info() -> None:
    info = exchange_info()
    symbols = trading_perpetuals(info)
    assert {"BTCUSDT", "SUSHIUSDT"} <= set(symbols)
    # Quarterly contracts (BTCUSDT_210924) are not perpetuals and are left out.
    assert not any("_" in s for s in symbols)
    perpetual = [s for s in info["symbols"]
                 if s["contractType"] == "PERPETUAL" and s["status"] == "TRADING"]  # fmt: skip
    assert len(symbols) == len(perpetual) > 100


def test_explicit_list_is_checked_against_the_exchange() -> None:
    info = exchange_info()
    assert resolve_universe(None, info) == trading_perpetuals(info)
    assert resolve_universe(("ETHUSDT", "BTCUSDT"), info) == ["ETHUSDT", "BTCUSDT"]
    with pytest.raises(ValueError, match="NOPEUSDT"):
        resolve_universe(("BTCUSDT", "NOPEUSDT"), info)
