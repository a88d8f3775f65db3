"""Wiring: configuration, the market loop, both servers, the trading engine and faults.

:class:`Simulator` runs inside an asyncio loop: ``await sim.start()`` binds the REST port
(aiohttp) and the websocket port (``websockets``) and starts the market loop (or the replay);
``await sim.stop()`` undoes it. Tests start it in-process on free ports (port 0); ``python -m
simulator`` runs it as a process with the options of ``simulator.cli.build_parser``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from websockets.asyncio.server import Server, serve

from simulator.faults import Faults, validate
from simulator.instruments import (
    MARK_DP,
    exchange_info_symbols,
    load_exchange_info,
    load_instruments,
)
from simulator.model import Clock, MarketModel, SystemClock
from simulator.payloads import Publisher
from simulator.replay import Replayer, read_frames
from simulator.rest import RestApi, stop_site
from simulator.trading import TradingEngine, request_weight
from simulator.ws_server import Hub, WsLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulator can be told at start (see ``python -m simulator --help``)."""

    host: str = "127.0.0.1"
    rest_port: int = 8765
    ws_port: int = 8766
    seed: int = 0
    rate: float = 200.0  # aggTrades per second over all symbols
    symbol_count: int | None = None  # None: the 122 recorded symbols
    symbols: tuple[str, ...] | None = None
    tick_ms: int = 10
    limits: WsLimits = field(default_factory=WsLimits)
    weight_limit: int = 2400
    ban_after: int = 2  # 429s answered before a client that keeps sending is banned
    ban_base_s: float = 120.0
    weight_window_s: float = 60.0  # Binance's is a minute; tests shorten it
    kline_lag_ms: tuple[int, int] = (200, 2000)
    trade_retention: int = 5000
    bar_retention: int = 1000
    steady: bool = False  # constant rate: no quiet/busy regimes, no hot symbols
    history_minutes: int = 0  # market traded before start (REST klines have a past)
    history_rate: float = 20.0  # aggTrades/s over all symbols during that history
    replay: Path | None = None
    replay_speed: float = 1.0
    replay_paused: bool = False  # wait for POST /sim/replay
    faults: tuple[Mapping[str, Any], ...] = ()


class ModelMarketView:
    """The trading engine's view of the market (``simulator.trading.market_view.MarketView``)."""

    def __init__(self, model: MarketModel) -> None:
        self._model = model
        self._symbols = {inst.symbol: inst.info for inst in model.instruments}

    def exchange_symbols(self) -> Mapping[str, Mapping[str, Any]]:
        return self._symbols

    def best_bid_ask(self, symbol: str) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
        m = self._model
        i = m.index.get(symbol)
        if i is None:
            return None
        inst = m.instruments[i]
        return (
            inst.price_decimal(m.bid[i]),
            inst.qty_decimal(m.bid_qty[i]),
            inst.price_decimal(m.ask[i]),
            inst.qty_decimal(m.ask_qty[i]),
        )

    def mark_price(self, symbol: str) -> Decimal | None:
        i = self._model.index.get(symbol)
        if i is None:
            return None
        return Decimal(self._model.mark_e8(i)).scaleb(-MARK_DP)

    def now_ms(self) -> int:
        return self._model.clock.now_ms()


class Simulator:
    """One simulated exchange: model or replay, REST and websocket servers, faults."""

    def __init__(self, config: SimConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        instruments = load_instruments(
            count=config.symbol_count, symbols=config.symbols, seed=config.seed
        )
        self.model = MarketModel(
            instruments,
            self.clock,
            seed=config.seed,
            rate=config.rate if config.replay is None else 0.0,
            max_catchup_ms=2000,
            trade_retention=config.trade_retention,
            bar_retention=config.bar_retention,
            steady=config.steady,
        )
        if config.history_minutes and config.replay is None:
            made = self.model.warm(config.history_minutes * 60_000, config.history_rate)
            log.info("simulator: %d minutes of history, %d trades", config.history_minutes, made)
        self.faults = Faults(self.clock)
        self.view = ModelMarketView(self.model)
        self.engine: Any = TradingEngine(self.view, lookup_lag_ms=self.faults.lookup_lag_ms)
        self.hub = Hub(
            config.limits,
            self.faults,
            open_user_stream=self.engine.open_user_stream if self.engine is not None else None,
        )
        self.publisher = Publisher(
            self.model, self.hub, seed=config.seed, kline_lag_ms=config.kline_lag_ms
        )
        self.rest = RestApi(self)
        if self.engine is not None:
            self.engine.add_routes(self.rest.app)
            self.rest.route_weights.update(self.engine.ROUTE_WEIGHTS)
            self.rest.request_weight = request_weight
        self._frames = read_frames(config.replay) if config.replay is not None else None
        self.replayer: Replayer | None = None
        self._exchange_info_head = self._build_exchange_info_head()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ws_server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.rest_port = config.rest_port
        self.ws_port = config.ws_port
        self.loop_errors = 0
        self.down = False

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.rest_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ws_port}"

    async def start(self) -> None:
        """Bind both ports, apply the initial faults and start the market loop or the replay."""
        self._runner = web.AppRunner(self.rest.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen()
        for spec in self.config.faults:
            self.apply_fault(spec)
        if self._frames is None:
            self._spawn(self._market_loop())
        elif not self.config.replay_paused:
            self.start_replay(None)
        self._spawn(self._housekeeping())
        log.info(
            "simulator listening: REST %s websocket %s (%d symbols, rate %s/s)",
            self.rest_url,
            self.ws_url,
            len(self.model.instruments),
            self.model.rate,
            extra={"mode": "replay" if self._frames is not None else "model"},
        )

    async def _listen(self) -> None:
        assert self._runner is not None  # noqa: S101  (start() set it up)
        self._site = web.TCPSite(self._runner, self.config.host, self.rest_port, reuse_address=True)
        await self._site.start()
        if self.rest_port == 0:
            server = self._site._server  # aiohttp exposes the bound port only here
            self.rest_port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ws_server = await serve(
            self.hub.handler,
            self.config.host,
            self.ws_port,
            process_request=self.hub.process_request,
            compression=None,  # frames are shared bytes; Binance negotiates no compression
            ping_interval=None,  # the hub pings on Binance's schedule
            ping_timeout=None,
            close_timeout=2,
            max_size=1 << 20,
        )
        if self.ws_port == 0:
            self.ws_port = next(iter(self._ws_server.sockets)).getsockname()[1]

    async def _unlisten(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
            self.hub.abort_all()
            await self._ws_server.wait_closed()
            self._ws_server = None
        if self._site is not None and self._runner is not None:
            await stop_site(self._site, self._runner)
            self._site = None

    async def stop(self) -> None:
        """Close every connection and both servers."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._unlisten()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("simulator stopped")

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- loops --------------------------------------------------------------------------------

    async def _market_loop(self) -> None:
        tick_s = self.config.tick_ms / 1000
        model, publisher, hub, engine = self.model, self.publisher, self.hub, self.engine
        while True:
            try:
                now = self.clock.now_ms()
                result = model.step(now)
                publisher.on_step(result, now)
                publisher.on_tick(now)
                hub.flush()
                if engine is not None:
                    for i in result.changed:
                        engine.on_book(model.instruments[i].symbol)
            except Exception:  # the loop must survive; counted, logged with the traceback
                self.loop_errors += 1
                log.exception("market loop error", extra={"errors": self.loop_errors})
            await asyncio.sleep(tick_s)

    async def _housekeeping(self) -> None:
        """Expire faults and push out frames held back by delay/reorder faults."""
        while True:
            try:
                self.faults.expire()
                if self._frames is not None:
                    self.hub.flush()
            except Exception:
                self.loop_errors += 1
                log.exception("housekeeping error")
            await asyncio.sleep(0.05)

    # --- faults and admin actions -------------------------------------------------------------

    def apply_fault(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and apply a fault; return what /sim/faults answers. Raise ValueError."""
        kind, params = validate(spec)
        if kind == "drop":
            return {"type": "drop", "dropped": self.hub.drop(params)}
        if kind == "listenkey_expire":
            if self.engine is None:
                raise ValueError("listenkey_expire needs the trading engine")
            expired = self.engine.expire_listen_keys(params.get("apiKey"))
            log.warning("fault: %d listen key(s) expired", expired, extra={"fault": kind})
            return {"type": kind, "expired": expired}
        fault = self.faults.add(spec)
        log.warning("fault on: %s", fault.as_dict(), extra={"fault": kind})
        if kind == "down":
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: self._spawn(self._go_down(float(params["seconds"]))))
        return fault.as_dict()

    async def _go_down(self, seconds: float) -> None:
        if self.down:
            return
        self.down = True
        log.warning("going down for %.1f s", seconds)
        try:
            await self._unlisten()
            await asyncio.sleep(seconds)
            await self._listen()
        finally:
            self.down = False
        log.warning("back up")

    def start_replay(self, speed: Any) -> bool:
        """(Re)start the replay from its first frame; raise ValueError outside replay mode."""
        if self._frames is None:
            raise ValueError("the simulator was not started with --replay")
        if speed is not None and not isinstance(speed, int | float):
            raise ValueError("speed must be a number")
        self.replayer = Replayer(
            self._frames,
            self.model,
            self.hub,
            speed=self.config.replay_speed if speed is None else float(speed),
            flush=self.hub.flush,
            on_book=self.engine.on_book if self.engine is not None else None,
        )
        self._spawn(self.replayer.run())
        return True

    def exchange_info_body(self) -> bytes:
        """Return the /fapi/v1/exchangeInfo response (pre-serialized; only serverTime varies)."""
        return (
            b'{"timezone":"UTC","serverTime":'
            + str(self.clock.now_ms()).encode()
            + self._exchange_info_head
        )

    def _build_exchange_info_head(self) -> bytes:
        recorded = load_exchange_info()
        rate_limits = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": self.config.weight_limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ]  # fmt: skip
        rest = {
            "futuresType": "U_MARGINED",
            "rateLimits": rate_limits,
            "exchangeFilters": [],
            "assets": recorded["assets"],
            "symbols": exchange_info_symbols(self.model.instruments),
        }
        return b"," + orjson.dumps(rest)[1:]

    def state(self) -> dict[str, Any]:
        ledgers = [led.sizes() for led in self.model.ledgers]
        return {
            "mode": "replay" if self._frames is not None else "model",
            "serverTime": self.clock.now_ms(),
            "rate": self.model.rate,
            "symbols": len(self.model.instruments),
            "down": self.down,
            "loopErrors": self.loop_errors,
            "model": {
                "skippedMs": self.model.skipped_ms,
                "aggTrades": sum(led.trade_count for led in self.model.ledgers),
            },
            "ledger": {
                "aggTradesHeld": sum(x["aggTrades"] for x in ledgers),
                "aggTradesBoundPerSymbol": self.config.trade_retention,
                "closedBarsHeld": sum(x["closedBars"] for x in ledgers),
                "barsBoundPerInterval": self.config.bar_retention,
            },
            "ws": self.hub.stats(),
            "faults": self.faults.as_list(),
            "replay": None
            if self.replayer is None
            else {
                "frames": len(self.replayer.frames),
                "sent": self.replayer.sent,
                "running": self.replayer.running,
                "aggTrades": self.replayer.recorded_trades,
            },
            "trading": self.engine is not None,
        }
