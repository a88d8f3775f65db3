"""The simulator's command line: ``python -m simulator --help`` lists every option.

``config_from_args(argv)`` turns the arguments into a ``SimConfig`` and a log level; the options
are documented in docs/simulator.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from simulator.app import SimConfig
from simulator.faults import parse_fault_arg, validate
from simulator.ws_server import WsLimits


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Binance USD-M futures simulator: REST + websocket streams, faults, replay.",
    )
    d = SimConfig()
    lim = d.limits
    a = p.add_argument
    a("--host", default=d.host, help="address to bind (default %(default)s)")
    a("--rest-port", type=int, default=d.rest_port, help="REST port, 0 = any (default %(default)s)")
    a(
        "--ws-port",
        type=int,
        default=d.ws_port,
        help="websocket port, 0 = any (default %(default)s)",
    )
    a("--seed", type=int, default=d.seed, help="market seed (default %(default)s)")
    a(
        "--rate",
        type=float,
        default=d.rate,
        help="aggTrades per second over all symbols (default %(default)s)",
    )
    a(
        "--history-minutes",
        type=int,
        default=d.history_minutes,
        help="minutes the market traded before start, for REST history (default %(default)s)",
    )
    a(
        "--history-rate",
        type=float,
        default=d.history_rate,
        help="aggTrades/s over all symbols during that history (default %(default)s)",
    )
    a(
        "--steady",
        action="store_true",
        help="constant event rate: no quiet/busy regimes or hot symbols (for benchmarks)",
    )
    a(
        "--symbols",
        default=None,
        help="a count (e.g. 300: the 122 recorded symbols plus synthetic ones) or a list "
        "BTCUSDT,ETHUSDT (default: the 122 recorded symbols)",
    )
    a(
        "--lifetime-s",
        type=float,
        default=lim.lifetime_s,
        help="websocket connection lifetime (default %(default)s)",
    )
    a(
        "--ping-interval-s",
        type=float,
        default=lim.ping_interval_s,
        help="server ping interval (default %(default)s)",
    )
    a(
        "--pong-timeout-s",
        type=float,
        default=lim.pong_timeout_s,
        help="close when no pong for this long (default %(default)s)",
    )
    a(
        "--max-streams",
        type=int,
        default=lim.max_streams,
        help="streams per connection (default %(default)s)",
    )
    a(
        "--msg-rate",
        type=int,
        default=lim.msg_rate,
        help="incoming messages per second per connection (default %(default)s)",
    )
    a(
        "--max-send-buffer",
        type=int,
        default=lim.max_buffer_bytes,
        help="bytes queued for one client before it is disconnected (default %(default)s)",
    )
    a(
        "--weight-limit",
        type=int,
        default=d.weight_limit,
        help="REST request weight per IP per minute (default %(default)s)",
    )
    a(
        "--weight-window",
        dest="weight_window_s",
        type=float,
        default=d.weight_window_s,
        help="seconds of the weight window (Binance: 60; shorter for tests) (default %(default)s)",
    )
    a(
        "--ban-after",
        type=int,
        default=d.ban_after,
        help="429s answered before a 418 ban (default %(default)s)",
    )
    a(
        "--ban-base-s",
        type=float,
        default=d.ban_base_s,
        help="first ban length, doubling per ban (default %(default)s)",
    )
    a(
        "--kline-lag-ms",
        default=f"{d.kline_lag_ms[0]}-{d.kline_lag_ms[1]}",
        help="range of the delay of kline x:true after the bar ends (default %(default)s)",
    )
    a(
        "--trade-retention",
        type=int,
        default=d.trade_retention,
        help="aggTrades kept per symbol (default %(default)s)",
    )
    a(
        "--bar-retention",
        type=int,
        default=d.bar_retention,
        help="closed klines kept per symbol and interval (default %(default)s)",
    )
    a("--tick-ms", type=int, default=d.tick_ms, help="market loop period (default %(default)s)")
    a("--replay", type=Path, default=None, help="play this recording instead of the model")
    a(
        "--replay-speed",
        type=float,
        default=d.replay_speed,
        help="replay speed factor, 0 = as fast as possible (default %(default)s)",
    )
    a("--replay-paused", action="store_true", help="wait for POST /sim/replay to start")
    a(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="initial fault, e.g. type=rest,status=503,count=3 (repeatable; see docs/simulator.md)",
    )
    a("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p  # fmt: skip


def config_from_args(argv: Sequence[str] | None = None) -> tuple[SimConfig, str]:
    """Return the SimConfig and log level for ``argv``; exit with a usage error if invalid."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    count: int | None = None
    symbols: tuple[str, ...] | None = None
    if ns.symbols:
        if ns.symbols.isdigit():
            count = int(ns.symbols)
        else:
            symbols = tuple(s.strip() for s in ns.symbols.split(",") if s.strip())
    try:
        lo, _, hi = ns.kline_lag_ms.partition("-")
        lag = (int(lo), int(hi or lo))
        if not 0 <= lag[0] <= lag[1]:
            raise ValueError
    except ValueError:
        parser.error("--kline-lag-ms must look like 200-2000")
    try:
        faults = tuple(parse_fault_arg(f) for f in ns.fault)
        for f in faults:
            validate(f)
    except ValueError as exc:
        parser.error(f"--fault: {exc}")
    limits = WsLimits(
        max_streams=ns.max_streams,
        msg_rate=ns.msg_rate,
        ping_interval_s=ns.ping_interval_s,
        pong_timeout_s=ns.pong_timeout_s,
        lifetime_s=ns.lifetime_s,
        max_buffer_bytes=ns.max_send_buffer,
    )
    config = replace(
        SimConfig(),
        host=ns.host,
        rest_port=ns.rest_port,
        ws_port=ns.ws_port,
        seed=ns.seed,
        rate=ns.rate,
        symbol_count=count,
        symbols=symbols,
        tick_ms=ns.tick_ms,
        limits=limits,
        weight_limit=ns.weight_limit,
        ban_after=ns.ban_after,
        ban_base_s=ns.ban_base_s,
        weight_window_s=ns.weight_window_s,
        kline_lag_ms=lag,
        trade_retention=ns.trade_retention,
        bar_retention=ns.bar_retention,
        steady=ns.steady,
        history_minutes=ns.history_minutes,
        history_rate=ns.history_rate,
        replay=ns.replay,
        replay_speed=ns.replay_speed,
        replay_paused=ns.replay_paused,
        faults=faults,
    )
    return config, ns.log_level
