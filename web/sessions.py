"""Server-side auth state in Redis: SIWE nonces, refresh-token families, login rate limits.

A login creates a *family* (``<ns>:auth:family:<fam>``: address, scope) and its first refresh
token. Refreshing marks the presented token used and issues the next one of the same family;
presenting a used token again is a theft signal and deletes the family, which revokes every access
token carrying its ``fam`` claim (they are checked against it) and every later refresh. Refresh
tokens are stored by their SHA-256 only. Keys expire on their own (nonce 5 min, family and tokens
at the refresh lifetime, sliding), so the auth keys are bounded by live logins.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

import redis

from core.errors import RefreshError
from core.keys import Keys

NONCE_TTL_S = 300
_ALPHANUM = string.ascii_letters + string.digits

# KEYS: presented token, next token, family. ARGV: family id, refresh ttl ms.
# The family id is read from the token first (HGET) and passed back in; a token whose stored
# family differs from ARGV[1] is treated as unknown.
_ROTATE = """
local t = redis.call('HMGET', KEYS[1], 'fam', 'used')
if not t[1] or t[1] ~= ARGV[1] then return {'unknown'} end
if t[2] == '1' then
  redis.call('DEL', KEYS[3])
  return {'reused'}
end
local f = redis.call('HMGET', KEYS[3], 'address', 'scope')
if not f[1] then return {'revoked'} end
redis.call('HSET', KEYS[1], 'used', '1')
redis.call('HSET', KEYS[2], 'fam', ARGV[1], 'used', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {'ok', f[1], f[2]}
"""


@dataclass(frozen=True, slots=True)
class Login:
    family: str
    address: str
    scope: str
    refresh_token: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Nonces, refresh families and rate limits of one deployment."""

    def __init__(self, client: redis.Redis, keys: Keys, *, refresh_ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.refresh_ttl_ms = refresh_ttl_s * 1000
        self._rotate = client.register_script(_ROTATE)

    # --- nonces ---
    def new_nonce(self, binder: str) -> str:
        """Return a fresh single-use nonce (22 alphanumerics, ~131 bits), valid NONCE_TTL_S,
        bound to ``binder`` (a secret the asking client keeps in a cookie; stored hashed)."""
        bound = hashlib.sha256(binder.encode()).hexdigest()
        while True:
            nonce = "".join(secrets.choice(_ALPHANUM) for _ in range(22))
            if self.client.set(self.keys.auth_nonce(nonce), bound, ex=NONCE_TTL_S, nx=True):
                return nonce

    def nonce_bound_to(self, nonce: str, binder: str | None) -> bool:
        """Whether the nonce exists and was issued to the client holding ``binder``."""
        stored: bytes | None = self.client.get(self.keys.auth_nonce(nonce))  # type: ignore[assignment]
        if stored is None or not binder:
            return False
        return hmac.compare_digest(stored, hashlib.sha256(binder.encode()).hexdigest().encode())

    def consume_nonce(self, nonce: str) -> bool:
        """Return whether the nonce was issued and unused, using it up atomically (GETDEL)."""
        return self.client.getdel(self.keys.auth_nonce(nonce)) is not None

    # --- rate limits ---
    def hit(self, kind: str, who: str, *, limit: int, now_ms: int) -> int:
        """Count one attempt; return 0 if allowed, else the seconds until the window ends."""
        minute = now_ms // 60_000
        key = self.keys.auth_rate(kind, who, minute)
        with self.client.pipeline(transaction=True) as p:
            p.incr(key)
            p.expire(key, 120)
            count = int(p.execute()[0])
        if count <= limit:
            return 0
        return max(1, 60 - (now_ms % 60_000) // 1000)

    # --- refresh families ---
    def login(self, address: str, scope: str) -> Login:
        """Start a family for a verified sign-in; return it with its first refresh token."""
        family = secrets.token_urlsafe(16)
        token = secrets.token_urlsafe(32)
        with self.client.pipeline(transaction=True) as p:
            p.hset(self.keys.auth_family(family), mapping={"address": address, "scope": scope})
            p.pexpire(self.keys.auth_family(family), self.refresh_ttl_ms)
            p.hset(self.keys.auth_refresh(token_hash(token)), mapping={"fam": family, "used": 0})
            p.pexpire(self.keys.auth_refresh(token_hash(token)), self.refresh_ttl_ms)
            p.execute()
        return Login(family, address, scope, token)

    def rotate(self, token: str) -> Login:
        """Use a refresh token once: return the family's next one; raise RefreshError."""
        key = self.keys.auth_refresh(token_hash(token))
        family = self.client.hget(key, "fam")
        if family is None:
            raise RefreshError("refresh_unknown", "unknown or expired refresh token")
        fam = family.decode() if isinstance(family, bytes) else family
        nxt = secrets.token_urlsafe(32)
        result = self._rotate(
            keys=[key, self.keys.auth_refresh(token_hash(nxt)), self.keys.auth_family(fam)],
            args=[fam, self.refresh_ttl_ms],
        )
        status = result[0].decode()
        if status == "reused":
            raise RefreshError(
                "refresh_reused", "this refresh token was already used: the session is revoked", fam
            )
        if status == "revoked":
            raise RefreshError("token_revoked", "this session was signed out", fam)
        if status != "ok":
            raise RefreshError("refresh_unknown", "unknown or expired refresh token")
        return Login(fam, result[1].decode(), result[2].decode(), nxt)

    def family_of(self, token: str) -> str | None:
        raw = self.client.hget(self.keys.auth_refresh(token_hash(token)), "fam")
        return raw.decode() if isinstance(raw, bytes) else raw

    def revoke(self, family: str) -> bool:
        """Delete a family: its refresh tokens and access tokens stop working. Return if it was."""
        return bool(self.client.delete(self.keys.auth_family(family)))

    def alive(self, family: str) -> bool:
        return bool(self.client.exists(self.keys.auth_family(family)))

    def alive_many(self, families: list[str]) -> list[bool]:
        with self.client.pipeline(transaction=False) as p:
            for fam in families:
                p.exists(self.keys.auth_family(fam))
            return [bool(x) for x in p.execute()]
