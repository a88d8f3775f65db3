"""The symbol universe from the real exchangeInfo, and its loader's retries."""

from __future__ import annotations

import logging
import threading

import httpx
import orjson
import pytest

from binance.exchange_info import load_universe, resolve_universe, trading_perpetuals
from core.config import Settings
from core.errors import ConfigError
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


class RecordedWaits(threading.Event):
    """A stop event that is never set and returns at once, recording how long it was asked.

    The loader's clock moves by each wait, as if it had been waited.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.now = 1000.0
        if monkeypatch is not None:
            monkeypatch.setattr("core.logs.time.monotonic", lambda: self.now)

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.now += timeout or 0
        return False


def settings(symbols: str) -> Settings:
    return Settings.from_env({"TP_DEMO": "1", "TP_SYMBOLS": symbols})


def test_loader_waits_for_the_exchange_then_returns_the_configured_symbols(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter(["down", 503, "not json", *[503] * 8, 200])
    requests: list[str] = []

    def exchange(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        answer = next(answers)
        if answer == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if answer == "not json":
            return httpx.Response(200, content=b"<html>")
        return httpx.Response(answer, content=orjson.dumps(exchange_info()))

    stop = RecordedWaits(monkeypatch)
    with caplog.at_level(logging.INFO, logger="binance.exchange_info"):
        symbols = load_universe(
            settings("ETHUSDT,BTCUSDT"), stop=stop, transport=httpx.MockTransport(exchange)
        )
    assert symbols == ["ETHUSDT", "BTCUSDT"]
    assert requests == ["/fapi/v1/exchangeInfo"] * 12
    assert stop.waits == [0.5, 1, 2, 4, 5, 5, 5, 5, 5, 5, 5]
    # Quietly: one line when the wait starts, one warning once it lasted past 30 s (naming the
    # host and what to check), one line when the exchange answers; the rest at DEBUG.
    assert [(r.levelname, r.getMessage()[:60]) for r in caplog.records] == [
        ("INFO", "waiting for the exchange at http://127.0.0.1:8765 (connectio"),
        ("WARNING", "no answer from the exchange at http://127.0.0.1:8765 for 32 "),
        ("INFO", "the exchange at http://127.0.0.1:8765 answers"),
    ]
    assert (
        caplog.records[1].getMessage().endswith("is the simulator running (Procfile: simulator)?")
    )


def test_loader_stops_at_once_on_a_symbol_the_exchange_does_not_trade() -> None:
    calls = 0

    def exchange(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, content=orjson.dumps(exchange_info()))

    with pytest.raises(ConfigError) as raised:
        load_universe(settings("BTCUSDT,NOPEUSDT"), transport=httpx.MockTransport(exchange))
    [(var, what)] = raised.value.problems
    assert var == "TP_SYMBOLS"
    assert "NOPEUSDT" in what
    assert calls == 1  # no retry can fix a configuration


def test_loader_returns_none_once_stopped() -> None:
    stop = threading.Event()

    def exchange(request: httpx.Request) -> httpx.Response:
        stop.set()  # e.g. SIGTERM while the exchange is down
        return httpx.Response(503)

    transport = httpx.MockTransport(exchange)
    assert load_universe(settings("all"), stop=stop, transport=transport) is None
