"""Stored exchange credentials -> request signers. Plaintext lives only inside a Signer.

An account record (``Keys.account``, docs/architecture.md) keeps its credentials as one vault
ciphertext per field, bound to the owner's address and to the field's name:

* ``secret``: the linked credentials, JSON ``{"api_key", "secret"}`` (HMAC) or
  ``{"api_key", "private_key"}`` (Ed25519, raw key in base64);
* ``candidate``: credentials waiting to be verified against the exchange (they replace
  ``secret`` only if a signed account call succeeds);
* ``keypair``: a server-generated Ed25519 private key waiting for the user to register its public
  key on Binance and confirm with the API key Binance gave them.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from binance.signing import Signer, ed25519_signer, hmac_signer
from core.vault import Vault, VaultError


def seal(vault: Vault, address: str, field: str, payload: dict[str, Any]) -> str:
    return vault.encrypt(orjson.dumps(payload), address=address, purpose=field)


def unseal(vault: Vault, address: str, field: str, token: str) -> dict[str, Any]:
    data = orjson.loads(vault.decrypt(token, address=address, purpose=field))
    if not isinstance(data, dict):
        raise VaultError("credential payload is not an object")
    return data


def signer_from(payload: dict[str, Any]) -> Signer:
    """Return the signer of decrypted credentials; raise VaultError if they are incomplete."""
    api_key = payload.get("api_key")
    if not isinstance(api_key, str) or not api_key:
        raise VaultError("credentials have no API key")
    if "private_key" in payload:
        return ed25519_signer(api_key, base64.b64decode(payload["private_key"]))
    secret = payload.get("secret")
    if not isinstance(secret, str) or not secret:
        raise VaultError("credentials have no secret")
    return hmac_signer(api_key, secret)
