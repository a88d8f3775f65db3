"""Access tokens: JWTs signed by a keyring that rotates by ``kid`` (pure: no I/O).

Pinned to HS256 with secrets of at least 256 bits (``TP_JWT_KEYS``, core.config); the first key
signs, every key verifies, so a key rotates by prepending a new one and dropping the old one once
the access TTL has passed. Every claim is required (docs/stack.md, "JWT claims"): ``iss`` (the
site's origin), ``aud`` (``web`` or ``ops``), ``sub`` (the EIP-55 address), ``iat``, ``nbf``,
``exp``, ``jti``, and ``fam``, the login's refresh-token family, whose deletion revokes the token
(web/sessions.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from core.errors import TokenError as TokenError  # raised here; tests import it from here

ALGORITHM = "HS256"  # never read from the token (RFC 8725 §2.1)
AUDIENCES = ("web", "ops")
REQUIRED = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "fam"]
LEEWAY_S = 5  # clock skew between web processes


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of an access token."""

    address: str  # sub
    audience: str
    family: str
    jti: str
    expires_at_s: int


class Keyring:
    """Sign with the first key, verify with any; the algorithm is fixed."""

    def __init__(self, keys: Sequence[tuple[str, str]], *, issuer: str) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._keys = dict(keys)
        self._signing_kid = keys[0][0]
        self.issuer = issuer

    def issue(
        self, *, address: str, audience: str, family: str, ttl_s: int, now_s: int
    ) -> tuple[str, Claims]:
        """Return a signed access token and its claims."""
        if audience not in AUDIENCES:
            raise ValueError(f"unknown audience {audience!r}")
        claims = Claims(address, audience, family, secrets.token_urlsafe(16), now_s + ttl_s)
        payload = {
            "iss": self.issuer,
            "aud": audience,
            "sub": address,
            "iat": now_s,
            "nbf": now_s,
            "exp": claims.expires_at_s,
            "jti": claims.jti,
            "fam": family,
        }
        kid = self._signing_kid
        token = jwt.encode(payload, self._keys[kid], algorithm=ALGORITHM, headers={"kid": kid})
        return token, claims

    def verify(self, token: str, *, audience: str, now_s: int | None = None) -> Claims:
        """Return the claims of a valid token for ``audience``; raise TokenError otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("invalid_token", "not a JWT") from None
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise TokenError("invalid_token", "unknown signing key (kid)")
        if header.get("alg") != ALGORITHM:
            raise TokenError("invalid_token", f"algorithm must be {ALGORITHM}")
        options: dict[str, Any] = {"require": REQUIRED}
        if now_s is not None:  # tests pin the clock; PyJWT reads time itself otherwise
            options["verify_exp"] = False
            options["verify_nbf"] = False
            options["verify_iat"] = False
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options=options,  # type: ignore[arg-type]  # PyJWT's TypedDict is partial
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong_audience", f"this token is not for {audience!r}") from None
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_token", str(exc)) from None
        if now_s is not None:
            if payload["exp"] + LEEWAY_S <= now_s:
                raise TokenError("token_expired", "the access token has expired")
            if payload["nbf"] - LEEWAY_S > now_s:
                raise TokenError("invalid_token", "the token is not yet valid")
        if not all(isinstance(payload[c], str) for c in ("sub", "jti", "fam")):
            raise TokenError("invalid_token", "sub, jti and fam must be strings")
        return Claims(payload["sub"], audience, payload["fam"], payload["jti"], int(payload["exp"]))
