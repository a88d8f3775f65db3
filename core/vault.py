"""Exchange credentials at rest: AES-256-GCM under a key-encryption keyring, bound to the owner.

``TP_KEY_ENCRYPTION_KEY`` holds one or more keys, ``kid:key,kid:key`` (a bare key is kid
``k0``), each the urlsafe base64 of 32 random bytes. The first key encrypts; every listed key
decrypts, so a key rotates by prepending a new one, running ``python -m execution.rekey`` (every
record re-encrypted under the first key) and then dropping the old one.

A ciphertext is ``v1.<kid>.<nonce>.<ciphertext+tag>`` (base64url, no padding). The associated data
is ``<namespace>|<address lower-case>|<purpose>``: a ciphertext copied onto another user's record,
another deployment or another field does not decrypt (Fernet has no associated data, hence AES-GCM;
docs/execution.md, "Keys: custody"). Nonces are 96 random bits, fresh for every encryption; at the
volumes of account linking the birthday bound (2^32 messages per key) is out of reach.

Nothing here logs, and no exception message carries a plaintext or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import PipelineError

VERSION = "v1"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class VaultError(PipelineError):
    """A ciphertext is malformed, names an unknown key, or fails authentication."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_keyring(raw: str) -> tuple[tuple[str, bytes], ...]:
    """Return ``((kid, key), ...)`` from ``TP_KEY_ENCRYPTION_KEY``; raise ValueError naming why.

    The message never includes a key.
    """
    keys: list[tuple[str, bytes]] = []
    for i, item in enumerate(raw.split(",")):
        item = item.strip()
        kid, sep, encoded = item.partition(":")
        if not sep:
            kid, encoded = f"k{i}", item
        if not _KID.match(kid):
            raise ValueError(f"entry {i + 1}: key id must be 1-32 letters, digits, _ or -")
        try:
            key = base64.urlsafe_b64decode(encoded.encode())
        except (binascii.Error, ValueError):
            raise ValueError(
                f"entry {i + 1} is not urlsafe base64 (generate one with "
                "`python -c 'import base64,os;print(base64.urlsafe_b64encode(os.urandom(32)))'`)"
            ) from None
        if len(key) != 32:
            raise ValueError(f"entry {i + 1} decodes to {len(key)} bytes, a key is 32")
        keys.append((kid, key))
    if len({kid for kid, _ in keys}) != len(keys):
        raise ValueError("a key id is listed twice")
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class Vault:
    """Encrypt and decrypt small secrets for one deployment (``namespace``)."""

    namespace: str
    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_setting(cls, namespace: str, raw: str) -> Vault:
        return cls(namespace, parse_keyring(raw))

    @property
    def primary_kid(self) -> str:
        return self.keys[0][0]

    def _aad(self, address: str, purpose: str) -> bytes:
        return f"{self.namespace}|{address.lower()}|{purpose}".encode()

    def encrypt(self, plaintext: bytes, *, address: str, purpose: str) -> str:
        """Return the ciphertext of ``plaintext`` bound to ``address`` and ``purpose``."""
        kid, key = self.keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext, self._aad(address, purpose))
        return f"{VERSION}.{kid}.{_b64(nonce)}.{_b64(sealed)}"

    def decrypt(self, token: str, *, address: str, purpose: str) -> bytes:
        """Return the plaintext; raise VaultError if it is not ours, not theirs, or tampered."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise VaultError("not a v1 ciphertext")
        keys = dict(self.keys)
        key = keys.get(parts[1])
        if key is None:
            raise VaultError(f"encrypted under key id {parts[1]!r}, which is not configured")
        try:
            nonce, sealed = _unb64(parts[2]), _unb64(parts[3])
            return AESGCM(key).decrypt(nonce, sealed, self._aad(address, purpose))
        except (InvalidTag, ValueError, binascii.Error):
            raise VaultError("ciphertext does not authenticate for this owner") from None

    def kid_of(self, token: str) -> str:
        """Return the key id a ciphertext was made with ('' if malformed)."""
        parts = token.split(".")
        return parts[1] if len(parts) == 4 else ""

    def reencrypt(self, token: str, *, address: str, purpose: str) -> str:
        """Return ``token`` encrypted under the primary key (unchanged if it already is)."""
        if self.kid_of(token) == self.primary_kid:
            return token
        plain = self.decrypt(token, address=address, purpose=purpose)
        return self.encrypt(plain, address=address, purpose=purpose)


def fingerprint(api_key: str) -> str:
    """Return a short, non-reversible label of an API key for responses and logs."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]
