"""Access tokens (web/tokens.py): pinned algorithm, required claims, rotation by kid."""

from __future__ import annotations

import jwt
import pytest

from web.tokens import Keyring, TokenError

A, B = "a" * 40, "b" * 40
ISS = "https://trade.example"


def issue(ring: Keyring, **kw: object) -> str:
    args = {"address": "0x" + "1" * 40, "audience": "web", "family": "f1", "ttl_s": 600,
            "now_s": 1_000_000, **kw}  # fmt: skip
    return ring.issue(**args)[0]  # type: ignore[arg-type]


def code(ring: Keyring, token: str, audience: str = "web", now_s: int = 1_000_100) -> str:
    with pytest.raises(TokenError) as exc:
        ring.verify(token, audience=audience, now_s=now_s)
    return exc.value.code


def test_a_token_verifies_with_its_claims_and_keys_rotate_by_kid() -> None:
    old = Keyring([("k1", A)], issuer=ISS)
    token = issue(old)
    claims = Keyring([("k2", B), ("k1", A)], issuer=ISS).verify(token, audience="web",
                                                                now_s=1_000_100)  # fmt: skip
    assert (claims.address, claims.family, claims.expires_at_s) == (
        "0x" + "1" * 40,
        "f1",
        1_000_600,
    )
    assert (
        jwt.get_unverified_header(issue(Keyring([("k2", B), ("k1", A)], issuer=ISS)))["kid"] == "k2"
    )
    assert code(Keyring([("k2", B)], issuer=ISS), token) == "invalid_token"  # k1 retired


def test_every_forgery_and_misuse_is_refused_with_its_code() -> None:
    ring = Keyring([("k1", A)], issuer=ISS)
    good = issue(ring)
    payload = jwt.decode(good, options={"verify_signature": False})
    assert code(ring, good, now_s=1_000_700) == "token_expired"
    assert code(ring, good, now_s=999_000) == "invalid_token"  # not yet valid
    assert code(ring, issue(ring, audience="ops")) == "wrong_audience"
    assert (
        code(ring, jwt.encode(payload, None, algorithm="none", headers={"kid": "k1"}))
        == "invalid_token"
    )  # type: ignore[arg-type]
    assert (
        code(ring, jwt.encode(payload, A * 2, algorithm="HS512", headers={"kid": "k1"}))
        == "invalid_token"
    )
    assert (
        code(ring, jwt.encode(payload, B, algorithm="HS256", headers={"kid": "k1"}))
        == "invalid_token"
    )
    assert code(ring, jwt.encode(payload, A, algorithm="HS256")) == "invalid_token"  # no kid
    for claim in ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "fam"):
        partial = {k: v for k, v in payload.items() if k != claim}
        forged = jwt.encode(partial, A, algorithm="HS256", headers={"kid": "k1"})
        assert code(ring, forged) == "invalid_token", claim
    other_issuer = Keyring([("k1", A)], issuer="https://evil.example")
    assert code(ring, issue(other_issuer)) == "invalid_token"
    assert code(ring, "not.a.jwt") == "invalid_token"
    head, body, sig = good.split(".")
    assert code(ring, f"{head}.{body}x.{sig}") == "invalid_token"
