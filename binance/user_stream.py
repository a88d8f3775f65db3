"""A USD-M user data stream for one account: listenKey kept alive, replaced, resynced (async).

Lifecycle (docs/execution.md, "The user data stream and reconciliation"):

1. ``POST /fapi/v1/listenKey``, connect ``<ws>/private/ws/<listenKey>``;
2. only then call ``on_resync()`` (the caller's REST snapshot of open orders, positions, fills):
   whatever happens after the connection opened is on the stream, whatever happened before is
   in the snapshot, so nothing falls between; events buffered meanwhile are applied after it
   (the caller's updates are monotonic, so an older event cannot undo the snapshot). A snapshot
   refused by the IP's weight budget (Throttled, RateLimited, Banned: nothing was sent) is
   retried when the refusal says, on the same connection, whose events are applied meanwhile:
   a reconnection would spend more weight for nothing;
3. ``PUT`` every ``keepalive_s`` (refused by the weight budget: tried again a minute later at
   most; the key lives 60 minutes); a -1125 ("listenKey does not exist") or a
   ``listenKeyExpired`` event ends this key: back to 1 (a second expiry notice for a key already
   replaced is ignored);
   with a ``key_store``, the key is kept (encrypted, by the caller) across restarts: a process
   started during a 429 back-off or a ban reconnects with it without REST (kept alive at once),
   and a new key is asked for only when the stored one is too old, refused or expired;
4. a dropped connection: back to 1 after a jittered backoff (1 s doubling to 30 s); a new key
   refused by the IP's weight budget (nothing sent) is asked for again when the refusal says,
   with one warning per wait;
5. before the server's 24-hour cut (``max_age_s``) a second connection to the same key is
   opened and read first, then the old one is closed: make-before-break, as the feeder does;
   the overlap can repeat events, which the caller's idempotent updates absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from binance.account import AccountClient
from core.errors import Banned, RateLimited, RestError, Throttled

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1 << 20
MAX_QUEUE_FRAMES = 256  # websocket receive queue: pushes back through TCP when full
MAX_DEFER_S = 60.0  # a refused snapshot or keepalive is tried again within this


class KeyStore(Protocol):
    """Where the account's listenKey outlives the process (execution/listen_keys.py)."""

    async def load(self) -> str | None:
        """Return a key still worth trying (recently created or kept alive), or None."""

    async def save(self, key: str) -> None:
        """Remember ``key`` as created or kept alive now."""

    async def clear(self) -> None:
        """Forget the key (refused, expired, or the account unlinked)."""


class UserStream:
    """Run one account's user data stream until cancelled."""

    def __init__(
        self,
        client: AccountClient,
        ws_private_url: str,
        *,
        on_event: Callable[[dict[str, Any]], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
        keepalive_s: float = 1800,
        max_age_s: float = 23 * 3600,
        label: str = "",
        key_store: KeyStore | None = None,
    ) -> None:
        self._client = client
        self._url = ws_private_url
        self._on_event = on_event
        self._on_resync = on_resync
        self._keepalive_s = keepalive_s
        self._max_age_s = max_age_s
        self._label = label
        self._keys = key_store
        self.listen_key = ""
        self.connected = False
        self.stats = {
            "connects": 0,
            "drops": 0,
            "expired": 0,
            "keepalives": 0,
            "replaced": 0,
            "malformed": 0,
            "resync_deferred": 0,
            "keepalive_deferred": 0,
            "key_deferred": 0,
            "key_reused": 0,
        }

    async def run(self) -> None:
        backoff = 1.0
        waiting = False  # for the IP's weight: said once, not on every attempt
        while True:
            try:
                await self._one_key()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except (Throttled, RateLimited, Banned) as exc:
                # No new key without weight (nothing was sent): the next try is when the
                # refusal says, not 1-30 s later and again (a back-off lasts up to a minute).
                self.stats["key_deferred"] += 1
                wait_s = _defer_s(exc)
                if not waiting:
                    log.warning("user stream %s waits for the IP's REST weight (%s); next try in "
                                "%.1f s", self._label, exc, wait_s,
                                extra={"account": self._label})  # fmt: skip
                waiting = True
                await asyncio.sleep(wait_s)
            except Exception as exc:  # any failure: a new key and connection
                waiting = False
                self.stats["drops"] += 1
                if _refused_key(exc):
                    await self._forget_key()  # a POST next time
                log.warning(
                    "user stream %s lost (%s); reconnecting in %.1f s",
                    self._label,
                    type(exc).__name__,
                    backoff,
                    extra={"account": self._label},
                )
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311
                backoff = min(backoff * 2, 30.0)
            else:
                waiting = False
            finally:
                self.connected = False

    async def _one_key(self) -> None:
        key = await self._stored_key()
        reused = bool(key)
        if key:
            self.stats["key_reused"] += 1
        else:
            key = await self._client.new_listen_key()
            await self._save_key(key)
        self.listen_key = key
        ws = await self._connect(key)
        log.debug("user stream %s connected; resyncing", self._label)
        # A stored key's hour may be half gone: kept alive at once (no REST weight: later).
        keepalive = asyncio.create_task(self._keepalive(key, first_s=1.0 if reused else None))
        try:
            resync_at = 0.0  # time.monotonic() at which the snapshot is (tried) next
            opened = time.monotonic()
            while True:
                if not self.connected and time.monotonic() >= resync_at:
                    resync_at = await self._resync()
                if time.monotonic() - opened > self._max_age_s:
                    ws = await self._replace(ws, key)
                    opened = time.monotonic()
                if keepalive.done():
                    keepalive.result()  # raises the keepalive's error (the key is gone)
                    return
                try:
                    async with asyncio.timeout(1.0):  # no task per frame, unlike wait_for
                        raw = await ws.recv()
                except TimeoutError:
                    continue
                if not await self._handle(raw, key):
                    return  # listenKeyExpired: start again with a new key
        finally:
            keepalive.cancel()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _resync(self) -> float:
        """Take the caller's snapshot; return when to try again if the weight budget refused it."""
        try:
            await self._on_resync()
        except (Throttled, RateLimited, Banned) as exc:  # not sent: background work waits
            self.stats["resync_deferred"] += 1
            wait_s = _defer_s(exc)
            log.debug("user stream %s: snapshot deferred %.1f s (%s)", self._label, wait_s, exc,
                      extra={"account": self._label})  # fmt: skip
            return time.monotonic() + wait_s
        log.debug("user stream %s resynced", self._label)
        self.connected = True
        return 0.0

    async def _connect(self, key: str) -> ClientConnection:
        ws = await websockets.connect(
            f"{self._url}/ws/{key}",
            max_size=MAX_FRAME_BYTES,
            max_queue=MAX_QUEUE_FRAMES,
            open_timeout=10,
            close_timeout=2,
        )
        self.stats["connects"] += 1
        return ws

    async def _replace(self, old: ClientConnection, key: str) -> ClientConnection:
        new = await self._connect(key)
        # Drain what the old connection already holds, then read only the new one.
        with contextlib.suppress(Exception):
            while True:
                raw = await asyncio.wait_for(old.recv(), timeout=0.05)
                await self._handle(raw, key)
        with contextlib.suppress(Exception):
            await old.close()
        self.stats["replaced"] += 1
        return new

    async def _handle(self, raw: str | bytes, key: str) -> bool:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats["malformed"] += 1
            return True
        if not isinstance(event, dict):
            self.stats["malformed"] += 1
            return True
        if event.get("e") == "listenKeyExpired":
            if event.get("listenKey", key) != key:
                return True  # a notice about a key already replaced
            self.stats["expired"] += 1
            log.warning(
                "listenKey of %s expired; replacing it", self._label, extra={"account": self._label}
            )
            await self._forget_key()
            return False
        await self._on_event(event)
        return True

    async def _keepalive(self, key: str, first_s: float | None = None) -> None:
        delay_s = self._keepalive_s if first_s is None else first_s
        while True:
            await asyncio.sleep(delay_s)
            if self.listen_key != key:
                return
            try:
                await self._client.keepalive_listen_key()  # -1125 raises: the key is replaced
            except (Throttled, RateLimited, Banned) as exc:  # not sent; the key lives 60 min
                self.stats["keepalive_deferred"] += 1
                delay_s = _defer_s(exc)
                continue
            self.stats["keepalives"] += 1
            await self._save_key(key)
            delay_s = self._keepalive_s

    # --- the key across restarts (a reconnection without REST weight) -------------------------

    async def _stored_key(self) -> str | None:
        if self._keys is None:
            return None
        try:
            return await self._keys.load()
        except Exception as exc:  # Redis down: a new key, as without a store
            log.debug("user stream %s: stored key unreadable (%r)", self._label, exc)
            return None

    async def _save_key(self, key: str) -> None:
        if self._keys is not None:
            with contextlib.suppress(Exception):  # a later keepalive saves it again
                await self._keys.save(key)

    async def _forget_key(self) -> None:
        if self._keys is not None:
            with contextlib.suppress(Exception):
                await self._keys.clear()


def _refused_key(exc: BaseException) -> bool:
    """The exchange says the key is unknown: -1125 to a keepalive, or a close with 1008."""
    if isinstance(exc, RestError):
        return exc.code == -1125
    if isinstance(exc, websockets.ConnectionClosed):
        return exc.rcvd is not None and exc.rcvd.code == 1008
    return False


def _defer_s(exc: Throttled | RateLimited | Banned) -> float:
    """Return how long to wait before asking the weight budget again (jittered, at most 60 s)."""
    wait_s = min((exc.retry_after_ms or 1000) / 1000, MAX_DEFER_S)
    return wait_s * random.uniform(1.0, 1.2)  # noqa: S311
