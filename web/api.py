"""Blueprint ``/api``: symbols and timeframes, paged candle history, latest signals, health."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, Response, jsonify, request

from web.app import web
from web.auth import ApiError, error_response, request_origin, require
from web.market import MAX_PAGE

bp = Blueprint("api", __name__, url_prefix="/api")
STALE_HEALTH_MS = 10_000  # a process that has not reported for this long is counted down


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return error_response(exc)


def _int_arg(name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_request", f"{name} must be within {lo}..{hi}")
    return value


def _series() -> tuple[str, str]:
    symbol, timeframe = request.args.get("symbol", ""), request.args.get("timeframe", "")
    problem = web().market.check(symbol, timeframe)
    if problem:
        what = symbol if problem == "unknown_symbol" else timeframe
        raise ApiError(404 if what else 400, problem, f"not served here: {what!r}")
    return symbol, timeframe


@bp.get("/symbols")
@require("web", anonymous=None)
def symbols() -> Any:
    m = web().market
    return jsonify(symbols=m.symbols(), timeframes=list(m.timeframes),
                   signals=list(m.signal_names))  # fmt: skip


@bp.get("/candles")
@require("web", anonymous=None)
def candles() -> Any:
    symbol, timeframe = _series()
    limit = _int_arg("limit", 500, 1, MAX_PAGE) or 500
    before = _int_arg("before", None, 0, 2**53)
    rows, next_before = web().market.candles(symbol, timeframe, limit=limit, before=before)
    return jsonify(symbol=symbol, timeframe=timeframe, candles=rows, next_before=next_before)


@bp.get("/signals")
@require("web", anonymous=None)
def signals() -> Any:
    symbol, timeframe = _series()
    return jsonify(symbol=symbol, timeframe=timeframe,
                   signals=web().market.signals(symbol, timeframe))  # fmt: skip


@bp.get("/signals/history")
@require("web", anonymous=None)
def signal_history() -> Any:
    """The state changes of every signal of a series (chart markers) and, per signal, how many
    more closed candles it needs before it has a value."""
    symbol, timeframe = _series()
    m = web().market
    return jsonify(symbol=symbol, timeframe=timeframe,
                   changes=m.signal_changes(symbol, timeframe),
                   needs=m.signal_needs(symbol, timeframe))  # fmt: skip


@bp.get("/instruments")
@require("web", anonymous=None)
def instruments() -> Any:
    """Trading filters (tick, step, minimum notional...) as decimal strings: of ``symbol``, or of
    every tradable symbol; {} until the execution process has published them."""
    known = web().trading.instruments()
    symbol = request.args.get("symbol")
    if symbol is not None:
        inst = known.get(symbol)
        return jsonify(instruments={symbol: inst.to_dict()} if inst else {})
    return jsonify(instruments={s: i.to_dict() for s, i in known.items()})


@bp.get("/site")
def site() -> Any:
    """Where this page may be opened from: the origins Socket.IO and sign-in accept, and whether
    the request's own origin is one (the page explains a refused socket with it)."""
    cfg = web().settings.web
    here = request_origin()
    return jsonify(origin=cfg.origin, origins=list(cfg.origins), here=here,
                   allowed=here in cfg.origins)  # fmt: skip


@bp.get("/health")
def health() -> Any:
    """Every process's last report; 503 when a role has no fresh report (no auth: for probes)."""
    w = web()
    now = time.time_ns() // 1_000_000
    out: dict[str, Any] = {}
    ok = True
    for role, key in (("web", w.keys.web_health()), ("feeders", w.keys.feed_health()),
                      ("consumers", w.keys.consumer_health())):  # fmt: skip
        raw: dict[bytes, bytes] = w.redis.hgetall(key)  # type: ignore[assignment]
        reports = {k.decode(): orjson.loads(v) for k, v in raw.items()}
        for report in reports.values():
            at = report.get("at_ms") or report.get("updated_ms") or 0
            report["stale"] = now - at > STALE_HEALTH_MS
        fresh = [r for r in reports.values() if not r["stale"]]
        ok = ok and bool(fresh)
        out[role] = reports
    # Execution is reported, and counted once it has reported: a deployment may not trade.
    raw_exec: dict[bytes, bytes] = w.redis.hgetall(w.keys.execution_health())  # type: ignore[assignment]
    execution = {k.decode(): orjson.loads(v) for k, v in raw_exec.items()}
    for report in execution.values():
        report["stale"] = now - int(report.get("at_ms", 0)) > STALE_HEALTH_MS
    if execution:
        ok = ok and any(not r["stale"] for r in execution.values())
    out["execution"] = execution
    out["status"] = "ok" if ok else "degraded"
    return jsonify(out), (200 if ok else 503)
