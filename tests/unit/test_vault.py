"""Credentials at rest: bound to their owner and field, rotated by key id, never in messages."""

from __future__ import annotations

import base64
import os

import pytest

from core.vault import Vault, VaultError, parse_keyring

A = "0x" + "a" * 40
B = "0x" + "b" * 40


def key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def test_a_ciphertext_decrypts_only_for_its_owner_field_and_deployment() -> None:
    vault = Vault.from_setting("tp", key())
    token = vault.encrypt(b"hunter2-secret", address=A, purpose="secret")
    assert b"hunter2" not in token.encode()
    assert vault.decrypt(token, address=A.upper().replace("0X", "0x"), purpose="secret") == (
        b"hunter2-secret"
    )
    with pytest.raises(VaultError):
        vault.decrypt(token, address=B, purpose="secret")  # copied onto another user's record
    with pytest.raises(VaultError):
        vault.decrypt(token, address=A, purpose="candidate")  # moved to another field
    other_deployment = Vault("prod", vault.keys)
    with pytest.raises(VaultError):
        other_deployment.decrypt(token, address=A, purpose="secret")


def test_tampering_is_detected_and_the_error_names_no_secret() -> None:
    vault = Vault.from_setting("tp", key())
    token = vault.encrypt(b"topsecret", address=A, purpose="secret")
    head, body = token.rsplit(".", 1)
    flipped = head + "." + ("A" if body[0] != "A" else "B") + body[1:]
    with pytest.raises(VaultError) as info:
        vault.decrypt(flipped, address=A, purpose="secret")
    assert "topsecret" not in str(info.value)


def test_rotation_new_key_encrypts_old_keys_still_decrypt_and_rekey_moves_records() -> None:
    old = Vault.from_setting("tp", f"old:{key()}")
    token = old.encrypt(b"s", address=A, purpose="secret")
    old_key = base64.urlsafe_b64encode(old.keys[0][1]).decode()
    rotated = Vault.from_setting("tp", f"new:{key()},old:{old_key}")
    assert rotated.primary_kid == "new"
    assert rotated.decrypt(token, address=A, purpose="secret") == b"s"
    moved = rotated.reencrypt(token, address=A, purpose="secret")
    assert rotated.kid_of(moved) == "new"
    new_only = Vault("tp", rotated.keys[:1])
    assert new_only.decrypt(moved, address=A, purpose="secret") == b"s"
    with pytest.raises(VaultError, match="not configured"):
        new_only.decrypt(token, address=A, purpose="secret")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("c2hvcnQ=", "decodes to 5 bytes"), ("not base64!", "urlsafe base64"),
     ("a:QUJD", "decodes to 3 bytes"), ("bad id!:" + "A" * 44, "key id")],
)  # fmt: skip
def test_a_bad_keyring_is_named_without_echoing_the_key(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_keyring(raw)
    assert raw.rsplit(":", 1)[-1] not in str(info.value)
