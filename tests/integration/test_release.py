"""The release phase (`python -m release`): a deploy with a bad configuration is not started."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import redis

from core.keys import Keys
from core.vault import Vault
from tests.e2e.webstack import free_port

ROOT = Path(__file__).resolve().parents[2]
A = "0x" + "d" * 40


def kek(kid: str) -> str:
    return f"{kid}:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


def release(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TP_") and k != "REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "release"], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_release_passes_a_good_deploy_and_names_what_is_wrong_in_a_bad_one(
    redis_url: str, namespace: str
) -> None:
    key = kek("k2")
    good = {"REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_MARKET": "sim",
            "TP_JWT_KEYS": "k:" + "x" * 40, "TP_KEY_ENCRYPTION_KEY": key}  # fmt: skip
    run = release(**good)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0].startswith("ok   redis: Redis ")
    assert run.stdout.splitlines()[-1] == "release check passed"

    # The configuration itself: one line per problem, exit 2, nothing else tried.
    no_market = {k: v for k, v in good.items() if k != "TP_MARKET"}
    run = release(**no_market, TP_TIMEFRAMES="1m,2m")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "configuration error: TP_MARKET: required outside the demo: sim, testnet or live",
        "configuration error: TP_TIMEFRAMES: unsupported timeframe '2m' (supported: "
        + run.stderr.split("(supported: ", 1)[1].splitlines()[0],
    ]

    # A credential sealed under a key id the keyring no longer holds: users would be locked out.
    old = kek("k1")
    sealed = Vault.from_setting(namespace, old).encrypt(b"s3cret", address=A, purpose="secret")
    redis.Redis.from_url(redis_url).hset(Keys(namespace, 4).account(A), "secret", sealed)
    run = release(**good)
    assert run.returncode == 1
    assert "FAIL credentials: stored credentials use key ids TP_KEY_ENCRYPTION_KEY no longer " \
           "holds (1 under 'k1')" in run.stdout  # fmt: skip
    assert release(**{**good, "TP_KEY_ENCRYPTION_KEY": f"{key},{old}"}).returncode == 0

    # Formula plugins that do not import, and an exchange that does not answer.
    run = release(**{**good, "TP_MARKET": "live", "TP_KEY_ENCRYPTION_KEY": f"{key},{old}",
                     "TP_REST_URL": f"http://127.0.0.1:{free_port()}",
                     "TP_FORMULA_MODULES": "no_such_plugin_module"})  # fmt: skip
    assert run.returncode == 1
    assert "FAIL formulas: TP_FORMULA_MODULES: no_such_plugin_module does not import" in run.stdout
    assert "FAIL exchange: http://127.0.0.1:" in run.stdout
    assert "check TP_MARKET=live, TP_REST_URL" in run.stdout


def test_an_unreachable_redis_is_named_without_its_password() -> None:
    port = free_port()
    run = release(REDIS_URL=f"redis://:hunter2-pass@127.0.0.1:{port}/0", TP_MARKET="sim",
                  TP_JWT_KEYS="k:" + "x" * 40, TP_KEY_ENCRYPTION_KEY=kek("k"))  # fmt: skip
    assert run.returncode == 1
    assert f"FAIL redis: redis://127.0.0.1:{port}/0 does not answer" in run.stdout
    assert "hunter2" not in run.stdout + run.stderr
    assert "credentials" not in run.stdout  # not tried without Redis


def test_release_deletes_what_an_older_deploy_left_in_a_retired_queue(
    redis_url: str, namespace: str
) -> None:
    """The ``candles`` queue is read by no process since the consumer builds candles: messages
    an older deploy left there, waiting, delayed, dead or held by a dead worker, are deleted;
    the queues in use are not touched."""
    keys = Keys(namespace, 4)
    r = redis.Redis.from_url(redis_url)
    ns = keys.dramatiq_namespace()
    left = [keys.dramatiq_queue("candles"), keys.dramatiq_messages("candles"),
            keys.dramatiq_delayed_messages("candles"), keys.dramatiq_failed("candles"),
            keys.dramatiq_failed_messages("candles"), f"{ns}:__acks__.w1.candles"]  # fmt: skip
    kept = [keys.dramatiq_queue("backfill"), keys.dramatiq_messages("backfill"),
            f"{ns}:__acks__.w1.backfill"]  # fmt: skip
    for key in left + kept:  # each with a value of the type Dramatiq gives it
        if key.endswith(".msgs"):
            r.hset(key, "m1", "x")
        elif "__acks__" in key:
            r.sadd(key, "m1")
        elif key.endswith(".XQ"):
            r.zadd(key, {"m1": 1})
        else:
            r.rpush(key, "m1")
    run = release(REDIS_URL=redis_url, TP_NAMESPACE=namespace, TP_MARKET="sim",
                  TP_JWT_KEYS="k:" + "x" * 40, TP_KEY_ENCRYPTION_KEY=kek("k"))  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ok   retired queues: candles: {len(left)} leftover keys deleted" in run.stdout
    assert r.exists(*left) == 0
    assert r.exists(*kept) == len(kept)
