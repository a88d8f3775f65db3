"""Sign-In with Ethereum, tokens, refresh and logout against a served web process (gunicorn)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import orjson
import pytest
from eth_account import Account

from tests.e2e.webstack import JWT_KEYS, WebStack, sign, sign_in, siwe_message

KEYS = dict(kv.split(":", 1) for kv in JWT_KEYS.split(","))


def forge(stack: WebStack, *, kid: str = "k2", key: str | None = None, **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": stack.origin, "aud": "web", "sub": "0x" + "1" * 40, "iat": now, "nbf": now,
               "exp": now + 60, "jti": "j", "fam": "nope", **claims}  # fmt: skip
    return jwt.encode(payload, key or KEYS[kid], algorithm="HS256", headers={"kid": kid})


def error(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return str(response.json()["error"])


@pytest.mark.timeout(120)
def test_sign_in_and_every_rejection_leaves_no_trace(web_stack: WebStack) -> None:
    stack = web_stack
    http = httpx.Client(base_url=stack.base_url, timeout=10)
    account = Account.create()

    def attempt(nonce: str, signer: object = None, who: object = None, **kw: object
                ) -> httpx.Response:  # fmt: skip
        fields = {"domain": stack.origin.removeprefix("http://"), "uri": stack.origin,
                  "chain_id": stack.chain_id, **kw}  # fmt: skip
        text = siwe_message(who or account, nonce, **fields)  # type: ignore[arg-type]
        return http.post("/auth/login", json={"message": text,
                                              "signature": sign(signer or who or account, text)})  # type: ignore[arg-type]  # fmt: skip

    other = Account.create()  # the per-address limit (10 a minute) is not what is tested here

    nonce = http.get("/auth/nonce").json()["nonce"]
    now = datetime.now(UTC)
    rejected = {
        "signer_mismatch": attempt(nonce, signer=Account.create()),  # forged signature
        "domain_mismatch": attempt(nonce, domain="evil.example"),
        "uri_mismatch": attempt(nonce, uri="https://evil.example"),
        # This site is http://: a message naming another scheme, or a URI of one, is not for it.
        "scheme_mismatch": attempt(
            nonce, who=other, domain="https://" + stack.origin.removeprefix("http://")
        ),
        "uri_mismatch ftp": attempt(nonce, who=other, uri=stack.origin.replace("http", "ftp")),
        "uri_mismatch https": attempt(nonce, who=other, uri=stack.origin.replace("http", "https")),
        "chain_mismatch": attempt(nonce, chain_id=5),
        "expired": attempt(nonce, expiration=now - timedelta(seconds=1)),
        "issued_at_skew": attempt(nonce, issued_at=now - timedelta(hours=1)),
        "unknown_nonce": attempt("NeverIssued1234567890"),
    }
    assert {code: error(r) for code, r in rejected.items()} == {c: c.split()[0] for c in rejected}
    assert all(r.status_code == 401 for r in rejected.values())
    bad = http.post("/auth/login", json={"message": "hello", "signature": "0x00"})
    assert (bad.status_code, error(bad)) == (400, "malformed")
    assert error(http.post("/auth/login", content=b"not json")) == "malformed"

    # A signed message is worth nothing to a client that did not ask for its nonce (the nonce's
    # cookie), and trying does not use the nonce up.
    text = siwe_message(account, nonce, domain=stack.origin.removeprefix("http://"),
                        uri=stack.origin, chain_id=stack.chain_id)  # fmt: skip
    thief = httpx.Client(base_url=stack.base_url, timeout=10)
    stolen = thief.post("/auth/login", json={"message": text, "signature": sign(account, text)})
    assert (stolen.status_code, error(stolen)) == (401, "unknown_nonce")

    # None of those consumed the nonce: it still signs in, once.
    ok = attempt(nonce)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert (body["address"], body["token_type"]) == (account.address, "Bearer")
    assert "tp_refresh=" in ok.headers["set-cookie"]
    assert "HttpOnly" in ok.headers["set-cookie"]
    assert error(attempt(nonce)) == "unknown_nonce"  # reused

    header = jwt.get_unverified_header(body["access_token"])
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert header == {"alg": "HS256", "kid": "k2", "typ": "JWT"}
    assert (claims["sub"], claims["aud"]) == (account.address, "web")
    assert claims["iss"] == stack.origin
    assert {"iat", "nbf", "exp", "jti", "fam"} <= claims.keys()

    def api(token: str) -> httpx.Response:
        return http.get("/api/symbols", headers={"Authorization": f"Bearer {token}"})

    assert api(body["access_token"]).status_code == 200
    # A token signed by the previous key (k1, still listed) verifies: keys rotate by kid.
    fam = claims["fam"]
    assert api(forge(stack, kid="k1", sub=account.address, fam=fam)).status_code == 200
    head, payload, sig = body["access_token"].split(".")
    data = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    data["sub"] = "0x" + "2" * 40
    tampered = base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()
    none_alg = jwt.encode({**claims}, None, algorithm="none", headers={"kid": "k2"})  # type: ignore[arg-type]
    refused = {
        "tampered": api(f"{head}.{tampered}.{sig}"),
        "alg none": api(none_alg),
        "unknown kid": api(forge(stack, kid="k9", key="c" * 40, fam=fam)),
        "wrong key": api(forge(stack, key="d" * 40, fam=fam)),
        "expired": api(forge(stack, fam=fam, iat=1, nbf=1, exp=2)),
        "wrong audience": api(forge(stack, fam=fam, aud="ops")),
        "wrong issuer": api(forge(stack, fam=fam, iss="https://evil.example")),
        "no jti": api(forge(stack, fam=fam, jti=None)),
    }
    codes = {what: (r.status_code, error(r)) for what, r in refused.items()}
    assert codes == {
        "tampered": (401, "invalid_token"), "alg none": (401, "invalid_token"),
        "unknown kid": (401, "invalid_token"), "wrong key": (401, "invalid_token"),
        "expired": (401, "token_expired"), "wrong audience": (401, "wrong_audience"),
        "wrong issuer": (401, "invalid_token"), "no jti": (401, "invalid_token"),
    }  # fmt: skip

    # A page of another origin cannot use the cookie routes (CSRF), whatever SameSite does.
    for path in ("/auth/refresh", "/auth/logout"):
        foreign = http.post(path, headers={"Origin": "https://evil.example"})
        assert (foreign.status_code, error(foreign)) == (403, "bad_origin")

    # Refresh rotates; presenting a rotated refresh token again revokes the whole login.
    first_cookie = http.cookies["tp_refresh"]
    refreshed = http.post("/auth/refresh")
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()["access_token"]
    assert http.cookies["tp_refresh"] != first_cookie
    assert api(second).status_code == 200
    thief = httpx.Client(base_url=stack.base_url, cookies={"tp_refresh": first_cookie})
    reuse = thief.post("/auth/refresh")
    assert (reuse.status_code, error(reuse)) == (401, "refresh_reused")
    assert error(api(second)) == "token_revoked"
    assert error(http.post("/auth/refresh")) == "token_revoked"  # the live one died with it
    assert not stack.redis.exists(stack.keys.auth_family(fam))

    # Logout revokes a fresh login's tokens.
    _, login = sign_in(http)
    token = login.json()["access_token"]
    assert api(token).status_code == 200
    out = http.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 204
    assert error(api(token)) == "token_revoked"
    assert error(http.post("/auth/refresh")) in ("refresh_unknown", "token_revoked")


@pytest.mark.timeout(120)
def test_login_attempts_are_rate_limited_per_ip_and_per_address(web_stack: WebStack) -> None:
    web = web_stack.start_web(TP_LOGIN_PER_MINUTE_ADDRESS="3", TP_LOGIN_PER_MINUTE_IP="8")
    http = httpx.Client(base_url=web.base_url, timeout=10)
    account = Account.create()
    codes = []
    for _ in range(4):  # the same address: the fourth attempt is refused before any check
        _, r = sign_in(http, account)
        codes.append(r.status_code)
    assert codes == [200, 200, 200, 429]
    limited = sign_in(http, account)[1]
    assert error(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    # Per IP: nonces and logins count; other addresses are refused too once the IP is over.
    statuses = [http.get("/auth/nonce").status_code for _ in range(8)]
    assert statuses.count(429) >= 1
    # The other web process (its own limits) still serves this IP: nothing else was affected.
    _, elsewhere = sign_in(httpx.Client(base_url=web_stack.base_url, timeout=10))
    assert elsewhere.status_code == 200


def test_pages_carry_a_content_security_policy(web_stack: WebStack) -> None:
    for path in ("/", "/ops"):
        r = httpx.get(web_stack.base_url + path, timeout=10)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
    assert "content-security-policy" not in httpx.get(web_stack.base_url + "/api/symbols").headers


def test_the_app_refuses_to_start_without_a_signing_key() -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-c", "import web.wsgi"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "TP_JWT_KEYS: required outside the demo" in result.stderr
