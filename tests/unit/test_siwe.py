"""Sign-In with Ethereum: spruceid's published vectors, then one targeted mutation per rejection.

Every rejection asserts the exact ``SiweError.code``, so a check that fails for the wrong reason
(say, a grammar error where a signature error was meant) fails the test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address

from web.siwe import (
    MAX_MESSAGE_BYTES,
    SiweError,
    format_message,
    parse_message,
    recover_signer,
    verify,
)

VECTORS = Path(__file__).parents[1] / "fixtures" / "siwe"
CAMEL = {
    "chainId": "chain_id",
    "issuedAt": "issued_at",
    "expirationTime": "expiration_time",
    "notBefore": "not_before",
    "requestId": "request_id",
}
VERIFIER_INPUTS = {"signature", "time", "domainBinding", "matchNonce"}  # not message fields


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())  # type: ignore[no-any-return]


def fields(vector: dict[str, Any]) -> dict[str, Any]:
    """Return a vector's message fields as format_message keywords."""
    return {CAMEL.get(k, k): v for k, v in vector.items() if k not in VERIFIER_INPUTS}


def epoch_ms(rfc3339: str) -> int:
    return (datetime.fromisoformat(rfc3339) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def verify_vector(vector: dict[str, Any]) -> str:
    """Verify a published vector as the relying party it describes; return the signer."""
    text = format_message(**fields(vector))
    issued_ms = parse_message(text).issued_at_ms
    now_ms = epoch_ms(vector["time"]) if "time" in vector else issued_ms
    message = verify(
        text,
        vector["signature"],
        domain=vector.get("domainBinding", vector["domain"]),
        uri=vector["uri"],
        chain_id=vector["chainId"],
        now_ms=now_ms,
        scheme="https",
        nonce=vector.get("matchNonce", vector["nonce"]),
        # The vectors predate any issued-at freshness rule ("not yet valid" is checked in 2101
        # for a message issued in 2022), so the allowance spans exactly the gap.
        max_skew_ms=abs(now_ms - issued_ms),
    )
    return message.address


# --- spruceid/siwe verification vectors ---------------------------------------------------------

VERIFICATION_POSITIVE = load("verification_positive.json")
VERIFICATION_NEGATIVE = load("verification_negative.json")
VERIFICATION_NEGATIVE_CODES = {
    "expired message": "expired",
    "domain binding": "domain_mismatch",
    "custom time": "expired",
    "custom nonce": "nonce_mismatch",
    "malformed signature": "bad_signature",  # 131 hex digits
    "wrong signature": "signer_mismatch",
    "not yet valid": "not_yet_valid",
    "invalid issuedAt": "malformed",  # February 31st
    "invalid notBefore": "malformed",
    "invalid expirationTime": "malformed",
}


@pytest.mark.parametrize("name", VERIFICATION_POSITIVE)
def test_published_positive_vector_verifies(name: str) -> None:
    vector = VERIFICATION_POSITIVE[name]
    assert verify_vector(vector) == vector["address"]


def test_every_published_negative_vector_has_an_expected_code() -> None:
    assert set(VERIFICATION_NEGATIVE) == set(VERIFICATION_NEGATIVE_CODES)


@pytest.mark.parametrize(("name", "code"), VERIFICATION_NEGATIVE_CODES.items())
def test_published_negative_vector_is_rejected(name: str, code: str) -> None:
    with pytest.raises(SiweError) as caught:
        verify_vector(VERIFICATION_NEGATIVE[name])
    assert caught.value.code == code


def test_stack_notes_vector_text_is_what_format_message_builds() -> None:
    text = (
        "login.xyz wants you to sign in with your Ethereum account:\n"
        "0x9D85ca56217D2bb651b00f15e694EB7E713637D4\n\n"
        "Sign-In With Ethereum Example Statement\n\n"
        "URI: https://login.xyz\nVersion: 1\nChain ID: 1\nNonce: bTyXgcQxn2htgkjJn\n"
        "Issued At: 2022-01-27T17:09:38.578Z\nExpiration Time: 2100-01-07T14:31:43.952Z"
    )
    vector = VERIFICATION_POSITIVE["example message"]
    assert format_message(**fields(vector)) == text
    assert recover_signer(text, vector["signature"]) == vector["address"]


# --- spruceid/siwe parsing vectors -------------------------------------------------------------

PARSING_POSITIVE = load("parsing_positive.json")
PARSING_NEGATIVE = load("parsing_negative.json")
LOWERCASE_ADDRESS = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"  # in five older negative vectors
NOT_MALFORMED = {"wrong version": "bad_version", "address not EIP-55": "bad_address_checksum"}
VALID_DESPITE_NAME = {"version not 1"}  # its text says "Version: 1"


@pytest.mark.parametrize("name", PARSING_POSITIVE)
def test_published_message_parses_to_its_fields_and_back(name: str) -> None:
    vector = PARSING_POSITIVE[name]
    message = parse_message(vector["message"])
    expected = {
        "scheme": None,
        "statement": None,
        "expiration_time": None,
        "not_before": None,
        "request_id": None,
        **fields(vector["fields"]),
    }
    expected["chain_id"] = int(expected["chain_id"])
    expected["resources"] = tuple(expected.get("resources", ()))
    assert {key: getattr(message, key) for key in expected} == expected
    assert message.to_text() == vector["message"]
    assert parse_message(message.to_text()) == message


@pytest.mark.parametrize("name", sorted(set(PARSING_NEGATIVE) - VALID_DESPITE_NAME))
def test_published_bad_message_is_rejected(name: str) -> None:
    text = PARSING_NEGATIVE[name]
    if LOWERCASE_ADDRESS in text:  # rejected for its address first; then reach the named defect
        with pytest.raises(SiweError) as first:
            parse_message(text)
        assert first.value.code == "bad_address_checksum"
        text = text.replace(LOWERCASE_ADDRESS, to_checksum_address(LOWERCASE_ADDRESS))
    with pytest.raises(SiweError) as caught:
        parse_message(text)
    assert caught.value.code == NOT_MALFORMED.get(name, "malformed")


def test_negative_vector_named_version_not_1_is_in_fact_valid() -> None:
    assert parse_message(PARSING_NEGATIVE["version not 1"]).version == "1"


INVALID_URIS = load("invalid_uris.json")


@pytest.mark.parametrize("name", INVALID_URIS)
def test_published_invalid_uri_is_rejected(name: str) -> None:
    with pytest.raises(SiweError) as caught:
        parse_message(INVALID_URIS[name])
    assert caught.value.code == "malformed"
    assert str(caught.value).startswith("invalid uri")


def test_invalid_uri_template_parses_with_a_valid_uri() -> None:
    text = next(iter(INVALID_URIS.values())).replace("uri://[::0.0.0.256]/p/path", "uri://[::1]/p")
    assert parse_message(text).uri == "uri://[::1]/p"


NEGATIVE_OBJECTS = load("parsing_negative_objects.json")
OBJECT_CODES = {"address not EIP-55": "bad_address_checksum", "version not 1": "bad_version"}


@pytest.mark.parametrize("name", NEGATIVE_OBJECTS)
def test_published_bad_object_does_not_serialize(name: str) -> None:
    kwargs = fields(NEGATIVE_OBJECTS[name])
    if name == "missing version":  # format_message defaults the version to "1"
        assert parse_message(format_message(**kwargs)).version == "1"
    elif name.startswith("missing "):
        with pytest.raises(TypeError, match="required keyword-only argument"):
            format_message(**kwargs)
    else:
        with pytest.raises(SiweError) as caught:
            format_message(**kwargs)
        assert caught.value.code == OBJECT_CODES.get(name, "malformed")


MESSAGE_OBJECTS = load("message_objects.json")


@pytest.mark.parametrize("name", MESSAGE_OBJECTS)
def test_published_message_object(name: str) -> None:
    vector = MESSAGE_OBJECTS[name]
    kwargs = fields(vector["msg"])
    if vector["error"] == "none":
        message = parse_message(format_message(**kwargs))
        assert message.resources == tuple(kwargs.get("resources", ()))
        return
    with pytest.raises(SiweError) as caught:
        format_message(**kwargs)
    expected = "bad_address_checksum" if "EIP-55" in vector["error"] else "malformed"
    assert caught.value.code == expected


VALID_CHARS, INVALID_CHARS = load("valid_chars.json"), load("invalid_chars.json")
PLACE = {  # where each grammar rule's input goes in a whole message
    "scheme": lambda v: {"scheme": v},
    "statement": lambda v: {"statement": v},
    "pct-encoded": lambda v: {"uri": f"https://service.org/{v}"},
    "userinfo": lambda v: {"uri": f"https://{v}@service.org"},
    "IPvFuture": lambda v: {"uri": f"https://[{v}]/"},
    "reg-name": lambda v: {"uri": f"https://{v}/"},
    "segment-nz": lambda v: {"uri": f"urn:{v}"},
    "fragment": lambda v: {"uri": f"https://service.org#{v}"},
}
PLACEABLE_INVALID = [n for n, v in INVALID_CHARS.items() if v["rule"] in ("scheme", "statement")]


@pytest.mark.parametrize("name", VALID_CHARS)
def test_published_valid_characters_parse(name: str) -> None:
    vector = VALID_CHARS[name]
    text = format_message(**{**BASE, **PLACE[vector["rule"]](vector["input"])})
    assert parse_message(text).to_text() == text


@pytest.mark.parametrize("name", PLACEABLE_INVALID)
def test_published_invalid_characters_are_rejected(name: str) -> None:
    vector = INVALID_CHARS[name]
    with pytest.raises(SiweError) as caught:
        format_message(**{**BASE, **PLACE[vector["rule"]](vector["input"])})
    assert caught.value.code == "malformed"


# --- fresh keys and targeted mutations ----------------------------------------------------------

ACCOUNT, OTHER = Account.create(), Account.create()
ISSUED_AT = "2026-11-24T12:00:00.000Z"
NOW = epoch_ms(ISSUED_AT) + 5_000
BASE: dict[str, Any] = {
    "domain": "app.example.com",
    "address": ACCOUNT.address,
    "statement": "Sign in to tradepipe",
    "uri": "https://app.example.com/login",
    "chain_id": 1,
    "nonce": "Abc123xyz789QQ",
    "issued_at": ISSUED_AT,
    "expiration_time": "2026-11-24T12:10:00.000Z",
}
EXPECT: dict[str, Any] = {
    "domain": "app.example.com",
    "uri": "https://app.example.com/login",
    "chain_id": 1,
    "now_ms": NOW,
    "nonce": "Abc123xyz789QQ",
}


def sign(text: str, account: Any = ACCOUNT) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def signed(**overrides: Any) -> tuple[str, str]:
    text = format_message(**{**BASE, **overrides})
    return text, sign(text)


def rejection(text: str, signature: str, **expect: Any) -> str:
    """Return the code verify() rejects with; fail the test if it accepts."""
    with pytest.raises(SiweError) as caught:
        verify(text, signature, **{**EXPECT, **expect})
    return caught.value.code


def test_message_signed_with_a_fresh_key_verifies() -> None:
    text, signature = signed(not_before=ISSUED_AT, request_id="req-1", resources=["ipfs://Qm1"])
    message = verify(text, signature, **EXPECT)
    assert message.address == ACCOUNT.address == recover_signer(text, signature)
    assert (message.issued_at_ms, message.expiration_time_ms) == (NOW - 5_000, NOW + 595_000)
    assert message.to_text() == text


def test_signature_from_another_key_is_rejected() -> None:
    text, _ = signed()
    assert rejection(text, sign(text, OTHER)) == "signer_mismatch"


def test_text_changed_after_signing_is_rejected() -> None:
    text, signature = signed()
    assert rejection(text.replace("tradepipe", "tradepipe!"), signature) == "signer_mismatch"


def test_signature_covers_the_raw_text_not_a_reserialization() -> None:
    text = format_message(**BASE).replace("Chain ID: 1", "Chain ID: 01")  # 1*DIGIT allows it
    assert parse_message(text).to_text() != text
    assert verify(text, sign(text), **EXPECT).chain_id == 1


@pytest.mark.parametrize(
    ("message_domain", "expected_domain", "code"),
    [
        ("app.example.com", "evil.example.com", "domain_mismatch"),
        ("app.example.com:8443", "app.example.com", "domain_mismatch"),
        ("app.example.com", "app.example.com:443", "domain_mismatch"),
        ("user@app.example.com", "app.example.com", "domain_mismatch"),
        ("APP.Example.com", "app.example.COM", None),
        ("[::1]:8080", "[::1]:8080", None),
    ],
)
def test_domain_host_is_case_insensitive_and_port_exact(
    message_domain: str, expected_domain: str, code: str | None
) -> None:
    text, signature = signed(domain=message_domain)
    if code is None:
        assert verify(text, signature, **{**EXPECT, "domain": expected_domain})
    else:
        assert rejection(text, signature, domain=expected_domain) == code


@pytest.mark.parametrize(
    ("message_scheme", "expected_scheme", "code"),
    [
        ("http", "https", "scheme_mismatch"),
        (None, "http", "scheme_mismatch"),
        (None, "https", None),
        ("HTTPS", "https", None),
        ("http", None, None),  # not checked unless asked for
    ],
)
def test_scheme_absent_means_https(
    message_scheme: str | None, expected_scheme: str | None, code: str | None
) -> None:
    text, signature = signed(scheme=message_scheme)
    if code is None:
        assert verify(text, signature, **{**EXPECT, "scheme": expected_scheme})
    else:
        assert rejection(text, signature, scheme=expected_scheme) == code


def test_each_expected_value_must_match() -> None:
    text, signature = signed()
    assert rejection(text, signature, uri="https://app.example.com/other") == "uri_mismatch"
    assert rejection(text, signature, chain_id=137) == "chain_mismatch"
    assert rejection(text, signature, nonce="Zzz999zzz999") == "nonce_mismatch"
    assert verify(text, signature, **{**EXPECT, "uri": None, "nonce": None})


def test_checks_run_in_the_documented_order() -> None:
    text = format_message(**BASE)
    late = epoch_ms("2030-01-01T00:00:00Z")
    assert rejection(text, "0x00", domain="x.example", now_ms=late) == "domain_mismatch"
    assert rejection(text, "0x00", chain_id=5, now_ms=late) == "chain_mismatch"
    assert rejection(text, "0x00", now_ms=late) == "expired"
    assert rejection(text, "0x00") == "bad_signature"


def test_expiry_and_not_before_bounds() -> None:
    expires = epoch_ms("2026-11-24T12:10:00Z")
    text, signature = signed(not_before="2026-11-24T12:01:00Z")
    starts = epoch_ms("2026-11-24T12:01:00Z")
    assert rejection(text, signature, now_ms=expires, max_skew_ms=10**6) == "expired"
    assert verify(text, signature, **{**EXPECT, "now_ms": expires - 1, "max_skew_ms": 10**6})
    assert rejection(text, signature, now_ms=starts - 1) == "not_yet_valid"
    assert verify(text, signature, **{**EXPECT, "now_ms": starts})


def test_issued_at_must_be_within_the_skew_either_way() -> None:
    text, signature = signed(expiration_time=None)
    issued = epoch_ms(ISSUED_AT)
    assert rejection(text, signature, now_ms=issued + 300_001) == "issued_at_skew"  # too old
    assert rejection(text, signature, now_ms=issued - 300_001) == "issued_at_skew"  # future
    for now_ms in (issued - 300_000, issued + 300_000):
        assert verify(text, signature, **{**EXPECT, "now_ms": now_ms})


@pytest.mark.parametrize("case", ["flip one letter", "all lower", "all upper"])
def test_address_without_a_valid_checksum_is_rejected(case: str) -> None:
    address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
    bad = {
        "flip one letter": address.replace("aAeb", "aaeb"),
        "all lower": address.lower(),
        "all upper": "0x" + address[2:].upper(),
    }[case]
    text = format_message(**BASE).replace(ACCOUNT.address, bad)
    with pytest.raises(SiweError) as caught:
        parse_message(text)
    assert caught.value.code == "bad_address_checksum"
    assert parse_message(text.replace(bad, address)).address == address


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("\n", "\r\n"),  # CRLF
        lambda t: t + "\n",  # trailing LF
        lambda t: t.replace("URI: ", "URI:  "),  # double space
        lambda t: t.replace("Nonce: Abc123xyz789QQ", "Nonce: Abc1234"),  # 7 characters
        lambda t: t.replace("Nonce: Abc123xyz789QQ", "Nonce: Abc-123-xyz"),
        lambda t: t.replace("tradepipe", "tradepipé"),  # not ASCII
        lambda t: t.replace("tradepipe", "trade|pipe"),  # not in the statement's characters
        lambda t: t.replace("\n\nURI", "\nURI"),
        lambda t: t.replace(" wants you", "  wants you"),
    ],
)
def test_text_off_the_grammar_is_malformed(mutate: Any) -> None:
    text = format_message(**BASE)
    with pytest.raises(SiweError) as caught:
        verify(mutate(text), sign(mutate(text)), **EXPECT)
    assert caught.value.code == "malformed"


def test_version_other_than_1_is_rejected() -> None:
    text = format_message(**BASE).replace("Version: 1", "Version: 2")
    assert rejection(text, sign(text)) == "bad_version"


def padded(size: int) -> str:
    """Return a valid message of exactly ``size`` characters (padded with resources)."""
    text = format_message(**BASE) + "\nResources:"
    while (left := size - len(text)) > 0:
        part = left if left <= 921 else min(921, left - 21)  # never leave less than one resource
        text += "\n- https://r.example/" + "a" * (part - 21)
    return text


def test_message_size_limit_is_inclusive_and_checked_first() -> None:
    at_limit = padded(MAX_MESSAGE_BYTES)
    assert len(at_limit.encode()) == MAX_MESSAGE_BYTES
    assert verify(at_limit, sign(at_limit), **EXPECT)
    over = at_limit + "a"
    assert rejection(over, sign(over)) == "too_long"
    assert rejection("x" * 100_000, "0x00") == "too_long"


@pytest.mark.parametrize(
    "overrides",
    [{"nonce": "a" * 129}, {"statement": "a" * 1025}, {"resources": ["urn:x"] * 65}],
)
def test_each_field_is_bounded(overrides: dict[str, Any]) -> None:
    with pytest.raises(SiweError) as caught:
        format_message(**{**BASE, **overrides})
    assert caught.value.code == "too_long"


def test_recovery_byte_0_1_and_27_28_are_both_accepted() -> None:
    text, signature = signed()
    v = int(signature[-2:], 16)
    assert v in (27, 28)
    for other_v in (v, v - 27):
        assert verify(text, f"{signature[:-2]}{other_v:02x}", **EXPECT)
    for bad_v in (v + 8, 29, 2):  # EIP-155-style and out of range
        assert rejection(text, f"{signature[:-2]}{bad_v:02x}") == "bad_signature"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[2:],  # no 0x
        lambda s: s[:-2],  # 64 bytes
        lambda s: s + "00",  # 66 bytes
        lambda s: s[:10] + "zz" + s[12:],  # not hex
        lambda s: "0x" + "00" * 64 + "1b",  # r = s = 0: no curve point
        lambda s: "",
    ],
)
def test_malformed_signature_is_rejected(mangle: Any) -> None:
    text, signature = signed()
    assert rejection(text, mangle(signature)) == "bad_signature"


@pytest.mark.parametrize(
    ("written", "same_instant_as"),
    [
        ("2026-11-24T14:00:00.000+02:00", "2026-11-24T12:00:00Z"),
        ("2026-11-24T06:30:00-05:30", "2026-11-24T12:00:00Z"),
        ("2026-11-24t12:00:00z", "2026-11-24T12:00:00Z"),  # RFC 3339 allows lower case
        ("2026-11-24T12:00:00.1239Z", "2026-11-24T12:00:00.123Z"),  # truncated to ms
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),  # leap second
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),
    ],
)
def test_rfc3339_times(written: str, same_instant_as: str) -> None:
    message = parse_message(format_message(**{**BASE, "issued_at": written}))
    assert message.issued_at == written
    assert message.issued_at_ms == epoch_ms(same_instant_as)


@pytest.mark.parametrize(
    "written",
    [
        "2023-02-29T00:00:00Z",
        "2026-11-24T24:00:00Z",
        "2026-11-24T12:00:61Z",
        "2026-11-24T12:00:00+24:00",
        "2026-11-24T12:00:00",
        "2026-11-24 12:00:00Z",
        "2026-11-24T12:00:00.Z",
        "0000-01-01T00:00:00Z",
    ],
)
def test_bad_times_are_malformed(written: str) -> None:
    with pytest.raises(SiweError) as caught:
        format_message(**{**BASE, "issued_at": written})
    assert caught.value.code == "malformed"


@pytest.mark.parametrize(
    ("domain", "ok"),
    [
        ("localhost:3000", True),
        ("xn--bcher-kva.example", True),
        ("127.0.0.1", True),
        ("[::1]", True),
        ("not_rfc4501", False),
        ("-bad.example", False),
        ("a..b", False),
        ("[::1%eth0]", False),
        ("[1:2:3:4:5::6:7:8]", False),
        ("app.example.com/path", False),
    ],
)
def test_domain_must_be_a_dns_name_or_ip(domain: str, ok: bool) -> None:
    if ok:
        assert parse_message(format_message(**{**BASE, "domain": domain})).domain == domain
    else:
        with pytest.raises(SiweError, match="domain") as caught:
            format_message(**{**BASE, "domain": domain})
        assert caught.value.code == "malformed"


@pytest.mark.parametrize(
    "overrides",
    [
        {"statement": "hi\n\nURI: https://evil.example"},
        {"statement": ""},
        {"resources": ["https://a.example\n- https://b.example"]},
        {"scheme": ""},
    ],
)
def test_format_message_refuses_fields_that_would_change_the_message(
    overrides: dict[str, Any],
) -> None:
    with pytest.raises(SiweError) as caught:
        format_message(**{**BASE, **overrides})
    assert caught.value.code == "malformed"


def test_expected_domain_must_itself_be_an_authority() -> None:
    text, signature = signed()
    with pytest.raises(ValueError, match="authority"):
        verify(text, signature, **{**EXPECT, "domain": "bad domain"})
