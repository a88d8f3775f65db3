"""Binance's HMAC-SHA256 request signing and timing rule, as pure functions.

``totalParams`` is the query string concatenated with the request body, no separator, exactly as
the bytes were sent; ``signature`` is the last parameter and is left out of what is signed
(reference section 3.1). The official vector (section 3.2, Example 1)::

    secret  2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9
    payload symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC
            &recvWindow=5000&timestamp=1591702613943   (one line, no break)
    hex     3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9

Timing: ``timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow``, else -1021.
``recvWindow`` defaults to 5000 and has no upper cap: the futures docs give none and their own RSA
example sends ``recvWindow=9999999``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl

from simulator.trading.errors import ApiError, mandatory

DEFAULT_RECV_WINDOW_MS = 5000
_SIGNATURE = b"signature="


def sign(secret_key: str, payload: bytes | str) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``payload`` under ``secret_key``."""
    data = payload.encode() if isinstance(payload, str) else payload
    return hmac.new(secret_key.encode(), data, hashlib.sha256).hexdigest()


def _strip_signature(part: bytes) -> tuple[bytes, bytes | None]:
    """Split ``a=1&b=2&signature=ab`` into (``a=1&b=2``, ``ab``); the signature must come last."""
    if part.startswith(_SIGNATURE):
        head, value = b"", part[len(_SIGNATURE) :]
    else:
        idx = part.rfind(b"&" + _SIGNATURE)
        if idx < 0:
            return part, None
        head, value = part[:idx], part[idx + 1 + len(_SIGNATURE) :]
    if b"&" in value:  # not the last parameter: Binance signs up to it, so the digest cannot match
        return part, value.split(b"&", 1)[0]
    return head, value


def signed_payload(query: bytes, body: bytes) -> tuple[bytes, str | None]:
    """Return (totalParams without the signature, the signature sent or None)."""
    q_head, q_sig = _strip_signature(query)
    b_head, b_sig = _strip_signature(body)
    sig = q_sig if q_sig is not None else b_sig
    return q_head + b_head, None if sig is None else sig.decode("ascii", "replace")


def verify_signature(secret_key: str, query: bytes, body: bytes) -> None:
    """Check the request's signature against the raw bytes sent.

    Raises ApiError -1102 when ``signature`` is missing and -1022 when it does not match.
    """
    payload, sent = signed_payload(query, body)
    if not sent:
        raise mandatory("signature")
    if not hmac.compare_digest(sign(secret_key, payload), sent.strip().lower()):
        raise ApiError(-1022, "Signature for this request is not valid.")


def parse_params(query: bytes, body: bytes) -> dict[str, str]:
    """Decode query string and form body into one mapping; the query string wins on conflicts.

    Raises ApiError -1101 when a part repeats a parameter.
    """
    merged: dict[str, str] = {}
    for part in (body, query):  # query last, so its values win
        seen: set[str] = set()
        for name, value in parse_qsl(part.decode("utf-8", "replace"), keep_blank_values=True):
            if name in seen:
                raise ApiError(-1101, "Duplicate values for a parameter detected.")
            seen.add(name)
            merged[name] = value
    return merged


def check_timestamp(params: Mapping[str, str], server_ms: int) -> None:
    """Apply Binance's timing rule to ``timestamp`` and ``recvWindow``.

    Raises ApiError -1102 for a missing or malformed value, -1021 outside the window.
    """
    raw_ts = params.get("timestamp", "")
    if not raw_ts.isdigit():
        raise mandatory("timestamp")
    raw_window = params.get("recvWindow")
    if raw_window is None:
        window = DEFAULT_RECV_WINDOW_MS
    elif raw_window.isdigit():
        window = int(raw_window)
    else:
        raise mandatory("recvWindow")
    timestamp = int(raw_ts)
    if timestamp >= server_ms + 1000:
        raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if server_ms - timestamp > window:
        raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
