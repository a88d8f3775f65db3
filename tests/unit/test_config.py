"""Settings: defaults, every malformed value named in its error, secrets, unknown variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {  # the least a deployment must set (with REDIS_URL)
    "TP_MARKET": "sim",
    "TP_JWT_KEYS": "k1:" + "s" * 32,
    "TP_KEY_ENCRYPTION_KEY": "bJ0vUQ2q6hT3n1xHq4Zb5m9C7yWc3kQe1fVd8sRt2aA=",
}


def problems(env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    return dict(info.value.problems)


def test_demo_defaults_resolve_the_simulator_and_generate_secrets() -> None:
    s = Settings.from_env({"TP_DEMO": "1"})
    assert s.redis_url is None
    assert s.market.source == "sim"
    assert s.market.rest_url == "http://127.0.0.1:8765"
    assert s.market.ws_market == "ws://127.0.0.1:8766/market"
    assert s.symbols is None  # all trading perpetuals
    assert [tf.name for tf in s.timeframes] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    assert len(s.jwt_keys) == 1
    assert len(s.jwt_keys[0][1]) >= 32
    # A second run generates different secrets: they are per run, never a built-in default.
    assert Settings.from_env({"TP_DEMO": "1"}).jwt_keys != s.jwt_keys


@pytest.mark.parametrize(
    ("source", "rest", "public"),
    [
        ("live", "https://fapi.binance.com", "wss://fstream.binance.com/public"),
        ("testnet", "https://demo-fapi.binance.com", "wss://fstream.binancefuture.com/public"),
    ],
)
def test_market_sources_resolve_to_binance_routed_paths(
    source: str, rest: str, public: str
) -> None:
    s = Settings.from_env({**SECRETS, "TP_MARKET": source})
    assert s.market.rest_url == rest
    assert s.market.ws_public == public
    assert s.market.ws_private.endswith("/private")


def test_explicit_values_are_parsed() -> None:
    env = {"REDIS_URL": "redis://h:6380/2", "PORT": "8080", "TP_SYMBOLS": "BTCUSDT, ETHUSDT",
           "TP_TIMEFRAMES": "1h,1m,15s", "TP_REST_URL": "http://localhost:9/",
           "TP_STREAM_SHARDS": "16"}  # fmt: skip
    s = Settings.from_env({**SECRETS, **env})
    assert s.redis_url == "redis://h:6380/2"
    assert s.port == 8080
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert [tf.name for tf in s.timeframes] == ["15s", "1m", "1h"]  # sorted by length
    assert s.market.rest_url == "http://localhost:9"
    assert s.stream_shards == 16


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("REDIS_URL", "localhost:6379", "scheme redis"),
        ("PORT", "http", "not an integer"),
        ("PORT", "70000", "out of range"),
        ("TP_MARKET", "binance", "sim, testnet or live"),
        ("TP_REST_URL", "ftp://x", "scheme http"),
        ("TP_WS_URL", "http://x", "scheme ws"),
        ("TP_SYMBOLS", "btcusdt", "not a symbol"),
        ("TP_SYMBOLS", "BTCUSDT,BTCUSDT", "listed twice"),
        ("TP_SYMBOLS", ",", "empty symbol list"),
        ("TP_TIMEFRAMES", "1m,7m", "unsupported timeframe '7m'"),
        ("TP_TIMEFRAMES", "3d", "unsupported timeframe '3d'"),
        ("TP_NAMESPACE", "a{b}", "not valid"),
        ("TP_STREAM_SHARDS", "0", "out of range"),
        ("TP_STREAM_MAXLEN", "10", "out of range"),
        ("TP_DEMO", "maybe", "not a boolean"),
        ("TP_LOG_LEVEL", "LOUD", "not a log level"),
        ("TP_TRADE_STREAM", "bookTicker", "aggTrade or trade"),
        ("TP_FEED_MAX_STREAMS", "2000", "out of range"),
        ("TP_FEED_BUFFER_MAX", "lots", "not an integer"),
        ("TP_JWT_KEYS", "k1:short", "shorter than 32 bytes"),
        ("TP_JWT_KEYS", "nocolon" + "x" * 40, "not `kid:secret`"),
        ("TP_KEY_ENCRYPTION_KEY", "not base64!", "urlsafe base64"),
        ("TP_KEY_ENCRYPTION_KEY", "c2hvcnQ=", "decodes to 5 bytes"),
    ],
)
def test_each_malformed_value_is_named_with_what_is_wrong(
    var: str, value: str, fragment: str
) -> None:
    found = problems({**SECRETS, var: value})
    assert list(found) == [var]
    assert fragment in found[var]


def test_secrets_are_required_outside_the_demo_and_never_echoed() -> None:
    found = problems({"TP_MARKET": "sim"})
    assert set(found) == {"TP_JWT_KEYS", "TP_KEY_ENCRYPTION_KEY"}
    assert "required outside the demo" in found["TP_JWT_KEYS"]
    bad_secret = "k1:" + "hunter2"
    assert "hunter2" not in problems({**SECRETS, "TP_JWT_KEYS": bad_secret})["TP_JWT_KEYS"]


def test_the_market_is_required_outside_the_demo() -> None:
    env = {k: v for k, v in SECRETS.items() if k != "TP_MARKET"}
    assert problems(env) == {"TP_MARKET": "required outside the demo: sim, testnet or live"}
    assert Settings.from_env({"TP_DEMO": "1"}).market.source == "sim"


def test_unknown_prefixed_variable_is_rejected_with_a_suggestion() -> None:
    found = problems({**SECRETS, "TP_SYMBOL": "BTCUSDT"})
    assert found == {"TP_SYMBOL": "unknown setting (did you mean TP_SYMBOLS?)"}


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"PORT": "x", "TP_MARKET": "y"})
    assert {"PORT", "TP_MARKET", "TP_JWT_KEYS", "TP_KEY_ENCRYPTION_KEY"} <= set(found)


def test_settings_are_frozen() -> None:
    s = Settings.from_env({"TP_DEMO": "1"})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_require_redis_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL: not set"):
        Settings.from_env({"TP_DEMO": "1"}).require_redis_url()


def test_start_up_failure_is_one_line_per_problem_and_no_traceback() -> None:
    code = "from core.config import load_settings; load_settings()"
    env = {"PATH": "/usr/bin:/bin", **SECRETS, "TP_MARKET": "mars"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "configuration error: TP_MARKET: 'mars' is not a market source (use sim, testnet or live)"
    ]


def test_signals_default_to_the_builtins_and_read_a_toml_file(tmp_path: Path) -> None:
    s = Settings.from_env({"TP_DEMO": "1"})
    assert [(x.name, x.formula, x.symbols) for x in s.signals.specs][:2] == [
        ("ema_cross", "ema_cross", None), ("rsi", "rsi", None)]  # fmt: skip
    path = tmp_path / "signals.toml"
    path.write_text('[[signal]]\nname = "ema_fast"\nformula = "ema_cross"\n'
                    'params = { fast = 9, slow = 21 }\nsymbols = ["BTCUSDT"]\n'
                    'timeframes = ["1m", "5m"]\n')  # fmt: skip
    assert Settings.from_env({"TP_DEMO": "1", "TP_SIGNALS_FILE": "none"}).signals.specs == ()
    (spec,) = Settings.from_env({"TP_DEMO": "1", "TP_SIGNALS_FILE": str(path)}).signals.specs
    assert spec.name == "ema_fast"
    assert spec.params == (("fast", 9), ("slow", 21))
    assert (spec.symbols, spec.timeframes) == (("BTCUSDT",), ("1m", "5m"))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[[signal]]\nformula = 1\n", "needs formula"),
        ('[[signal]]\nformula = "rsi"\nparams = { period = "x" }\n', "params must be"),
        ('[[signal]]\nformula = "rsi"\ntimeframes = ["7m"]\n', "7m"),
        ('[[signal]]\nformula = "rsi"\nsymbols = ["btc usdt"]\n', "not a symbol"),
        ('[[signal]]\nformula = "rsi"\ncolour = "red"\n', "unknown keys"),
        ('[[signal]]\nformula = "rsi"\n[[signal]]\nformula = "rsi"\n', "used twice"),
        ("formula = ", "not valid TOML"),
        ("x = 1\n", "[[signal]] tables"),
    ],
)
def test_a_bad_signals_file_is_named_with_what_is_wrong(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "signals.toml"
    path.write_text(text)
    found = problems({"TP_DEMO": "1", "TP_SIGNALS_FILE": str(path)})
    assert complaint in found["TP_SIGNALS_FILE"], found
    missing = problems({"TP_DEMO": "1", "TP_SIGNALS_FILE": str(tmp_path / "nope.toml")})
    assert "cannot read" in missing["TP_SIGNALS_FILE"]
    assert (
        "is not a module name"
        in problems({"TP_DEMO": "1", "TP_FORMULA_MODULES": "a b"})["TP_FORMULA_MODULES"]
    )


def test_the_page_works_at_localhost_and_127_0_0_1_unless_origins_are_configured() -> None:
    s = Settings.from_env({**SECRETS, "PORT": "5123"})
    assert s.web.origin == "http://localhost:5123"
    assert s.web.origins == ("http://localhost:5123", "http://127.0.0.1:5123")
    s = Settings.from_env({**SECRETS, "TP_WEB_ORIGIN": "https://trade.example.com"})
    assert s.web.origins == ("https://trade.example.com",)
    extra = "https://www.example.com, http://10.0.0.5:5000"
    s = Settings.from_env(
        {**SECRETS, "TP_WEB_ORIGIN": "https://trade.example.com", "TP_WEB_ORIGINS": extra}
    )
    assert s.web.origins == ("https://trade.example.com", "https://www.example.com",
                             "http://10.0.0.5:5000")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**SECRETS, "TP_WEB_ORIGINS": "https://example.com/page"})
    assert "TP_WEB_ORIGINS" in str(err.value)


def test_tls_redis_settings_travel_in_the_connection_url(tmp_path: Path) -> None:
    plain = Settings.from_env({**SECRETS, "REDIS_URL": "rediss://:pw@h:6380"})
    assert plain.require_redis_url() == "rediss://:pw@h:6380"  # verified against system CAs
    heroku = {**SECRETS, "REDIS_URL": "rediss://:pw@h:6380", "TP_REDIS_TLS": "no-verify"}
    assert Settings.from_env(heroku).require_redis_url() == "rediss://:pw@h:6380?ssl_cert_reqs=none"
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    own_ca = {**SECRETS, "REDIS_URL": "rediss://h:6380/0?db=1", "TP_REDIS_CA_FILE": str(ca)}
    url = Settings.from_env(own_ca).require_redis_url()
    assert url == f"rediss://h:6380/0?db=1&ssl_ca_certs={str(ca).replace('/', '%2F')}"
    # Not TLS: nothing is added.
    local = {**SECRETS, "REDIS_URL": "redis://h:6379", "TP_REDIS_TLS": "no-verify"}
    assert Settings.from_env(local).require_redis_url() == "redis://h:6379"
    assert problems({**SECRETS, "TP_REDIS_TLS": "off", "TP_REDIS_CA_FILE": "/nope"}) == {
        "TP_REDIS_TLS": "'off' is neither verify nor no-verify",
        "TP_REDIS_CA_FILE": "no such file: /nope",
    }


def test_market_data_shares_the_control_redis_unless_given_its_own_or_a_cluster() -> None:
    base = {**SECRETS, "REDIS_URL": "redis://control:6379/0"}
    shared = Settings.from_env(base).market_redis()
    assert (shared.urls, shared.cluster, shared.shared) == (("redis://control:6379/0",), False,
                                                            True)  # fmt: skip
    own = Settings.from_env({**base, "TP_MARKET_REDIS_URL": "redis://md:6380/0"}).market_redis()
    assert (own.urls, own.cluster, own.shared) == (("redis://md:6380/0",), False, False)
    seeds = "rediss://:pw@n1:7000, rediss://:pw@n2:7001"
    env = {**base, "TP_MARKET_REDIS_URL": seeds, "TP_MARKET_REDIS_CLUSTER": "1",
           "TP_REDIS_TLS": "no-verify"}  # fmt: skip
    cluster = Settings.from_env(env).market_redis()
    assert cluster.cluster
    assert not cluster.shared
    # The TLS settings of REDIS_URL apply to the market-data Redis too.
    assert cluster.urls == ("rediss://:pw@n1:7000?ssl_cert_reqs=none",
                            "rediss://:pw@n2:7001?ssl_cert_reqs=none")  # fmt: skip


def test_a_seed_list_without_cluster_mode_and_cluster_mode_without_seeds_are_refused() -> None:
    base = {**SECRETS, "REDIS_URL": "redis://control:6379/0"}
    got = problems({**base, "TP_MARKET_REDIS_URL": "redis://a:1,redis://b:2"})
    assert "TP_MARKET_REDIS_CLUSTER=1" in got["TP_MARKET_REDIS_URL"]
    assert (
        "TP_MARKET_REDIS_URL"
        in problems({**base, "TP_MARKET_REDIS_CLUSTER": "1"})["TP_MARKET_REDIS_CLUSTER"]
    )
    assert (
        "scheme redis or rediss"
        in problems({**base, "TP_MARKET_REDIS_URL": "http://x:1"})["TP_MARKET_REDIS_URL"]
    )


@pytest.mark.parametrize(("tick_ms", "phases"), [("50", 5), ("150", 15), ("20", 2), ("5000", 16)])
def test_the_fan_out_runs_a_round_about_every_10_ms_and_at_most_16_per_tick(
    tick_ms: str, phases: int
) -> None:
    s = Settings.from_env({**SECRETS, "TP_MARKET": "sim", "TP_WEB_TICK_MS": tick_ms})
    assert s.web.phases == phases
    assert Settings.from_env({"TP_DEMO": "1"}).web.tick_ms == 50  # the default
