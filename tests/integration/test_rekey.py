"""Key rotation: `python -m execution.rekey` moves every stored credential to the newest key."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import redis

from core.keys import Keys
from core.vault import Vault

ROOT = Path(__file__).resolve().parents[2]
A = "0x" + "c" * 40


def key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def test_rekey_moves_records_to_the_new_key_and_reports_unreadable_ones(
    redis_url: str, namespace: str
) -> None:
    old, new = f"old:{key()}", f"new:{key()}"
    keys = Keys(namespace, 4)
    r = redis.Redis.from_url(redis_url)
    sealed = Vault.from_setting(namespace, old).encrypt(b"s3cret", address=A, purpose="secret")
    r.hset(keys.account(A), mapping={"secret": sealed, "status": "linked"})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TP_")},
           "REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_JWT_KEYS": "k:" + "x" * 40,
           "TP_MARKET": "sim",
           "TP_KEY_ENCRYPTION_KEY": f"{new},{old}"}  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "execution.rekey"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "re-encrypted 1 fields under key 'new'" in run.stdout
    moved = r.hget(keys.account(A), "secret").decode()  # type: ignore[union-attr]
    only_new = Vault.from_setting(namespace, new)
    assert only_new.decrypt(moved, address=A, purpose="secret") == b"s3cret"
    assert "s3cret" not in run.stdout + run.stderr
    # a record sealed under a key no longer configured is reported and left as it is
    r.hset(keys.account(A), "candidate", Vault.from_setting(namespace, f"gone:{key()}").encrypt(
        b"x", address=A, purpose="candidate"))  # fmt: skip
    again = subprocess.run([sys.executable, "-m", "execution.rekey"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 1
    assert "candidate: does not decrypt" in again.stdout
