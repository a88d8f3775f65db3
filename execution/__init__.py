"""The execution process: places users' orders on Binance with keys held server-side.

Modules: ``service.py`` (the command loop and the accounts it runs), ``account.py`` (one linked
account: its client, user stream, command queue, reconciliation), ``orders.py`` (pure: order
state from exchange answers and events, error texts), ``store.py`` (Redis: orders, fills,
events, audit), ``credentials.py`` (stored keys -> signers), ``rekey.py`` (re-encrypt every
stored credential under the newest key-encryption key).
"""
