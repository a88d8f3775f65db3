"""Blueprint ``/api``: a signed-in user's exchange account, trade commands, orders and fills.

Every view needs an access token (``aud=web``); the subject (the signed-in address) is the only
account a request can touch. Answers are ``{"ok": true|false|null, ...}``: ``null`` (HTTP 202)
means the outcome is not known yet and will arrive on the socket as ``order_event``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from web.auth import require
from web.services import web

bp = Blueprint("trade", __name__, url_prefix="/api")


def _me() -> str:
    return str(g.claims.address)


def _answer(status: int, body: dict[str, Any]) -> tuple[Response, int]:
    return jsonify(body), status


def _body() -> Any:
    return request.get_json(silent=True)


def _limit() -> int:
    raw = request.args.get("limit", "100")
    return max(1, min(int(raw), 500)) if raw.isdigit() else 100


@bp.get("/account")
@require("web")
def account() -> Any:
    return jsonify(web().trading.account(_me()))


@bp.post("/account/keypair")
@require("web")
def keypair() -> Any:
    return jsonify(web().trading.new_keypair(_me()))


@bp.post("/account/link")
@require("web")
def link() -> Any:
    return _answer(*web().trading.execute(_me(), "link", _body()))


@bp.delete("/account")
@require("web")
def unlink() -> Any:
    return _answer(*web().trading.execute(_me(), "unlink", _body() or request.args.to_dict()))


@bp.post("/orders")
@require("web")
def place() -> Any:
    return _answer(*web().trading.execute(_me(), "place", _body()))


@bp.post("/orders/cancel")
@require("web")
def cancel() -> Any:
    return _answer(*web().trading.execute(_me(), "cancel", _body()))


@bp.post("/orders/cancel-all")
@require("web")
def cancel_all() -> Any:
    return _answer(*web().trading.execute(_me(), "cancel_all", _body()))


@bp.post("/positions/close")
@require("web")
def close() -> Any:
    return _answer(*web().trading.execute(_me(), "close", _body()))


@bp.post("/leverage")
@require("web")
def leverage() -> Any:
    return _answer(*web().trading.execute(_me(), "leverage", _body()))


@bp.post("/margin-type")
@require("web")
def margin_type() -> Any:
    return _answer(*web().trading.execute(_me(), "margin_type", _body()))


@bp.get("/orders/open")
@require("web")
def open_orders() -> Any:
    return jsonify(orders=web().trading.open_orders(_me()))


@bp.get("/orders/history")
@require("web")
def history() -> Any:
    return jsonify(orders=web().trading.history(_me(), _limit()))


@bp.get("/fills")
@require("web")
def fills() -> Any:
    return jsonify(fills=web().trading.fills(_me(), _limit()))


@bp.get("/audit")
@require("web")
def audit() -> Any:
    return jsonify(entries=web().trading.audit(_me(), _limit()))
