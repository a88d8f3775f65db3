"""An account's listenKey kept across restarts of the execution process, encrypted.

A listenKey lives 60 minutes from its creation or last keepalive, and anyone holding it can read
the account's private stream, so it is a secret: kept only as a vault ciphertext (core/vault.py)
in the account's state hash, bound to the address and to the API key's fingerprint (a key made
for an API key the user has since replaced does not decrypt). With it, a process restarted while
the IP is backing off from a 429 or banned reconnects its user streams at once, without the REST
call a new key costs (chaos: streams stayed down for minutes through a chain of back-offs).
``python -m execution.rekey`` does not re-encrypt it: one that no longer decrypts is made anew.
"""

from __future__ import annotations

import orjson

from core.clock import now_ms
from core.vault import Vault, VaultError
from execution.store import Store

REUSE_MAX_MS = 50 * 60_000  # tried again within 50 of its 60 minutes; older: a new one


class StoredListenKey:
    """The ``binance.user_stream.KeyStore`` of one account."""

    def __init__(self, store: Store, vault: Vault, address: str, fingerprint: str) -> None:
        self.store = store
        self.vault = vault
        self.address = address
        self.purpose = f"listen_key:{fingerprint}"

    async def load(self) -> str | None:
        token = await self.store.listen_key_token(self.address)
        if token is None:
            return None
        try:
            data = orjson.loads(self.vault.decrypt(token, address=self.address,
                                                   purpose=self.purpose))  # fmt: skip
        except (VaultError, orjson.JSONDecodeError):
            return None
        if not isinstance(data, dict) or now_ms() - int(data.get("at_ms", 0)) > REUSE_MAX_MS:
            return None
        key = data.get("key")
        return key if isinstance(key, str) and key else None

    async def save(self, key: str) -> None:
        plain = orjson.dumps({"key": key, "at_ms": now_ms()})
        token = self.vault.encrypt(plain, address=self.address, purpose=self.purpose)
        await self.store.set_listen_key_token(self.address, token)

    async def clear(self) -> None:
        await self.store.forget_listen_key(self.address)
