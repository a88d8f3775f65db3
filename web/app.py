"""The application factory: ``create_app(settings)`` builds one web process's app.

The objects the handlers share live in web/services.py (``socketio``, ``web()``), the Engine.IO
send glue in web/delivery.py; the blueprints import those, never this module.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from core.config import Settings
from core.keys import Keys
from core.redis_clients import gevent_client, market_client, sync_client
from web import (
    api,
    auth,
    metrics,
    ops,
    probes,
    sockets,  # noqa: F401  # registers the socket events on socketio
    trade_api,
)
from web.commands import MAX_WAITERS, Trading
from web.delivery import Delivery
from web.errors import ApiError, error_response
from web.fanout import Pump
from web.market import Market
from web.rooms import Registry
from web.services import Web, socketio
from web.sessions import Sessions
from web.tokens import Keyring
from web.trade_events import OrderEvents
from web.transport import whole_frames

log = logging.getLogger(__name__)

# HTTP bodies and websocket messages (docs/stack.md, "Engine.IO's message size")
MAX_REQUEST_BYTES = 64 * 1024
STATIC_MAX_AGE_S = 300  # then revalidated by ETag (304): a deploy reaches browsers within minutes
GZIP_CACHE_ENTRIES = 64  # compressed static files kept (the page has about 15)
GZIP_TYPES = ("text/html", "text/css", "text/javascript", "application/javascript")
# The pages load only their own scripts, styles and sockets (no inline script, no third party);
# the favicon is a data: URL; 'self' covers the page's own ws:/wss: in current browsers. The one
# inline style allowed, by its hash, is the <style> lightweight-charts 5.3.0 adds for the
# TradingView attribution logo its licence asks us to show (recompute it when upgrading).
CHART_LOGO_STYLE = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"
CSP = (f"default-src 'self'; script-src 'self'; style-src 'self' {CHART_LOGO_STYLE}; "
       "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")  # fmt: skip


def create_app(settings: Settings, *, start_pump: bool = True) -> Flask:
    """Build the app for ``settings``; start the fan-out pump unless told not to (unit tests)."""
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = STATIC_MAX_AGE_S
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.web.proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.web.proxies, x_proto=1, x_host=1)  # type: ignore[method-assign]

    url = settings.require_redis_url()
    try:
        # Snapshots read in parallel while clients (re)connect: a burst of subscribes waits up
        # to POOL_WAIT_S for one of these (bench: 64 ran out at 100 new clients/s).
        client = gevent_client(url, max_connections=128, client_name="web")
        waiters = gevent_client(url, max_connections=MAX_WAITERS, client_name="web-trade")
    except Exception:  # not under gevent (unit tests, scripts): a plain thread-safe client
        client = sync_client(url, max_connections=16, client_name="web")
        waiters = client
    # Market data: on a Redis of its own (a cluster client under gevent: sockets are patched).
    market = market_client(settings.market_redis(), client, max_connections=128,
                           client_name="web-market")  # fmt: skip
    keys = Keys.of(settings)
    w = settings.web
    registry = Registry(max_subscriptions=w.max_subscriptions, backlog=w.client_backlog,
                        slow_ms=w.slow_disconnect_ms, phases=w.phases)  # fmt: skip
    sessions = Sessions(client, keys, refresh_ttl_s=w.refresh_ttl_s)
    socketio.init_app(
        app,
        async_mode="gevent" if _patched() else "threading",
        message_queue=url,
        channel=keys.socketio_channel(),
        cors_allowed_origins=list(w.origins),
        max_http_buffer_size=MAX_REQUEST_BYTES,
        transports=["websocket"],
        json=_OrjsonJson,
    )
    delivery = Delivery(socketio, registry)
    if _patched():  # simple-websocket's partial sends (web/transport.py)
        app.wsgi_app = whole_frames(  # type: ignore[method-assign,assignment]
            # Longer than the pump's own limit: a dropped client that reads again in time
            # still receives its `kicked` reason; one that never does loses the connection.
            app.wsgi_app, timeout_s=2 * w.slow_disconnect_ms / 1000 + 10,
            send_buffer_bytes=w.send_buffer_bytes,
        )  # fmt: skip

    pump = Pump(client, settings, registry, sessions, queued=delivery.queued, send=delivery.send,
                notify=delivery.notify, market=market)  # fmt: skip
    app.extensions["tp"] = Web(
        settings=settings, keys=keys, redis=client, market_redis=market,
        market=Market(market, settings, control=client),
        sessions=sessions, keyring=Keyring(settings.jwt_keys, issuer=w.origin),
        registry=registry, pump=pump,
        trading=Trading(client, settings, keys, waiters=waiters, market=market),
        order_events=OrderEvents(client, keys, delivery.emit),
    )  # fmt: skip

    app.register_blueprint(auth.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(trade_api.bp)
    app.register_blueprint(metrics.bp)  # /metrics
    app.register_blueprint(probes.bp)  # /livez, /readyz
    app.register_error_handler(ApiError, error_response)  # every blueprint's JSON errors

    @app.get("/")
    def index() -> Any:
        return app.send_static_file("index.html")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = jsonify(error=code, message=exc.description or exc.name)
        return response, exc.code or 500

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
        if request.path.startswith(("/api", "/auth", "/ops/api")):
            response.headers.setdefault("Cache-Control", "no-store")
        elif response.status_code == 200 and response.mimetype in GZIP_TYPES:
            gzipped.apply(response)
        return response

    gzipped = _Gzipped(GZIP_CACHE_ENTRIES)

    if start_pump:
        socketio.start_background_task(pump.run)
        socketio.start_background_task(app.extensions["tp"].order_events.run)
    return app


def _patched() -> bool:
    import sys

    if "gevent.monkey" not in sys.modules:
        return False
    import gevent.monkey

    return bool(gevent.monkey.is_module_patched("socket"))


class _Gzipped:
    """Static files gzip-compressed once per version (ETag) and kept, at most ``entries``.

    The compressed variant carries the file's ETag as a weak one, which If-None-Match compares
    weakly: a revalidation gets its 304 whichever encoding the browser holds.
    """

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.cache: dict[tuple[str, str], bytes] = {}

    def apply(self, response: Any) -> None:
        if "gzip" not in request.headers.get("Accept-Encoding", ""):
            return
        etag, _ = response.get_etag()
        key = (request.path, etag or "")
        body = self.cache.get(key) if etag else None
        if body is None:
            import gzip

            response.direct_passthrough = False
            body = gzip.compress(response.get_data(), compresslevel=6, mtime=0)
            if etag:
                if len(self.cache) >= self.entries:
                    self.cache.pop(next(iter(self.cache)))
                self.cache[key] = body
        response.set_data(body)
        response.headers["Content-Encoding"] = "gzip"
        response.vary.add("Accept-Encoding")
        if etag:
            response.set_etag(etag, weak=True)


class _OrjsonJson:
    """The Socket.IO packet codec on orjson (snapshots are the big packets)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        import orjson

        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        import orjson

        return orjson.loads(data)
