"""Request signing: Binance's published HMAC vector, and Ed25519 signatures a verifier accepts."""

from __future__ import annotations

import base64
from urllib.parse import unquote

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from binance.signing import ed25519_signer, generate_ed25519, hmac_signer

# Binance USD-M docs, "SIGNED Endpoint Examples", Example 1 (docs/execution.md, "What we rely on
# from Binance").
API_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
PAYLOAD = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
           "&recvWindow=5000&timestamp=1591702613943")  # fmt: skip


def test_hmac_matches_the_official_vector() -> None:
    signer = hmac_signer(API_KEY, SECRET)
    assert signer.signature(PAYLOAD) == (
        "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    )


def test_ed25519_signature_is_percent_encoded_base64_that_the_public_key_verifies() -> None:
    private, pem = generate_ed25519()
    signer = ed25519_signer("k" * 64, private)
    query = signer.sign_query({"symbol": "BTCUSDT", "timestamp": 1})
    payload, _, sig = query.rpartition("&signature=")
    assert "+" not in sig
    assert "/" not in sig
    assert "=" not in sig
    public = load_pem_public_key(pem.encode())
    public.verify(base64.b64decode(unquote(sig)), payload.encode())  # type: ignore[union-attr,call-arg]


def test_a_signer_never_shows_its_key_material() -> None:
    private, _ = generate_ed25519()
    for signer in (hmac_signer(API_KEY, SECRET), ed25519_signer(API_KEY, private)):
        text = repr(signer) + str(signer)
        assert API_KEY not in text
        assert SECRET not in text
        assert private.hex() not in text
        assert base64.b64encode(private).decode() not in text
