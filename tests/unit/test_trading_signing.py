"""HMAC signing and the timing rule, against Binance's published vectors (reference 3.2)."""

from __future__ import annotations

import pytest

from simulator.trading.errors import ApiError
from simulator.trading.signing import (
    check_timestamp,
    parse_params,
    sign,
    signed_payload,
    verify_signature,
)

SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
PAYLOAD = (
    b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    b"&recvWindow=5000&timestamp=1591702613943"
)
EXAMPLE_1 = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
SERVER_MS = 1591702613943 + 200


def code_of(call, *args) -> int:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value.code


def test_official_futures_example_1_verifies_as_query_string() -> None:
    assert sign(SECRET, PAYLOAD) == EXAMPLE_1
    verify_signature(SECRET, PAYLOAD + b"&signature=" + EXAMPLE_1.encode(), b"")


def test_official_futures_example_2_verifies_as_body() -> None:
    verify_signature(SECRET, b"", PAYLOAD + b"&signature=" + EXAMPLE_1.encode())


def test_official_spot_vector_verifies() -> None:
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    payload = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
        "&recvWindow=5000&timestamp=1499827319559"
    )
    assert sign(secret, payload) == (
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )


def test_mixed_query_and_body_are_concatenated_without_separator() -> None:
    # the published Example 3 digest only reproduces with a stray space (reference 3.2 caveat);
    # this is the digest of the same split without it
    query = b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = b"quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943"
    digest = "30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4"
    assert signed_payload(query, body + b"&signature=" + digest.encode()) == (query + body, digest)
    verify_signature(SECRET, query, body + b"&signature=" + digest.encode())


def test_signature_is_hex_case_insensitive() -> None:
    verify_signature(SECRET, PAYLOAD + b"&signature=" + EXAMPLE_1.upper().encode(), b"")


@pytest.mark.parametrize(
    ("query", "secret", "code"),
    [
        (PAYLOAD.replace(b"price=9000", b"price=9001"), SECRET, -1022),  # tampered parameter
        (PAYLOAD, SECRET[::-1], -1022),  # wrong secret
        (PAYLOAD.replace(b"BTCUSDT", b"BTC%55SDT"), SECRET, -1022),  # re-encoded, not as signed
    ],
)
def test_mismatching_signatures_are_refused(query: bytes, secret: str, code: int) -> None:
    sent = query + b"&signature=" + EXAMPLE_1.encode()
    assert code_of(verify_signature, secret, sent, b"") == code


def test_missing_signature_is_a_missing_mandatory_parameter() -> None:
    with pytest.raises(ApiError) as info:
        verify_signature(SECRET, PAYLOAD, b"")
    assert (info.value.code, info.value.msg) == (
        -1102,
        "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
    )


def test_signature_must_be_the_last_parameter() -> None:
    sent = b"signature=" + EXAMPLE_1.encode() + b"&" + PAYLOAD
    assert code_of(verify_signature, SECRET, sent, b"") == -1022


def test_query_string_wins_over_body() -> None:
    params = parse_params(b"symbol=BTCUSDT&quantity=1", b"quantity=2&price=9000")
    assert params == {"symbol": "BTCUSDT", "quantity": "1", "price": "9000"}


def test_duplicate_parameter_in_one_part_is_refused() -> None:
    assert code_of(parse_params, b"a=1&a=2", b"") == -1101


def test_percent_encoded_values_are_decoded_after_verification() -> None:
    assert parse_params(b"newClientOrderId=a%2Fb", b"") == {"newClientOrderId": "a/b"}


@pytest.mark.parametrize(
    ("timestamp", "window", "message"),
    [
        (SERVER_MS - 5001, None, "Timestamp for this request is outside of the recvWindow."),
        (SERVER_MS - 10_001, "10000", "Timestamp for this request is outside of the recvWindow."),
        (
            SERVER_MS + 1000,
            None,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        ),
    ],
)
def test_timing_rule_rejections(timestamp: int, window: str | None, message: str) -> None:
    params = {"timestamp": str(timestamp)} | ({"recvWindow": window} if window else {})
    with pytest.raises(ApiError) as info:
        check_timestamp(params, SERVER_MS)
    assert (info.value.code, info.value.msg, info.value.status) == (-1021, message, 400)


@pytest.mark.parametrize(
    ("timestamp", "window"),
    [(SERVER_MS - 5000, None), (SERVER_MS + 999, None), (SERVER_MS - 60_000, "60000")],
)
def test_timing_rule_accepts_the_window_edges(timestamp: int, window: str | None) -> None:
    params = {"timestamp": str(timestamp)} | ({"recvWindow": window} if window else {})
    check_timestamp(params, SERVER_MS)


def test_missing_timestamp_is_refused() -> None:
    assert code_of(check_timestamp, {}, SERVER_MS) == -1102
