"""Request signing for Binance's SIGNED endpoints: HMAC-SHA256 and Ed25519. Pure, no I/O.

Binance signs ``totalParams`` = the query string followed by the body, exactly as sent
(docs/execution.md, "What we rely on from Binance"):

* HMAC keys: ``signature`` = hex HMAC-SHA256 of totalParams under the secret (case-insensitive).
* Ed25519 keys: ``signature`` = standard base64 of the Ed25519 signature of totalParams; it holds
  ``+ / =``, so it is percent-encoded on the wire, as Binance's RSA example shows. Binance's
  USD-M REST page documents HMAC and RSA; Ed25519 is documented for the WebSocket API (whose
  ``session.logon`` takes only Ed25519) and used on USD-M REST by the official connector and by
  NautilusTrader, which requires Ed25519 for every authenticated endpoint (docs/execution.md).

A :class:`Signer` holds the key material. Its ``repr`` shows only the key type and a fingerprint,
so a signer that lands in a log or a traceback's locals display leaks nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KeyType = Literal["hmac", "ed25519"]


@dataclass(frozen=True, slots=True)
class Signer:
    """Sign requests for one API key. Build with :func:`hmac_signer` or :func:`ed25519_signer`."""

    api_key: str = field(repr=False)
    key_type: KeyType
    _secret: bytes = field(repr=False)  # HMAC secret, or the Ed25519 raw private key (32 bytes)
    _ed25519: Ed25519PrivateKey | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        label = hashlib.sha256(self.api_key.encode()).hexdigest()[:12]
        return f"Signer({self.key_type}, key {label})"

    def signature(self, total_params: str) -> str:
        """Return the ``signature`` value for ``total_params``, ready to append (URL-safe)."""
        data = total_params.encode()
        if self._ed25519 is not None:
            raw = base64.b64encode(self._ed25519.sign(data)).decode()
            return quote(raw, safe="")
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def sign_query(self, params: dict[str, str | int]) -> str:
        """Return ``params`` url-encoded with ``&signature=...`` appended (timestamp included)."""
        query = urlencode(params)
        return f"{query}&signature={self.signature(query)}"


def hmac_signer(api_key: str, secret: str) -> Signer:
    return Signer(api_key, "hmac", secret.encode())


def ed25519_signer(api_key: str, private_key: bytes) -> Signer:
    """Return a signer from the 32-byte raw Ed25519 private key."""
    key = Ed25519PrivateKey.from_private_bytes(private_key)
    return Signer(api_key, "ed25519", private_key, key)


def generate_ed25519() -> tuple[bytes, str]:
    """Return a new key pair: (32-byte raw private key, PEM public key to register on Binance)."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return raw, pem
