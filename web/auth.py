"""Blueprint ``/auth``: Sign-In with Ethereum, token refresh and logout; the bearer-token check.

docs/architecture.md "Web / Authentication" has the flow. Every rejection is JSON
``{"error": code, "message": text}`` and changes nothing: the nonce is consumed only after the
message and its signature have passed every check.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, jsonify, request

from core.clock import now_ms
from core.errors import RefreshError, SiweError, TokenError
from web import siwe
from web.errors import ApiError, error_response
from web.services import socketio, web
from web.sessions import NONCE_TTL_S, Login
from web.tokens import Claims

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__, url_prefix="/auth")
COOKIES = {"web": "tp_refresh", "ops": "tp_refresh_ops"}  # one login per scope in a browser
# Readable by the page, holding no secret: "a refresh cookie was set", so an anonymous page
# does not POST /auth/refresh only to get a 401 (a console error on every anonymous load).
HINTS = {"web": "tp_signed_in", "ops": "tp_signed_in_ops"}
# The nonce's binder: a secret set with the nonce (HttpOnly, Path=/auth) that the login must
# present, so a signed message that leaks before it is used is worth nothing without it.
NONCE_COOKIE = "tp_nonce"
F = TypeVar("F", bound=Callable[..., Any])


def client_ip() -> str:
    return request.remote_addr or "unknown"


def _limit(kind: str, who: str, limit: int) -> None:
    retry = web().sessions.hit(kind, who, limit=limit, now_ms=now_ms())
    if retry:
        log.warning("login rate limit: %s %s", kind, who, extra={"kind": kind})
        raise ApiError(429, "rate_limited", f"too many attempts; retry in {retry} s", retry)


def bearer_claims(audience: str) -> Claims | None:
    """Return the claims of the request's bearer token (None without one); raise ApiError."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "invalid_token", "expected 'Authorization: Bearer <token>'")
    return verify_access(token.strip(), audience)


def verify_access(token: str, audience: str) -> Claims:
    """Verify an access token for ``audience`` and that its login is not revoked (and, for the
    ops page, that its address is still an operator)."""
    w = web()
    try:
        claims = w.keyring.verify(token, audience=audience)
    except TokenError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    if not w.sessions.alive(claims.family):
        raise ApiError(401, "token_revoked", "this session was signed out or revoked")
    if audience == "ops" and claims.address.lower() not in w.settings.web.ops_addresses:
        raise ApiError(403, "not_an_operator", "this address may no longer use the ops page")
    return claims


def require(audience: str, *, anonymous: bool | None = False) -> Callable[[F], F]:
    """Decorate a view: a valid bearer token for ``audience``, or none when ``anonymous`` (None:
    when the deployment allows anonymous reads, TP_WEB_ANONYMOUS)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                claims = bearer_claims(audience)
                allowed = web().settings.web.anonymous if anonymous is None else anonymous
                if claims is None and not allowed:
                    raise ApiError(401, "unauthorized", "sign in first (Authorization: Bearer)")
            except ApiError as exc:
                return error_response(exc)
            g.claims = claims
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def request_origin() -> str:
    """The origin of the page that sent this request (its Origin header, else its Host)."""
    return request.headers.get("Origin") or f"{request.scheme}://{request.host}"


def site() -> str:
    """Return the origin this request came from when it is one of TP_WEB_ORIGINS (so sign-in
    works wherever the page may be opened), else the canonical TP_WEB_ORIGIN."""
    here = request_origin()
    return here if here in web().settings.web.origins else web().settings.web.origin


def _same_site_only() -> None:
    """Refuse a browser request sent by a page of another origin (CSRF on cookie routes);
    requests without an Origin header (not from a browser page) are not concerned."""
    origin = request.headers.get("Origin")
    if origin is not None and origin not in web().settings.web.origins:
        raise ApiError(403, "bad_origin", f"requests from {origin[:100]!r} are not accepted")


@bp.get("/nonce")
def nonce() -> Any:
    w = web()
    _limit("nonce", client_ip(), w.settings.web.login_per_minute_ip)
    binder = secrets.token_urlsafe(24)
    response = jsonify(
        nonce=w.sessions.new_nonce(binder),
        domain=urlsplit(site()).netloc,
        uri=site(),
        chain_id=w.settings.web.chain_id,
        expires_in=NONCE_TTL_S,
    )
    response.set_cookie(NONCE_COOKIE, binder, max_age=NONCE_TTL_S, path="/auth", httponly=True,
                        samesite="Strict", secure=site().startswith("https:"))  # fmt: skip
    return response


@bp.post("/login")
def login() -> Any:
    w = web()
    cfg = w.settings.web
    _limit("login", client_ip(), cfg.login_per_minute_ip)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "malformed", "expected a JSON object {message, signature, scope}")
    message, signature = body.get("message"), body.get("signature")
    scope = body.get("scope", "web")
    if (
        not isinstance(message, str)
        or not isinstance(signature, str)
        or scope
        not in (
            "web",
            "ops",
        )
    ):
        raise ApiError(400, "malformed", "message and signature must be strings, scope web|ops")
    try:
        claimed = siwe.parse_message(message)
    except SiweError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    _limit("address", claimed.address.lower(), cfg.login_per_minute_address)
    here = site()
    try:
        # A message naming a scheme must name this site's ("https" when it names none).
        scheme = urlsplit(here).scheme if claimed.scheme else None
        msg = siwe.verify(message, signature, domain=urlsplit(here).netloc, uri=None,
                          scheme=scheme, chain_id=cfg.chain_id, now_ms=now_ms())  # fmt: skip
    except SiweError as exc:
        log.info("sign-in rejected: %s", exc.code, extra={"code": exc.code})
        raise ApiError(401, exc.code, str(exc)) from None
    if msg.uri != here and not msg.uri.startswith(here + "/"):
        raise ApiError(401, "uri_mismatch", f"URI must be {here} or under it")
    if scope == "ops" and msg.address.lower() not in cfg.ops_addresses:
        raise ApiError(403, "not_an_operator", "this address may not use the ops page")
    if not w.sessions.nonce_bound_to(msg.nonce, request.cookies.get(NONCE_COOKIE)):
        raise ApiError(401, "unknown_nonce", "unknown, expired or already used nonce, or one "
                       "issued to another client (its cookie is missing)")  # fmt: skip
    if not w.sessions.consume_nonce(msg.nonce):
        raise ApiError(401, "unknown_nonce", "unknown, expired or already used nonce")
    log.info("signed in %s (%s)", msg.address, scope, extra={"address": msg.address})
    return _issue(w.sessions.login(msg.address, scope))


def _issue(login: Login) -> Response:
    w = web()
    ttl = w.settings.web.access_ttl_s
    token, claims = w.keyring.issue(
        address=login.address, audience=login.scope, family=login.family, ttl_s=ttl,
        now_s=int(time.time()),
    )  # fmt: skip
    response = jsonify(
        access_token=token, token_type="Bearer", expires_in=ttl,  # noqa: S106  # a scheme name
        expires_at=claims.expires_at_s * 1000, address=login.address, scope=login.scope,
    )  # fmt: skip
    response.set_cookie(
        COOKIES[login.scope], login.refresh_token, max_age=w.settings.web.refresh_ttl_s,
        path="/auth",
        httponly=True, samesite="Strict", secure=site().startswith("https:"),
    )  # fmt: skip
    response.set_cookie(
        HINTS[login.scope], "1", max_age=w.settings.web.refresh_ttl_s, path="/",
        samesite="Strict", secure=site().startswith("https:"),
    )  # fmt: skip
    return response


def _forget(response: Response, scope: str) -> None:
    response.delete_cookie(COOKIES[scope], path="/auth")
    response.delete_cookie(HINTS[scope], path="/")


def revoke(family: str, reason: str) -> None:
    """Delete a login family and tell its sockets in every web process (message queue)."""
    web().sessions.revoke(family)
    socketio.emit("auth_revoked", {"reason": reason}, to=f"f:{family}")


def _scope() -> str:
    """Return the scope a refresh or logout is for: JSON ``{"scope": "ops"}``, else ``web``."""
    body = request.get_json(silent=True)
    scope = body.get("scope", "web") if isinstance(body, dict) else "web"
    if scope not in COOKIES:
        raise ApiError(400, "malformed", "scope must be web or ops")
    return str(scope)


@bp.post("/refresh")
def refresh() -> Any:
    _same_site_only()
    scope = _scope()
    cookie = COOKIES[scope]
    token = request.cookies.get(cookie)
    if not token:
        response, status = error_response(
            ApiError(401, "refresh_unknown", f"no refresh token (cookie {cookie})")
        )
        _forget(response, scope)
        return response, status
    try:
        login = web().sessions.rotate(token)
    except RefreshError as exc:
        if exc.code == "refresh_reused" and exc.family:
            log.warning("refresh token reused: session %s revoked", exc.family)
            revoke(exc.family, "refresh_reused")
        response, status = error_response(ApiError(401, exc.code, exc.message))
        _forget(response, scope)
        return response, status
    if login.scope == "ops" and login.address.lower() not in web().settings.web.ops_addresses:
        # Removed from TP_OPS_ADDRESSES since signing in: the ops login ends here.
        revoke(login.family, "not_an_operator")
        response, status = error_response(
            ApiError(403, "not_an_operator", "this address may no longer use the ops page")
        )
        _forget(response, scope)
        return response, status
    return _issue(login)


@bp.post("/logout")
def logout() -> Any:
    _same_site_only()
    scope = _scope()
    cookie = COOKIES[scope]
    family = None
    token = request.cookies.get(cookie)
    if token:
        family = web().sessions.family_of(token)
    if family is None and request.headers.get("Authorization"):
        for audience in ("web", "ops"):
            try:
                claims = bearer_claims(audience)
            except ApiError as exc:
                if exc.code != "wrong_audience":
                    raise
                continue
            family = claims.family if claims else None
            break
    if family is None:
        raise ApiError(401, "unauthorized", "nothing to sign out: no session cookie or token")
    revoke(family, "logged_out")
    response = Response(status=204)
    _forget(response, scope)
    return response
