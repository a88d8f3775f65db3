"""Listen keys and user data streams: bounded per-stream queues of serialized events.

* One listen key per account. ``POST /fapi/v1/listenKey`` returns the active key (extending it)
  or a new one; ``PUT`` extends it; both by the TTL (60 minutes unless configured).
* An expired key ends its streams with a ``listenKeyExpired`` event; a deleted key ends them
  silently. A stream whose queue is full is dropped ("slow consumer") instead of growing.
* ``E`` and ``T`` are strictly increasing per account and event type (reference section 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger(__name__)

EXPIRED_REASON = "listenKeyExpired"
DELETED_REASON = "listenKey deleted"
SLOW_REASON = "slow consumer"


class UserStreamClosedError(Exception):
    """Raised by ``UserStream.get`` once the stream has ended; the reason is in ``args[0]``."""


@dataclass
class EventClock:
    """Hands out strictly increasing (E, T) per event type for one account."""

    _last: dict[str, tuple[int, int]] = field(default_factory=dict)

    def stamp(self, event_type: str, now_ms: int) -> tuple[int, int]:
        """Return (event time E, transaction time T), both above the previous ones of the type."""
        last_e, last_t = self._last.get(event_type, (0, 0))
        trans = max(now_ms, last_t + 1)
        event = max(trans, last_e + 1)
        self._last[event_type] = (event, trans)
        return event, trans


class UserStream:
    """One consumer of a listen key's events (one websocket connection)."""

    def __init__(
        self,
        listen_key: ListenKey,
        events: frozenset[str] | None,
        *,
        max_queue: int,
        clock_secs: Callable[[], float],
        now_ms: Callable[[], int],
    ) -> None:
        self._key = listen_key
        self._events = events
        self._queue: deque[bytes] = deque()
        self._max_queue = max_queue
        self._wakeup = asyncio.Event()
        self._clock_secs = clock_secs
        self._now_ms = now_ms
        self._closed_reason: str | None = None

    @property
    def closed_reason(self) -> str | None:
        """Return why the stream ended, or None while it is live."""
        return self._closed_reason

    @property
    def queue_size(self) -> int:
        """Return how many events wait to be read."""
        return len(self._queue)

    @property
    def queue_bound(self) -> int:
        """Return how many events may wait before the stream is dropped."""
        return self._max_queue

    def push(self, event_type: str, payload: bytes) -> None:
        """Queue one serialized event, or drop the stream if its reader is too slow."""
        if self._closed_reason is not None:
            return
        if self._events is not None and event_type not in self._events:
            return
        if len(self._queue) >= self._max_queue:
            log.error("user stream dropped: %d events unread", len(self._queue))
            self._end(SLOW_REASON, drop_queue=True)
            return
        self._queue.append(payload)
        self._wakeup.set()

    async def get(self) -> bytes:
        """Return the next event; after the last one, raise UserStreamClosedError.

        When the listen key expires the last event is ``listenKeyExpired``.
        """
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed_reason is not None:
                raise UserStreamClosedError(self._closed_reason)
            remaining = self._key.expires_at - self._clock_secs()
            if remaining <= 0:
                self._key.expire()
                continue  # expire() ended this stream and queued listenKeyExpired
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):  # woken by an event, or the key may expire
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)

    def close(self) -> None:
        """End the stream from the consumer's side (connection closed)."""
        if self._closed_reason is None:
            self._end("closed", drop_queue=True)

    def _end(self, reason: str, *, drop_queue: bool, last: bytes | None = None) -> None:
        self._closed_reason = reason
        if drop_queue:
            self._queue.clear()
        if last is not None:
            self._queue.append(last)
        self._key.streams.discard(self)
        self._wakeup.set()


@dataclass(eq=False)
class ListenKey:
    """A listen key, its expiry (monotonic seconds) and the streams reading it."""

    key: str
    account_key: str
    expires_at: float
    now_ms: Callable[[], int]
    streams: set[UserStream] = field(default_factory=set)
    on_dead: Callable[[ListenKey], None] | None = None
    dead: bool = False

    def expire(self) -> None:
        """End every stream with ``listenKeyExpired`` and forget the key."""
        payload = orjson.dumps({"e": EXPIRED_REASON, "E": self.now_ms(), "listenKey": self.key})
        self._kill(EXPIRED_REASON, payload)

    def delete(self) -> None:
        """End every stream silently and forget the key."""
        self._kill(DELETED_REASON, None)

    def _kill(self, reason: str, last: bytes | None) -> None:
        if self.dead:  # a second expiry or delete of the same key does nothing
            return
        for stream in list(self.streams):
            stream._end(reason, drop_queue=False, last=last)
        self.dead = True
        if self.on_dead is not None:
            self.on_dead(self)


class ListenKeys:
    """All listen keys: at most one live key per account."""

    def __init__(
        self,
        *,
        ttl_secs: float,
        max_queue: int,
        clock_secs: Callable[[], float],
        now_ms: Callable[[], int],
    ) -> None:
        self._ttl_secs = ttl_secs
        self._max_queue = max_queue
        self._clock_secs = clock_secs
        self._now_ms = now_ms
        self._by_key: dict[str, ListenKey] = {}
        self._by_account: dict[str, ListenKey] = {}

    def _live(self, key: ListenKey | None) -> ListenKey | None:
        if key is None or key.dead:
            return None
        if key.expires_at <= self._clock_secs():
            key.expire()
            return None
        return key

    def start(self, account_key: str) -> str:
        """Return the account's live key extended by the TTL, or a new key."""
        key = self._live(self._by_account.get(account_key))
        if key is None:
            key = ListenKey(
                key=secrets.token_urlsafe(48)[:64],
                account_key=account_key,
                expires_at=0.0,
                now_ms=self._now_ms,
                on_dead=self._forget,
            )
            self._by_key[key.key] = key
            self._by_account[account_key] = key
        key.expires_at = self._clock_secs() + self._ttl_secs
        return key.key

    def keepalive(self, account_key: str) -> str | None:
        """Extend the account's live key by the TTL; return it, or None if there is none."""
        key = self._live(self._by_account.get(account_key))
        if key is None:
            return None
        key.expires_at = self._clock_secs() + self._ttl_secs
        return key.key

    def close(self, account_key: str) -> bool:
        """Delete the account's key; return whether there was a live one."""
        key = self._live(self._by_account.get(account_key))
        if key is None:
            return False
        key.delete()
        return True

    def expire_now(self, account_key: str | None = None) -> int:
        """Expire the live key of one account (or every live key); return how many ended.

        Its streams get ``listenKeyExpired`` and then nothing; ``PUT`` answers -1125 and
        ``POST`` creates a new key. Expiring again when no key is live does nothing.
        """
        keys = [
            k
            for account, k in self._by_account.items()
            if account_key is None or account == account_key
        ]
        expired = 0
        for key in keys:
            if not key.dead:
                key.expire()
                expired += 1
        return expired

    def open(self, listen_key: str, events: frozenset[str] | None) -> UserStream | None:
        """Attach a new stream to a live key; None for unknown or expired keys."""
        key = self._live(self._by_key.get(listen_key))
        if key is None:
            return None
        stream = UserStream(
            key, events, max_queue=self._max_queue, clock_secs=self._clock_secs, now_ms=self._now_ms
        )
        key.streams.add(stream)
        return stream

    def publish(self, account_key: str, event: dict[str, Any]) -> None:
        """Serialize an event once and queue it on every stream of the account's key."""
        key = self._live(self._by_account.get(account_key))
        if key is None or not key.streams:
            return
        payload = orjson.dumps(event)
        for stream in list(key.streams):
            stream.push(event["e"], payload)

    def has_streams(self, account_key: str) -> bool:
        """Return whether anything reads the account's events (to skip building them)."""
        key = self._by_account.get(account_key)
        return key is not None and bool(key.streams)

    def _forget(self, key: ListenKey) -> None:
        self._by_key.pop(key.key, None)
        if self._by_account.get(key.account_key) is key:
            del self._by_account[key.account_key]
