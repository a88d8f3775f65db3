"""Ed25519 API keys: the PEM a user pastes, the base64 signature, its percent-encoding."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from simulator.trading import sign_ed25519
from simulator.trading.ed25519 import load_public_key, verify_ed25519
from simulator.trading.errors import ApiError

# RFC 8032 section 7.1, TEST 1: the private key, its public key and the empty-message signature
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
PAYLOAD = b"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.010&timestamp=1591702613943"


def pem_of(public_key: ed25519.Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(RFC_SECRET)


def wire(signature: str) -> bytes:
    return quote(signature, safe="").encode()


def code_of(public_key: ed25519.Ed25519PublicKey, query: bytes, body: bytes = b"") -> int:
    with pytest.raises(ApiError) as info:
        verify_ed25519(public_key, query, body)
    return info.value.code


def test_signature_is_the_rfc_8032_vector_in_standard_base64(key) -> None:
    assert key.public_key().public_bytes_raw() == RFC_PUBLIC
    assert sign_ed25519(key, b"") == base64.b64encode(RFC_EMPTY_SIGNATURE).decode()


def test_a_pasted_pem_public_key_loads(key) -> None:
    pem = pem_of(key.public_key())
    assert pem.startswith("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA")
    assert load_public_key(pem).public_bytes_raw() == RFC_PUBLIC
    assert load_public_key("  " + pem.strip() + "  ").public_bytes_raw() == RFC_PUBLIC


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        pem_of(ec.generate_private_key(ec.SECP256R1()).public_key()),  # type: ignore[arg-type]
    ],
)
def test_anything_but_an_ed25519_pem_is_refused(pem: str) -> None:
    with pytest.raises(ValueError, match="not"):
        load_public_key(pem)


def test_percent_encoded_signature_verifies_in_query_or_body(key) -> None:
    signature = wire(sign_ed25519(key, PAYLOAD))
    verify_ed25519(key.public_key(), PAYLOAD + b"&signature=" + signature, b"")
    verify_ed25519(key.public_key(), b"", PAYLOAD + b"&signature=" + signature)
    query, body = PAYLOAD[:30], PAYLOAD[30:]
    verify_ed25519(key.public_key(), query, body + b"&signature=" + signature)


def test_unencoded_plus_is_a_space_and_fails(key) -> None:
    for n in range(200):  # find a payload whose signature holds a '+'
        payload = PAYLOAD + b"&recvWindow=%d" % (5000 + n)
        signature = sign_ed25519(key, payload)
        if "+" in signature:
            break
    else:
        pytest.fail("no signature with '+'")
    assert code_of(key.public_key(), payload + b"&signature=" + signature.encode()) == -1022
    verify_ed25519(key.public_key(), payload + b"&signature=" + wire(signature), b"")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.swapcase(),  # base64 is case-sensitive, unlike the HMAC hex
        lambda s: s[:-4],  # truncated
        lambda s: "!" + s[1:],  # not base64
        lambda s: base64.b64encode(b"\0" * 64).decode(),  # right length, wrong value
    ],
)
def test_bad_signatures_are_1022(key, mangle) -> None:
    sent = wire(mangle(sign_ed25519(key, PAYLOAD)))
    assert code_of(key.public_key(), PAYLOAD + b"&signature=" + sent) == -1022


def test_another_key_or_a_tampered_payload_is_1022(key) -> None:
    signature = wire(sign_ed25519(key, PAYLOAD))
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    assert code_of(other, PAYLOAD + b"&signature=" + signature) == -1022
    tampered = PAYLOAD.replace(b"0.010", b"0.011")
    assert code_of(key.public_key(), tampered + b"&signature=" + signature) == -1022


def test_missing_signature_is_1102(key) -> None:
    assert code_of(key.public_key(), PAYLOAD) == -1102
