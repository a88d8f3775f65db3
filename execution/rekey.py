"""``python -m execution.rekey``: re-encrypt every stored credential under the newest key.

Rotation of ``TP_KEY_ENCRYPTION_KEY``: prepend a new ``kid:key``, restart the processes, run this
command (it prints how many fields it re-encrypted and how many it could not read), then drop the
old key. A field that does not decrypt is left as it is and reported: nothing is lost.
"""

from __future__ import annotations

import sys
from typing import Any

from core.config import load_settings
from core.keys import Keys
from core.redis_clients import sync_client
from core.vault import Vault, VaultError

FIELDS = ("secret", "candidate", "keypair")
# KEYS[1] account. ARGV: field, old, new. Replace only if unchanged since read: a record unlinked
# or re-linked meanwhile is neither resurrected nor overwritten with the old credentials.
_SWAP = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


def main() -> int:
    settings = load_settings()
    keys = Keys.of(settings)
    vault = Vault.from_setting(settings.namespace, settings.key_encryption_key)
    r: Any = sync_client(settings.require_redis_url(), client_name="rekey")
    changed = unreadable = 0
    for key in r.scan_iter(match=keys.accounts_pattern(), count=500):
        address = key.decode().rsplit(":", 1)[1]
        for field in FIELDS:
            token = r.hget(key, field)
            if token is None:
                continue
            try:
                new = vault.reencrypt(token.decode(), address=address, purpose=field)
            except VaultError:
                unreadable += 1
                print(f"{address} {field}: does not decrypt with the configured keys; left as is")
                continue
            if new != token.decode() and r.eval(_SWAP, 1, key, field, token, new):
                changed += 1
    print(
        f"re-encrypted {changed} fields under key {vault.primary_kid!r}; unreadable: {unreadable}"
    )
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
