"""``GET /livez`` and ``GET /readyz``: the probes of a load balancer or orchestrator (no auth).

* ``/livez``: the process answers HTTP. No I/O: a Redis outage must not get a healthy web
  process restarted.
* ``/readyz``: Redis answers, so requests can be served. 200 ``{"status": "ready", ...}`` or 503
  ``{"status": "not_ready", "missing": [...]}``. ``processes`` says, per process type, how many
  have a fresh health report. ``?require=feeder,consumer`` (or ``all``) makes those process
  types dependencies too: readiness of the pipeline behind the page, per process type, for a
  deploy check, without making the web tier's own readiness hang on them by default.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify, request

from core.clock import now_ms
from core.schemas import HEALTH_STALE_MS
from ops.health import ROLES, fresh_roles, process_reports
from web.services import web

bp = Blueprint("probes", __name__)


@bp.get("/livez")
def livez() -> Any:
    return jsonify(status="alive"), 200, {"Cache-Control": "no-store"}


def _required() -> tuple[list[str], list[str]]:
    """Return the process types ``?require=`` names, and the unknown names given."""
    raw = request.args.get("require", "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if "all" in names:
        return list(ROLES), []
    return [n for n in names if n in ROLES], [n for n in names if n not in ROLES]


@bp.get("/readyz")
def readyz() -> Any:
    required, unknown = _required()
    if unknown:
        body = {
            "error": "bad_request",
            "message": f"unknown process types {unknown}; use {', '.join(ROLES)} or all",
        }
        return jsonify(body), 400  # fmt: skip
    w, now = web(), now_ms()
    missing: list[str] = []
    out: dict[str, Any] = {}
    try:
        w.redis.ping()
        w.market_redis.ping()  # the same client unless market data has a Redis of its own
        fresh = fresh_roles(process_reports(w.redis, w.keys, now, HEALTH_STALE_MS))
    except (redis.RedisError, OSError) as exc:
        missing.append("redis")
        out["redis"] = f"unreachable: {type(exc).__name__}"
        fresh = {}
    else:
        out["redis"] = "ok"
        missing += [role for role in required if not fresh.get(role)]
    out["processes"] = fresh
    out["required"] = required
    out["missing"] = missing
    status = 503 if missing else 200
    out = {"status": "not_ready" if missing else "ready", **out}
    return jsonify(out), status, {"Cache-Control": "no-store"}
