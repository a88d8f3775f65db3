"""Blueprint ``/api``: symbols and timeframes, paged candle history, latest signals, health."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from core.clock import now_ms
from core.schemas import HealthReport
from web.auth import request_origin, require
from web.errors import ApiError
from web.market import MAX_PAGE
from web.services import web

bp = Blueprint("api", __name__, url_prefix="/api")


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
    now = now_ms()
    out: dict[str, Any] = {}
    ok = True
    for role, key in (("web", w.keys.web_health()), ("feeders", w.keys.feed_health()),
                      ("consumers", w.keys.consumer_health()),
                      ("execution", w.keys.execution_health())):  # fmt: skip
        raw: dict[bytes, bytes] = w.redis.hgetall(key)  # type: ignore[assignment]
        reports = {n.decode(): HealthReport.decode(n, v).view(now, age=False)
                   for n, v in raw.items()}  # fmt: skip
        # Execution is counted once it has reported: a deployment may not trade.
        if reports or role != "execution":
            ok = ok and any(not r["stale"] for r in reports.values())
        out[role] = reports
    out["status"] = "ok" if ok else "degraded"
    return jsonify(out), (200 if ok else 503)
