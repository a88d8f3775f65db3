"""Sign-In with Ethereum (ERC-4361): a strict parser and verifier (pure: no I/O, clock passed in).

A message exactly as the wallet shows and signs it (spruceid/siwe vector "example message"):

    login.xyz wants you to sign in with your Ethereum account:
    0x9D85ca56217D2bb651b00f15e694EB7E713637D4

    Sign-In With Ethereum Example Statement

    URI: https://login.xyz
    Version: 1
    Chain ID: 1
    Nonce: bTyXgcQxn2htgkjJn
    Issued At: 2022-01-27T17:09:38.578Z
    Expiration Time: 2100-01-07T14:31:43.952Z

The grammar is the ERC's ABNF (docs/stack.md, "The sign-in message"): single LFs, no CR, no trailing
LF, fields in a fixed order. Where the ERC leaves a choice, this module is strict:
- the address must be EIP-55 checksummed; all-lower and all-upper hex are rejected
  (``bad_address_checksum``), as spruceid's vector "address not EIP-55" requires;
- the domain's host must be a DNS name (letters, digits, hyphens), an IPv4 address or an
  IP-literal: the spruceid vector "domain not RFC4501 authority" rejects ``not_rfc4501``,
  which RFC 3986 alone would allow;
- the signature is EIP-191 ``personal_sign`` by an EOA over the raw text, never over a
  re-serialization; ERC-1271 contract wallets need chain access and are not supported.
verify() does not consume the nonce: the caller must (``GETDEL``; docs/stack.md, "The nonce").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address

from core.errors import SiweError as SiweError  # raised here; tests import it from here

SiweErrorCode = Literal[
    "malformed", "too_long", "bad_address_checksum", "bad_version", "domain_mismatch",
    "scheme_mismatch", "uri_mismatch", "chain_mismatch", "nonce_mismatch", "expired",
    "not_yet_valid", "issued_at_skew", "bad_signature", "signer_mismatch",
]  # fmt: skip

MAX_MESSAGE_BYTES = 4096  # checked before parsing (ERC-4361: choose maximum lengths)
MAX_FIELD_CHARS = {"domain": 255, "statement": 1024, "uri": 1024, "chain_id": 78,  # any uint256
                   "nonce": 128, "time": 64, "request_id": 256, "resource": 1024}  # fmt: skip
MAX_RESOURCES = 64

_HEADER_END = " wants you to sign in with your Ethereum account:"
_UNRESERVED, _SUB_DELIMS, _PCT = r"A-Za-z0-9\-._~", r"!$&'()*+,;=", r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_AUTHORITY_RE = re.compile(
    rf"(?:(?P<userinfo>(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*)@)?"
    rf"(?P<host>\[[^\[\]]*\]|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*)(?::(?P<port>[0-9]*))?"
)
_URI_RE = re.compile(  # hier-part: "//" authority path-abempty, or a path without authority
    rf"{_SCHEME_RE.pattern}:(?://(?P<authority>[^/?#]*)(?:/{_PCHAR}*)*"
    rf"|/?(?:{_PCHAR}+(?:/{_PCHAR}*)*)?)(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?"
)
_IPVFUTURE_RE = re.compile(rf"[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+")
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_ADDRESS_RE = re.compile(r"0x[0-9A-Fa-f]{40}")
_STATEMENT_RE = re.compile(r"[A-Za-z0-9 !#$&-;=?@\[\]_~]+")  # reserved / unreserved / " "
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}")
_CHAIN_ID_RE = re.compile(r"[0-9]+")  # 1*DIGIT: the ABNF allows leading zeros
_REQUEST_ID_RE = re.compile(rf"{_PCHAR}*")
_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_SIGNATURE_RE = re.compile(r"0x[0-9A-Fa-f]{130}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SiweMessage:
    """One parsed message: the fields as written, plus the three times in epoch milliseconds."""

    scheme: str | None
    domain: str
    address: str
    statement: str | None
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: str
    expiration_time: str | None
    not_before: str | None
    request_id: str | None
    resources: tuple[str, ...]
    issued_at_ms: int
    expiration_time_ms: int | None
    not_before_ms: int | None

    def to_text(self) -> str:
        """Serialize this message (the inverse of parse_message for canonical text)."""
        return format_message(
            scheme=self.scheme, domain=self.domain, address=self.address,
            statement=self.statement, uri=self.uri, version=self.version, chain_id=self.chain_id,
            nonce=self.nonce, issued_at=self.issued_at, expiration_time=self.expiration_time,
            not_before=self.not_before, request_id=self.request_id, resources=self.resources,
        )  # fmt: skip


def parse_message(text: str) -> SiweMessage:
    """Parse ERC-4361 text strictly; raise SiweError (malformed, too_long, bad_*) if it fails."""
    if len(text) > MAX_MESSAGE_BYTES or len(text.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
        raise SiweError("too_long", f"the message is longer than {MAX_MESSAGE_BYTES} bytes")
    if not text.isascii() or "\r" in text:
        raise SiweError("malformed", "the message must be ASCII with LF line endings")
    lines = text.split("\n")[::-1]  # pop() gives the next line

    def next_line() -> str:
        if not lines:
            raise SiweError("malformed", "the message ends early")
        return lines.pop()

    def take(prefix: str, *, optional: bool = False) -> str | None:
        if lines and lines[-1].startswith(prefix):
            return lines.pop()[len(prefix) :]
        if optional:
            return None
        raise SiweError("malformed", f"expected a line starting with {prefix!r}")

    def take_time(prefix: str) -> tuple[str | None, int | None]:
        value = take(prefix, optional=True)
        return value, None if value is None else _time_ms(value)

    header = next_line()
    if not header.endswith(_HEADER_END):
        raise SiweError("malformed", "the first line is not the sign-in header")
    scheme, sep, domain = header.removesuffix(_HEADER_END).rpartition("://")
    if sep and not _SCHEME_RE.fullmatch(scheme):
        raise SiweError("malformed", f"not a URI scheme: {scheme[:40]!r}")
    _check(domain, "domain", lambda v: _split_authority(v, dns_only=True) is not None)
    address = _check_address(next_line())
    if next_line() != "":
        raise SiweError("malformed", "expected an empty line after the address")
    statement: str | None = next_line()
    if statement == "":
        statement = None  # no statement: three LFs between the address and "URI: "
    else:
        _check(statement, "statement", _STATEMENT_RE.fullmatch)
        if next_line() != "":
            raise SiweError("malformed", "expected an empty line after the statement")
    uri = _check(take("URI: "), "uri", _is_uri)
    version = take("Version: ")
    if version != "1":
        raise SiweError("bad_version", f"unsupported version {version!r}")
    chain_id = int(_check(take("Chain ID: "), "chain_id", _CHAIN_ID_RE.fullmatch))
    nonce = _check(take("Nonce: "), "nonce", _NONCE_RE.fullmatch)
    issued_at = _check(take("Issued At: "), "time", _TIME_RE.fullmatch)
    issued_at_ms = _time_ms(issued_at)
    expiration_time, expiration_time_ms = take_time("Expiration Time: ")
    not_before, not_before_ms = take_time("Not Before: ")
    request_id = take("Request ID: ", optional=True)
    if request_id is not None:
        _check(request_id, "request_id", _REQUEST_ID_RE.fullmatch)
    resources: list[str] = []
    if lines and lines[-1] == "Resources:":
        lines.pop()
        if len(lines) > MAX_RESOURCES:
            raise SiweError("too_long", f"more than {MAX_RESOURCES} resources")
        while lines:
            resources.append(_check(take("- "), "resource", _is_uri))
    if lines:
        raise SiweError("malformed", f"unexpected line {lines[-1][:40]!r}")
    return SiweMessage(
        scheme=scheme if sep else None, domain=domain, address=address, statement=statement,
        uri=uri, version=version, chain_id=chain_id, nonce=nonce, issued_at=issued_at,
        expiration_time=expiration_time, not_before=not_before, request_id=request_id,
        resources=tuple(resources), issued_at_ms=issued_at_ms,
        expiration_time_ms=expiration_time_ms, not_before_ms=not_before_ms,
    )  # fmt: skip


def format_message(
    *,
    domain: str,
    address: str,
    uri: str,
    chain_id: int,
    nonce: str,
    issued_at: str,
    scheme: str | None = None,
    statement: str | None = None,
    version: str = "1",
    expiration_time: str | None = None,
    not_before: str | None = None,
    request_id: str | None = None,
    resources: Sequence[str] = (),
) -> str:
    """Serialize fields to ERC-4361 text; raise SiweError if the result would not parse back."""
    lines = [f"{scheme}://{domain}{_HEADER_END}" if scheme else f"{domain}{_HEADER_END}", address]
    lines += ["", statement, ""] if statement is not None else ["", ""]
    lines += [f"URI: {uri}", f"Version: {version}", f"Chain ID: {chain_id}", f"Nonce: {nonce}"]
    lines.append(f"Issued At: {issued_at}")
    for title, value in (("Expiration Time", expiration_time), ("Not Before", not_before),
                         ("Request ID", request_id)):  # fmt: skip
        if value is not None:
            lines.append(f"{title}: {value}")
    if resources:
        lines += ["Resources:", *(f"- {resource}" for resource in resources)]
    text = "\n".join(lines)
    parsed = parse_message(text)
    given = SiweMessage(
        scheme, domain, address, statement, uri, version, chain_id, nonce, issued_at,
        expiration_time, not_before, request_id, tuple(resources),
        parsed.issued_at_ms, parsed.expiration_time_ms, parsed.not_before_ms,
    )  # fmt: skip
    if given != parsed:
        raise SiweError("malformed", "a field holds a line break or an empty value")
    return text


def recover_signer(text: str, signature: str) -> str:
    """Return the EIP-55 address that personal_signed ``text``; raise SiweError if it cannot."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise SiweError("too_long", f"the message is longer than {MAX_MESSAGE_BYTES} bytes")
    if not isinstance(signature, str) or _SIGNATURE_RE.fullmatch(signature) is None:
        raise SiweError("bad_signature", "the signature is not 0x and 65 bytes of hex")
    raw = bytes.fromhex(signature[2:])
    if raw[64] not in (0, 1, 27, 28):  # eth-account would also take EIP-155 v values (35+)
        raise SiweError("bad_signature", f"recovery byte {raw[64]} is not 0, 1, 27 or 28")
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=raw)
    except Exception as exc:  # eth-account/eth-keys raise several types for bad curve points
        raise SiweError("bad_signature", f"no signer recovers from the signature: {exc}") from exc
    return to_checksum_address(signer)


def verify(
    text: str,
    signature: str,
    *,
    domain: str,
    uri: str | None,
    chain_id: int,
    now_ms: int,
    scheme: str | None = None,
    nonce: str | None = None,
    max_skew_ms: int = 300_000,
) -> SiweMessage:
    """Check ``text`` is for this site and now, and signed by its address; raise SiweError if not.

    The checks run in this order, so the first failing one names the error: grammar, domain
    (host case-insensitive, port exact), scheme (absent means https), uri, chain id, nonce,
    expiry (``now >= exp``), not-before (``now < nbf``), issued-at within ``max_skew_ms`` of
    now in either direction, then the EIP-191 signature over the raw text. ``uri``, ``scheme``
    and ``nonce`` are checked only when given; the nonce is not consumed here. Raise ValueError
    if ``domain`` is not itself an RFC 3986 authority (a configuration error, not a rejection).
    """
    msg = parse_message(text)
    if _authority_key(msg.domain) != _authority_key(domain):
        raise SiweError("domain_mismatch", f"the message is for {msg.domain!r}, not {domain!r}")
    if scheme is not None and (msg.scheme or "https").lower() != scheme.lower():
        raise SiweError("scheme_mismatch", f"the message is for {msg.scheme or 'https'}://")
    if uri is not None and msg.uri != uri:
        raise SiweError("uri_mismatch", f"the message is for {msg.uri!r}, not {uri!r}")
    if msg.chain_id != chain_id:
        raise SiweError("chain_mismatch", f"the message is for chain {msg.chain_id}")
    if nonce is not None and msg.nonce != nonce:  # not secret: the signed text carries it
        raise SiweError("nonce_mismatch", "the nonce is not the one issued")
    if msg.expiration_time_ms is not None and now_ms >= msg.expiration_time_ms:
        raise SiweError("expired", f"the message expired at {msg.expiration_time}")
    if msg.not_before_ms is not None and now_ms < msg.not_before_ms:
        raise SiweError("not_yet_valid", f"the message is valid from {msg.not_before}")
    if abs(now_ms - msg.issued_at_ms) > max_skew_ms:
        raise SiweError("issued_at_skew", f"issued at {msg.issued_at}, too far from now")
    if recover_signer(text, signature) != msg.address:
        raise SiweError("signer_mismatch", f"the signer is not {msg.address}")
    return msg


def _check(value: str | None, field: str, valid: Callable[[str], object]) -> str:
    if value is None:
        raise SiweError("malformed", f"missing {field}")
    if len(value) > MAX_FIELD_CHARS[field]:
        raise SiweError("too_long", f"{field} is longer than {MAX_FIELD_CHARS[field]} characters")
    if not valid(value):
        raise SiweError("malformed", f"invalid {field}: {value[:80]!r}")
    return value


def _check_address(value: str) -> str:
    if not _ADDRESS_RE.fullmatch(value):
        raise SiweError("malformed", f"not a 0x-prefixed 20-byte hex address: {value[:50]!r}")
    if value != to_checksum_address(value):  # also rejects all-lower and all-upper hex
        raise SiweError("bad_address_checksum", f"{value} is not EIP-55 checksummed")
    return value


def _time_ms(value: str) -> int:
    # RFC 3339 date-time (ERC-4361 ABNF) to epoch ms; fractions past milliseconds are truncated
    match = _TIME_RE.fullmatch(_check(value, "time", _TIME_RE.fullmatch))
    if match is None:  # unreachable after _check; narrows the type
        raise SiweError("malformed", f"not an RFC 3339 date-time: {value!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, offset_h, offset_m = match.group(7, 8, 9, 10)
    try:
        if second > 60 or (sign and (int(offset_h) > 23 or int(offset_m) > 59)):
            raise ValueError("second or offset out of range")
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
        if sign:
            offset = timedelta(hours=int(offset_h), minutes=int(offset_m))
            moment = moment - offset if sign == "+" else moment + offset
    except (ValueError, OverflowError) as exc:
        raise SiweError("malformed", f"not a valid date-time: {value!r}") from exc
    ms = int(f"{fraction or ''}000"[:3]) + (1000 if second == 60 else 0)  # :60 is a leap second
    return (moment - _EPOCH) // timedelta(milliseconds=1) + ms


def _split_authority(value: str, *, dns_only: bool) -> tuple[str | None, str, str | None] | None:
    # RFC 3986 authority -> (userinfo, host, port); dns_only narrows reg-name to DNS names
    match = _AUTHORITY_RE.fullmatch(value)
    if match is None:
        return None
    host = match["host"]
    if host.startswith("["):
        literal = host[1:-1]
        if literal.startswith(("v", "V")):
            if not _IPVFUTURE_RE.fullmatch(literal):
                return None
        elif "%" in literal or not _is_ipv6(literal):  # RFC 3986 has no zone ids
            return None
    elif dns_only and (len(host) > 253 or not _DNS_NAME_RE.fullmatch(host)):
        return None
    return match["userinfo"], host, match["port"]


def _is_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _is_uri(value: str) -> bool:
    match = _URI_RE.fullmatch(value)
    if match is None:
        return False
    authority = match["authority"]
    return authority is None or _split_authority(authority, dns_only=False) is not None


def _authority_key(value: str) -> tuple[str | None, str, str | None]:
    parts = _split_authority(value, dns_only=False)
    if parts is None:
        raise ValueError(f"not an RFC 3986 authority: {value!r}")
    userinfo, host, port = parts
    return userinfo, host.lower(), port
