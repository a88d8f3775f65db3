"""Binance's Ed25519 ("self-generated") API keys on REST: loading the key, signing, verifying.

The user pastes a PEM SubjectPublicKeyInfo public key; the exchange issues an API key and keeps
no secret. A SIGNED request then carries ``signature`` = standard base64 of the Ed25519 signature
of ``totalParams`` (query string + body as sent, ``&signature=...`` removed: the same bytes an
HMAC key signs, see ``signing.py``). Base64 holds ``+``, ``/`` and ``=``, so the value is
percent-encoded on the wire, as Binance's RSA example does (``%2B``, ``%2F``, ``%3D``)::

    signed    symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1&timestamp=1668481559918
    sent      symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1&timestamp=1668481559918
              &signature=<88 base64 characters, + / = percent-encoded>   (one line)

The sent value is decoded like every other form value (``%XX``; a bare ``+`` is a space, so an
unencoded signature containing ``+`` fails), then base64-decoded strictly; base64 is
case-sensitive, unlike the HMAC hex digest.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from simulator.trading.errors import ApiError, mandatory
from simulator.trading.signing import signed_payload

SIGNATURE_BYTES = 64


def sign_ed25519(private_key: Ed25519PrivateKey, payload: bytes | str) -> str:
    """Return the standard base64 (not URL-encoded) Ed25519 signature of ``payload``."""
    data = payload.encode() if isinstance(payload, str) else payload
    return base64.b64encode(private_key.sign(data)).decode("ascii")


def load_public_key(pem: str) -> Ed25519PublicKey:
    """Return the Ed25519 key of a PEM SubjectPublicKeyInfo block.

    Raises ValueError for anything else (bad PEM, an RSA or EC key).
    """
    try:
        key = load_pem_public_key(pem.strip().encode("ascii") + b"\n")
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as e:
        raise ValueError("not a PEM public key") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def verify_ed25519(public_key: Ed25519PublicKey, query: bytes, body: bytes) -> None:
    """Check an Ed25519 request signature against the raw bytes sent.

    Raises ApiError -1102 when ``signature`` is missing and -1022 when it does not verify.
    """
    payload, sent = signed_payload(query, body)
    if not sent:
        raise mandatory("signature")
    try:
        signature = base64.b64decode(unquote_plus(sent), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    try:
        if len(signature) != SIGNATURE_BYTES:
            raise InvalidSignature
        public_key.verify(signature, payload)
    except InvalidSignature:
        raise ApiError(-1022, "Signature for this request is not valid.") from None
