"""Settings: the only place that reads the environment.

Every entry point calls :func:`load_settings` once and passes the frozen :class:`Settings` down.
Heroku's names are used where they exist (``REDIS_URL``, ``PORT``); ours share the ``TP_`` prefix,
and an unknown ``TP_`` variable is an error (it is almost always a typo). The full table with
defaults is in README.md.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import difflib
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import urlencode, urlsplit

from core.errors import ConfigError
from core.timeframes import Timeframe, parse_timeframe
from core.vault import parse_keyring

PREFIX = "TP_"
MarketSource = Literal["sim", "testnet", "live"]
JWT_MIN_SECRET_BYTES = 32  # HS256 wants at least 256 bits (RFC 7518 §3.2; PyJWT warns below)

# Binance USD-M hosts (docs/binance.md, "Hosts" and "Stream routes"). Websocket streams are
# routed under /public, /market and /private since 2026-04-23; an unrouted URL silently gets
# /public data only.
SIM_REST_URL = "http://127.0.0.1:8765"  # where `python -m simulator` listens by default
SIM_WS_URL = "ws://127.0.0.1:8766"
_HOSTS: dict[str, tuple[str, str]] = {
    "live": ("https://fapi.binance.com", "wss://fstream.binance.com"),
    "testnet": ("https://demo-fapi.binance.com", "wss://fstream.binancefuture.com"),
    "sim": (SIM_REST_URL, SIM_WS_URL),
}
DEFAULT_TIMEFRAMES = "1m,5m,15m,1h,4h,1d"
_SIGNAL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_]{1,29}$")  # delivery contracts: BTCUSDT_210924
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class MarketEndpoints:
    """Where the exchange (or the simulator) answers: REST base URL and websocket root."""

    source: MarketSource
    rest_url: str
    ws_url: str

    @property
    def ws_public(self) -> str:
        """Route for bookTicker, trade and depth streams."""
        return f"{self.ws_url}/public"

    @property
    def ws_market(self) -> str:
        """Route for aggTrade, kline and markPrice streams."""
        return f"{self.ws_url}/market"

    @property
    def ws_private(self) -> str:
        """Route for user-data (listenKey) streams."""
        return f"{self.ws_url}/private"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """The feeder's knobs (TP_FEED_*, TP_TRADE_STREAM)."""

    trade_stream: Literal["aggTrade", "trade"]
    buffer_max: int  # entries the outbox may hold while Redis is slow or down
    buffer_bytes: int  # and bytes of encoded records: whichever bound is reached first
    max_streams: int  # per websocket connection (Binance: 1024)
    silence_ms: int  # shortest silence after which a stream that was delivering counts as stalled
    reorder_ms: int  # how long a trade-id jump waits for reordered frames before it is a gap
    rotate_s: int  # connection age at which it is replaced, make-before-break (cut at 24 h)


@dataclass(frozen=True, slots=True)
class CandleSettings:
    """The candle stage's knobs (TP_CANDLE_*, TP_CLAIM_IDLE_MS, TP_REST_WEIGHT_*)."""

    retention: tuple[tuple[str, int], ...]  # (timeframe, candles kept) for every timeframe
    history: int  # closed candles per timeframe fetched at start-up (0: none)
    max_deliveries: int  # attempts at a failing stream entry before it is dead-lettered
    claim_idle_ms: int  # pending this long, an entry is claimed and its shard rebuilt
    rest_weight_budget: int  # REST weight per minute we allow ourselves (Binance: 2,400)
    # ... of which background work (backfill, reconciliation) leaves this much to users' calls
    rest_weight_reserve: int
    updates_maxlen: int  # approximate length of each candle-updates stream

    def keep(self, timeframe: str) -> int:
        return dict(self.retention)[timeframe]


# The built-in signals run when no TP_SIGNALS_FILE is given: each formula with its defaults.
BUILTIN_FORMULAS = ("ema_cross", "rsi", "macd", "bollinger", "donchian", "vwap_deviation")


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One configured signal: a registered formula, its parameters, where it runs."""

    name: str  # the published name (a Signal's ``formula`` field); unique
    formula: str  # the registered formula
    params: tuple[tuple[str, int | float], ...] = ()
    symbols: tuple[str, ...] | None = None  # None: every symbol
    timeframes: tuple[str, ...] | None = None  # None: every configured timeframe


@dataclass(frozen=True, slots=True)
class SignalSettings:
    """The signal stage's knobs (TP_SIGNALS_FILE, TP_FORMULA_MODULES, TP_SIGNAL_*)."""

    specs: tuple[SignalSpec, ...]
    modules: tuple[str, ...]  # imported at start: a deployment's own formulas register there
    history: int  # closed-candle values kept per (symbol, timeframe, signal)
    time_limit_ms: int  # one formula evaluation longer than this is stopped and counted
    pace_ms: int  # a series' provisional value (open candle) is re-evaluated at most this often
    cache_candles: int  # candles a worker process keeps decoded for its windows (~1.2 KB each)


ROUND_MS = 10  # the fan-out pump's round period (about): WebSettings.phases
# At most this many rounds per tick: a sealed room is noted once per phase (web/rooms.py), so
# a long tick would otherwise cost that many notes per room and round (a 5-s tick: 500).
MAX_PHASES = 16


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The web tier's knobs (TP_WEB_*, TP_SIWE_*, TP_*_TTL_S, TP_LOGIN_*, TP_OPS_ADDRESSES)."""

    origin: str  # the site's canonical origin: JWT issuer, SIWE domain and URI by default
    origins: tuple[str, ...]  # every origin the page may be opened from (origin first): CORS, SIWE
    bind: str  # the address gunicorn listens on (the Procfile's -b): the demo's is loopback only
    chain_id: int  # the EIP-155 chain a SIWE message must name
    anonymous: bool  # connections and REST reads without a token get read-only market data
    access_ttl_s: int
    refresh_ttl_s: int
    max_subscriptions: int  # per connection
    tick_ms: int  # the fan-out's coalescing period: each connection gets at most one md per tick
    client_backlog: int  # messages queued to one connection past which it is skipped
    slow_disconnect_ms: int  # a connection skipped for this long is disconnected
    send_buffer_bytes: int  # kernel send buffer of each websocket (bounds it; no autotuning)
    snapshot_candles: int  # candles sent on subscribe
    login_per_minute_ip: int
    login_per_minute_address: int
    ops_addresses: frozenset[str]  # lower-case addresses allowed on the ops page
    proxies: int  # reverse proxies in front (X-Forwarded-For hops to trust; Heroku: 1)
    metrics_token: str | None  # bearer token for /metrics (None: only an ops sign-in gets it)

    @property
    def phases(self) -> int:
        """Return how many rounds the pump runs per tick, each sending to 1/phases of the
        connections (web/rooms.py): one every ~10 ms (ROUND_MS), at most MAX_PHASES."""
        return max(1, min(MAX_PHASES, round(self.tick_ms / ROUND_MS)))

    @property
    def domain(self) -> str:
        """Return the origin's authority (host[:port]): a SIWE message's expected domain."""
        return urlsplit(self.origin).netloc


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    """The trading path's knobs (TP_EXEC_*, TP_TRADE_*)."""

    recv_window_ms: int  # recvWindow of every order: bounds how late an unknown order can go live
    timeout_ms: int  # an exchange call unanswered this long leaves its outcome unknown
    keepalive_s: int  # listenKey keepalive period (Binance: valid 60 min; libraries ping at 30)
    stream_rotate_s: int  # a user-stream connection this old is replaced, make-before-break
    reconcile_s: int  # open orders, positions and balances re-read from REST this often
    commands_per_minute: int  # per user, checked by the web tier before anything is queued
    reply_timeout_ms: int  # a REST trade command waits this long for its outcome, then answers 202
    command_ttl_ms: int  # an order command older than this when execution reaches it is not sent
    # Execution processes: accounts split by crc32(address) % shards, one stream each; the web
    # routes every command to its account's (execution --shard K/N with N = this).
    shards: int = 1


@dataclass(frozen=True, slots=True)
class MarketRedis:
    """Where the market data lives: one server, or a Redis Cluster given by its seed nodes."""

    urls: tuple[str, ...]  # one server's URL, or any of the cluster's nodes (one is enough)
    cluster: bool
    shared: bool  # True: it is the control Redis (REDIS_URL); a process uses one client for both


@dataclass(frozen=True, slots=True)
class Settings:
    """Frozen configuration of one process. Build it with :meth:`from_env`."""

    redis_url: str | None  # None: only the demo runner accepts this, and starts its own Redis
    port: int
    market: MarketEndpoints
    symbols: tuple[str, ...] | None  # None: every TRADING perpetual in exchangeInfo
    timeframes: tuple[Timeframe, ...]
    namespace: str  # prefix of every Redis key this deployment owns
    stream_shards: int
    stream_maxlen: int  # approximate MAXLEN of each market-data stream shard
    jwt_keys: tuple[tuple[str, str], ...]  # (kid, secret); the first one signs
    key_encryption_key: str  # keyring `kid:key,...` (core/vault.py) for exchange credentials
    demo: bool
    log_level: str
    feed: FeedSettings
    candles: CandleSettings
    signals: SignalSettings
    web: WebSettings
    execution: ExecutionSettings
    # rediss:// only: "verify" checks the server's certificate and host name (against
    # redis_ca_file when set, else the system's CAs); "no-verify" encrypts without checking, for
    # providers whose certificates are self-signed (Heroku Key-Value Store).
    redis_tls: Literal["verify", "no-verify"] = "verify"
    redis_ca_file: str | None = None
    # The market-data Redis (docs/architecture.md, "Two Redis roles"): every per-shard key. None:
    # the control Redis (REDIS_URL) holds it too. Several URLs: the seed nodes of a cluster.
    market_redis_urls: tuple[str, ...] | None = None
    market_redis_cluster: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment; raise ConfigError listing every problem found.

        In demo mode (``TP_DEMO=1``) missing secrets are generated for this run; elsewhere they
        are required: there is no default secret.
        """
        env = os.environ if env is None else env
        r = _Reader(env)
        demo = r.get("TP_DEMO", "0", _parse_bool)
        # No default outside the demo: a deploy that forgot it must not trade against 127.0.0.1.
        source: MarketSource = r.get("TP_MARKET", "sim" if demo else None, _parse_source)
        if source is None and not r.problems_for("TP_MARKET"):
            r.problems.append(("TP_MARKET", "required outside the demo: sim, testnet or live"))
        rest_default, ws_default = _HOSTS.get(source, _HOSTS["sim"])  # bad source: reported
        market = MarketEndpoints(
            source=source,
            rest_url=r.get("TP_REST_URL", rest_default, _url(("http", "https"))),
            ws_url=r.get("TP_WS_URL", ws_default, _url(("ws", "wss"))),
        )
        settings = cls(
            redis_url=r.get("REDIS_URL", None, _url(("redis", "rediss", "unix"))),
            redis_tls=r.get("TP_REDIS_TLS", "verify", _parse_redis_tls),
            redis_ca_file=r.get("TP_REDIS_CA_FILE", None, _parse_file),
            market_redis_urls=r.get("TP_MARKET_REDIS_URL", None, _parse_redis_urls),
            market_redis_cluster=r.get("TP_MARKET_REDIS_CLUSTER", "0", _parse_bool),
            port=r.get("PORT", "5000", _int_range(1, 65535)),
            market=market,
            symbols=r.get("TP_SYMBOLS", "all", _parse_symbols),
            timeframes=r.get("TP_TIMEFRAMES", DEFAULT_TIMEFRAMES, _parse_timeframes),
            namespace=r.get("TP_NAMESPACE", "tp", _match(_NAMESPACE, "letters, digits, _ . -")),
            stream_shards=r.get("TP_STREAM_SHARDS", "8", _int_range(1, 1024)),
            stream_maxlen=r.get("TP_STREAM_MAXLEN", "100000", _int_range(1000, 100_000_000)),
            jwt_keys=r.secret("TP_JWT_KEYS", demo, _parse_jwt_keys, _generate_jwt_keys),
            key_encryption_key=r.secret("TP_KEY_ENCRYPTION_KEY", demo, _parse_kek, _generate_kek),
            demo=demo,
            log_level=r.get("TP_LOG_LEVEL", "INFO", _parse_log_level),
            feed=FeedSettings(
                trade_stream=r.get("TP_TRADE_STREAM", "aggTrade", _parse_trade_stream),
                buffer_max=r.get("TP_FEED_BUFFER_MAX", "200000", _int_range(100, 10_000_000)),
                buffer_bytes=r.get("TP_FEED_BUFFER_BYTES", "33554432", _int_range(65_536, 2**34)),
                max_streams=r.get("TP_FEED_MAX_STREAMS", "1024", _int_range(1, 1024)),
                silence_ms=r.get("TP_FEED_SILENCE_MS", "30000", _int_range(100, 3_600_000)),
                reorder_ms=r.get("TP_FEED_REORDER_MS", "500", _int_range(0, 60_000)),
                rotate_s=r.get("TP_FEED_ROTATE_S", "82800", _int_range(5, 86_000)),
            ),
            candles=None,  # type: ignore[arg-type]  # set below: its check needs the timeframes
            web=None,  # type: ignore[arg-type]  # set below: its origin's default needs the port
            signals=SignalSettings(
                specs=r.get("TP_SIGNALS_FILE", "", _parse_signals_file),
                modules=r.get("TP_FORMULA_MODULES", "", _parse_modules),
                history=r.get("TP_SIGNAL_HISTORY", "500", _int_range(1, 100_000)),
                time_limit_ms=r.get("TP_FORMULA_TIME_LIMIT_MS", "250", _int_range(10, 60_000)),
                pace_ms=r.get("TP_SIGNAL_PACE_MS", "1000", _int_range(0, 60_000)),
                cache_candles=r.get(
                    "TP_SIGNAL_CACHE_CANDLES", "250000", _int_range(0, 100_000_000)
                ),
            ),
            execution=ExecutionSettings(
                recv_window_ms=r.get("TP_EXEC_RECV_WINDOW_MS", "3000", _int_range(500, 60_000)),
                timeout_ms=r.get("TP_EXEC_TIMEOUT_MS", "5000", _int_range(100, 60_000)),
                keepalive_s=r.get("TP_EXEC_KEEPALIVE_S", "1800", _int_range(1, 3_300)),
                stream_rotate_s=r.get("TP_EXEC_STREAM_ROTATE_S", "82800", _int_range(2, 86_000)),
                reconcile_s=r.get("TP_EXEC_RECONCILE_S", "300", _int_range(1, 86_400)),
                commands_per_minute=r.get("TP_TRADE_PER_MINUTE", "120", _int_range(1, 100_000)),
                reply_timeout_ms=r.get(
                    "TP_TRADE_REPLY_TIMEOUT_MS", "8000", _int_range(100, 60_000)
                ),
                command_ttl_ms=r.get(
                    "TP_TRADE_COMMAND_TTL_MS", "30000", _int_range(1000, 3_600_000)
                ),
                shards=r.get("TP_EXECUTION_SHARDS", "1", _int_range(1, 64)),
            ),
        )
        port = settings.port or 5000
        origin = r.get("TP_WEB_ORIGIN", f"http://localhost:{port}", _url(("http", "https")))
        # Heroku's router reaches a dyno on any interface; the demo is for this machine only.
        any_interface = "0.0.0.0"  # noqa: S104
        bind = r.get("TP_WEB_BIND", "127.0.0.1" if settings.demo else any_interface, _parse_host)
        # Unconfigured, the page works at localhost and at 127.0.0.1; configured, at the origin
        # and the extra origins listed (a browser sends its Origin for the socket and sign-in).
        extra = f"http://127.0.0.1:{port}" if "TP_WEB_ORIGIN" not in r.env else ""
        origins = r.get("TP_WEB_ORIGINS", extra, _parse_origins)
        web = WebSettings(
            origin=origin,
            origins=tuple(dict.fromkeys((origin, *(origins or ())))) if origin else (),
            bind=bind,
            chain_id=r.get("TP_SIWE_CHAIN_ID", "1", _int_range(1, 2**53)),
            anonymous=r.get("TP_WEB_ANONYMOUS", "1", _parse_bool),
            access_ttl_s=r.get("TP_ACCESS_TTL_S", "600", _int_range(5, 86_400)),
            refresh_ttl_s=r.get("TP_REFRESH_TTL_S", "2592000", _int_range(60, 31_536_000)),
            max_subscriptions=r.get("TP_WEB_MAX_SUBSCRIPTIONS", "50", _int_range(1, 1000)),
            tick_ms=r.get("TP_WEB_TICK_MS", "50", _int_range(20, 5000)),
            client_backlog=r.get("TP_WEB_CLIENT_BACKLOG", "16", _int_range(2, 10_000)),
            slow_disconnect_ms=r.get("TP_WEB_SLOW_MS", "10000", _int_range(100, 600_000)),
            send_buffer_bytes=r.get("TP_WEB_SEND_BUFFER", "262144", _int_range(4096, 16_777_216)),
            snapshot_candles=r.get("TP_WEB_SNAPSHOT_CANDLES", "300", _int_range(1, 1500)),
            login_per_minute_ip=r.get("TP_LOGIN_PER_MINUTE_IP", "30", _int_range(1, 1_000_000)),
            login_per_minute_address=r.get(
                "TP_LOGIN_PER_MINUTE_ADDRESS", "10", _int_range(1, 1_000_000)
            ),
            ops_addresses=r.get("TP_OPS_ADDRESSES", "", _parse_addresses),
            proxies=r.get("TP_WEB_PROXIES", "0", _int_range(0, 10)),
            metrics_token=r.get("TP_METRICS_TOKEN", None, _parse_metrics_token),
        )
        timeframes = settings.timeframes or ()
        budget = r.get("TP_REST_WEIGHT_BUDGET", "1200", _int_range(10, 2400))
        # Default: a quarter of the budget (binance.rest.default_reserve), 300 of 1,200.
        reserve = r.get("TP_REST_WEIGHT_RESERVE", str((budget or 0) // 4), _int_range(0, 2399))
        if budget is not None and reserve is not None and reserve >= budget:
            r.problems.append(("TP_REST_WEIGHT_RESERVE", "must be below TP_REST_WEIGHT_BUDGET"))
        settings = dataclasses.replace(settings, web=web, candles=CandleSettings(
            retention=r.get("TP_CANDLE_RETENTION", "500", _parse_retention(timeframes)),
            history=r.get("TP_CANDLE_HISTORY", "300", _int_range(0, 1500)),
            max_deliveries=r.get("TP_CANDLE_MAX_DELIVERIES", "3", _int_range(1, 100)),
            claim_idle_ms=r.get("TP_CLAIM_IDLE_MS", "15000", _int_range(1000, 3_600_000)),
            rest_weight_budget=budget,
            rest_weight_reserve=reserve,
            updates_maxlen=r.get("TP_UPDATES_MAXLEN", "1000", _int_range(100, 10_000_000)),
        ))  # fmt: skip
        if settings.candles.retention and settings.candles.history > min(
            n for _, n in settings.candles.retention
        ):
            r.problems.append(("TP_CANDLE_HISTORY", "must not exceed TP_CANDLE_RETENTION"))
        if (settings.market_redis_urls or ())[1:] and not settings.market_redis_cluster:
            r.problems.append(("TP_MARKET_REDIS_URL", "several URLs are the seed nodes of a "
                               "cluster: set TP_MARKET_REDIS_CLUSTER=1"))  # fmt: skip
        if settings.market_redis_cluster and not settings.market_redis_urls:
            why = "needs TP_MARKET_REDIS_URL (the seed nodes): Dramatiq cannot run on a cluster"
            r.problems.append(("TP_MARKET_REDIS_CLUSTER", why))
        r.reject_unknown()
        if r.problems:
            raise ConfigError(r.problems)
        return settings

    def require_redis_url(self) -> str:
        """Return the URL to connect to the control Redis with; raise ConfigError when REDIS_URL
        is unset.

        For ``rediss://`` the TLS settings travel as the URL's query (redis-py's ``ssl_cert_reqs``
        and ``ssl_ca_certs``), so that every client built from it, ours, Dramatiq's broker and the
        Socket.IO message queue, connects the same way.
        """
        if self.redis_url is None:
            raise ConfigError([("REDIS_URL", "not set (only `make demo` starts its own Redis)")])
        return self._with_tls(self.redis_url)

    def market_redis(self) -> MarketRedis:
        """Return where market data lives: TP_MARKET_REDIS_URL (TLS settings applied as for
        REDIS_URL), or the control Redis when it is unset."""
        if self.market_redis_urls is None:
            return MarketRedis((self.require_redis_url(),), cluster=False, shared=True)
        urls = tuple(self._with_tls(u) for u in self.market_redis_urls)
        return MarketRedis(urls, cluster=self.market_redis_cluster, shared=False)

    def _with_tls(self, url: str) -> str:
        if not url.startswith("rediss://"):
            return url
        query: dict[str, str] = {}
        if self.redis_tls == "no-verify":
            query["ssl_cert_reqs"] = "none"
        elif self.redis_ca_file:
            query["ssl_ca_certs"] = self.redis_ca_file
        if not query:
            return url
        return url + ("&" if "?" in url else "?") + urlencode(query)

    def secret_env(self) -> dict[str, str]:
        """Return the secrets as environment variables, for handing to child processes."""
        return {
            "TP_JWT_KEYS": ",".join(f"{kid}:{secret}" for kid, secret in self.jwt_keys),
            "TP_KEY_ENCRYPTION_KEY": self.key_encryption_key,
        }


def parse_shard(raw: str) -> tuple[int, int]:
    """Return (k, n) from a process's ``--shard K/N`` with 1 <= K <= N; raise
    argparse.ArgumentTypeError otherwise (feeder, execution)."""
    m = re.fullmatch(r"(\d+)/(\d+)", raw)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"{raw!r} is not K/N with 1 <= K <= N (e.g. 2/4)")
    return int(m.group(1)), int(m.group(2))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Return Settings.from_env(), or print one line per problem to stderr and exit with 2."""
    try:
        return Settings.from_env(env)
    except ConfigError as exc:
        for var, what in exc.problems:
            print(f"configuration error: {var}: {what}", file=sys.stderr)
        raise SystemExit(2) from None


# --- reading ---------------------------------------------------------------------------------

T = TypeVar("T")
KNOWN = frozenset(
    {"REDIS_URL", "PORT"}
    | {
        PREFIX + name
        for name in (
            "DEMO MARKET REST_URL WS_URL SYMBOLS TIMEFRAMES NAMESPACE STREAM_SHARDS STREAM_MAXLEN "
            "JWT_KEYS KEY_ENCRYPTION_KEY LOG_LEVEL TRADE_STREAM FEED_BUFFER_MAX FEED_BUFFER_BYTES "
            "FEED_MAX_STREAMS "
            "FEED_SILENCE_MS FEED_REORDER_MS FEED_ROTATE_S CANDLE_RETENTION CANDLE_HISTORY "
            "CANDLE_MAX_DELIVERIES CLAIM_IDLE_MS REST_WEIGHT_BUDGET REST_WEIGHT_RESERVE "
            "UPDATES_MAXLEN "
            "SIGNALS_FILE FORMULA_MODULES SIGNAL_HISTORY FORMULA_TIME_LIMIT_MS SIGNAL_PACE_MS "
            "SIGNAL_CACHE_CANDLES "
            "EXEC_RECV_WINDOW_MS EXEC_TIMEOUT_MS EXEC_KEEPALIVE_S EXEC_RECONCILE_S "
            "EXEC_STREAM_ROTATE_S EXECUTION_SHARDS REDIS_TLS REDIS_CA_FILE "
            "MARKET_REDIS_URL MARKET_REDIS_CLUSTER "
            "TRADE_PER_MINUTE TRADE_REPLY_TIMEOUT_MS TRADE_COMMAND_TTL_MS "
            "WEB_ORIGIN WEB_ORIGINS WEB_BIND SIWE_CHAIN_ID WEB_ANONYMOUS ACCESS_TTL_S "
            "REFRESH_TTL_S "
            "WEB_MAX_SUBSCRIPTIONS WEB_TICK_MS WEB_CLIENT_BACKLOG WEB_SLOW_MS WEB_SEND_BUFFER "
            "WEB_SNAPSHOT_CANDLES LOGIN_PER_MINUTE_IP LOGIN_PER_MINUTE_ADDRESS OPS_ADDRESSES "
            "WEB_PROXIES METRICS_TOKEN"
        ).split()
    }
)


class _Reader:
    """Collects every problem instead of stopping at the first, so one run shows them all."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[tuple[str, str]] = []

    def get(self, var: str, default: str | None, parse: Callable[[str], T]) -> T:
        raw = self.env.get(var)
        if raw is None or raw.strip() == "":
            if default is None:
                return None  # type: ignore[return-value]  # only for Optional settings
            raw = default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            self.problems.append((var, str(exc)))
            return None  # type: ignore[return-value]  # never returned: from_env raises

    def secret(
        self, var: str, demo: bool, parse: Callable[[str], T], generate: Callable[[], str]
    ) -> T:
        raw = self.env.get(var, "").strip()
        if not raw:
            if not demo:
                self.problems.append((var, "required outside the demo (there is no default)"))
                return None  # type: ignore[return-value]
            raw = generate()
        try:
            return parse(raw)
        except ValueError as exc:
            self.problems.append((var, str(exc)))  # the message never echoes the secret
            return None  # type: ignore[return-value]

    def problems_for(self, var: str) -> bool:
        return any(v == var for v, _ in self.problems)

    def reject_unknown(self) -> None:
        for var in sorted(v for v in self.env if v.startswith(PREFIX) and v not in KNOWN):
            close = difflib.get_close_matches(var, KNOWN, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.problems.append((var, f"unknown setting{hint}"))


# --- parsers: each raises ValueError with a message that says what was expected -----------------


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean (use 1/0, true/false)")


def _parse_metrics_token(raw: str) -> str:
    # The message never echoes the token: it is a secret.
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]{32,256}", raw):
        raise ValueError("must be 32 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return raw


def _parse_addresses(raw: str) -> frozenset[str]:
    out = set()
    for item in filter(None, (a.strip() for a in raw.split(","))):
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", item):
            raise ValueError(f"{item!r} is not an Ethereum address (0x and 40 hex digits)")
        out.add(item.lower())
    return frozenset(out)


def _parse_redis_tls(raw: str) -> Literal["verify", "no-verify"]:
    if raw not in ("verify", "no-verify"):
        raise ValueError(f"{raw!r} is neither verify nor no-verify")
    return raw  # type: ignore[return-value]


def _parse_file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError(f"no such file: {raw}")
    return raw


def _parse_source(raw: str) -> MarketSource:
    if raw not in _HOSTS:
        raise ValueError(f"{raw!r} is not a market source (use sim, testnet or live)")
    return raw  # type: ignore[return-value]  # checked against the Literal's values above


def _parse_host(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,255}", raw):
        raise ValueError(f"{raw!r} is not an address to listen on (such as 127.0.0.1 or 0.0.0.0)")
    return raw


def _parse_origins(raw: str) -> tuple[str, ...]:
    parse = _url(("http", "https"))
    out = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        url = parse(item)
        if urlsplit(url).path:
            raise ValueError(f"{item!r} is not an origin (scheme://host[:port], no path)")
        out.append(url)
    return tuple(out)


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
            raise ValueError(f"{raw!r} is not a URL with scheme {' or '.join(schemes)}")
        return raw.rstrip("/")

    return parse


def _parse_redis_urls(raw: str) -> tuple[str, ...]:
    parse = _url(("redis", "rediss"))
    urls = tuple(parse(item.strip()) for item in raw.split(",") if item.strip())
    if not urls:
        raise ValueError("expected a redis:// URL, or several separated by commas (cluster seeds)")
    return urls


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range ({lo}..{hi})")
        return value

    return parse


def _match(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not pattern.match(raw):
            raise ValueError(f"{raw!r} is not valid (expected {what})")
        return raw

    return parse


def _parse_modules(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for n in names:
        if not all(part.isidentifier() for part in n.split(".")):
            raise ValueError(f"{n!r} is not a module name (expected e.g. acme.formulas)")
    return names


def _parse_signals_file(raw: str) -> tuple[SignalSpec, ...]:
    """Read the TOML file of ``[[signal]]`` tables; empty: the built-ins with their defaults;
    ``none``: no signals at all."""
    if not raw:
        return tuple(SignalSpec(name, name) for name in BUILTIN_FORMULAS)
    if raw == "none":
        return ()
    try:
        with open(raw, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read {raw}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{raw} is not valid TOML: {exc}") from None
    tables = doc.get("signal")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{raw}: expected one or more [[signal]] tables")
    specs = [_signal_spec(t, f"{raw}: signal {i + 1}") for i, t in enumerate(tables)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{raw}: a signal name is used twice")
    return tuple(specs)


def _signal_spec(t: object, where: str) -> SignalSpec:
    if not isinstance(t, dict):
        raise ValueError(f"{where}: expected a table")
    unknown = set(t) - {"name", "formula", "params", "symbols", "timeframes"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    formula = t.get("formula")
    name = t.get("name", formula)
    if not isinstance(formula, str) or not isinstance(name, str) or not _SIGNAL_NAME.match(name):
        raise ValueError(f"{where}: needs formula = \"<registered name>\" and a name of "
                         "letters, digits and _")  # fmt: skip
    params = t.get("params", {})
    if not isinstance(params, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in params.values()
    ):
        raise ValueError(f"{where} ({name}): params must be a table of numbers")
    symbols = t.get("symbols")
    if symbols is not None:
        symbols = _parse_symbols(",".join(map(str, symbols)) if isinstance(symbols, list) else "?")
    timeframes = t.get("timeframes")
    if timeframes is not None:
        if not isinstance(timeframes, list) or not timeframes:
            raise ValueError(f'{where} ({name}): timeframes must be a list such as ["1m"]')
        timeframes = tuple(tf.name for tf in _parse_timeframes(",".join(map(str, timeframes))))
    return SignalSpec(name, formula, tuple(sorted(params.items())), symbols, timeframes)


def _parse_symbols(raw: str) -> tuple[str, ...] | None:
    if raw.lower() == "all":
        return None
    symbols = tuple(s.strip() for s in raw.split(",") if s.strip())
    if not symbols:
        raise ValueError("empty symbol list (use `all` or e.g. BTCUSDT,ETHUSDT)")
    for s in symbols:
        if not _SYMBOL.match(s):
            raise ValueError(f"{s!r} is not a symbol (expected uppercase letters/digits: BTCUSDT)")
    if len(set(symbols)) != len(symbols):
        raise ValueError("a symbol is listed twice")
    return symbols


def _parse_timeframes(raw: str) -> tuple[Timeframe, ...]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise ValueError("empty timeframe list (e.g. 1m,5m,1h)")
    if len(set(names)) != len(names):
        raise ValueError("a timeframe is listed twice")
    return tuple(sorted((parse_timeframe(n) for n in names), key=lambda tf: tf.ms))


def _parse_retention(
    timeframes: tuple[Timeframe, ...],
) -> Callable[[str], tuple[tuple[str, int], ...]]:
    """``500`` keeps 500 candles of every timeframe; ``500,1m:1440`` keeps 1,440 of 1m."""

    def parse(raw: str) -> tuple[tuple[str, int], ...]:
        default, per_tf = None, {}
        for part in (p.strip() for p in raw.split(",") if p.strip()):
            name, _, count = part.rpartition(":")
            if not count.isdigit() or not 10 <= int(count) <= 100_000:
                raise ValueError(f"{part!r}: a count of candles from 10 to 100000 expected")
            if not name:
                default = int(count)
            elif name not in {tf.name for tf in timeframes}:
                raise ValueError(f"{name!r} is not one of TP_TIMEFRAMES")
            else:
                per_tf[name] = int(count)
        if default is None and set(per_tf) != {tf.name for tf in timeframes}:
            raise ValueError("give a default count (such as 500) or one for every timeframe")
        return tuple((tf.name, per_tf.get(tf.name, default or 0)) for tf in timeframes)

    return parse


def _parse_jwt_keys(raw: str) -> tuple[tuple[str, str], ...]:
    keys: list[tuple[str, str]] = []
    for i, item in enumerate(raw.split(",")):
        kid, sep, secret = item.strip().partition(":")
        if not sep or not _KID.match(kid):
            raise ValueError(f"entry {i + 1} is not `kid:secret` (kid: letters, digits, _ . -)")
        if len(secret.encode()) < JWT_MIN_SECRET_BYTES:
            raise ValueError(f"secret of kid {kid!r} is shorter than {JWT_MIN_SECRET_BYTES} bytes")
        keys.append((kid, secret))
    if len({kid for kid, _ in keys}) != len(keys):
        raise ValueError("a kid is listed twice")
    return tuple(keys)


def _parse_kek(raw: str) -> str:
    parse_keyring(raw)  # raises ValueError naming the entry and what is wrong, never the key
    return raw


def _parse_trade_stream(raw: str) -> Literal["aggTrade", "trade"]:
    if raw == "aggTrade":
        return "aggTrade"
    if raw == "trade":
        return "trade"
    raise ValueError(f"{raw!r} is not a trade stream (use aggTrade or trade)")


def _parse_log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{raw!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


def _generate_jwt_keys() -> str:
    return f"demo-{secrets.token_hex(4)}:{secrets.token_urlsafe(48)}"


def _generate_kek() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
