"""Order events to their owner's sockets: one greenlet per web process reads ``orders:events``.

Every web process reads the whole stream (``XREAD``, no group) and emits each event only to the
sockets *it* holds in the owner's room ``u:<address>`` (``ignore_queue``: not republished on
the Socket.IO message queue), so a user's events reach them whichever process holds their
socket, and nobody else's socket is in that room. A process starts from the stream's end: a
browser that reconnects reads its orders and account over REST first.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from core.errors import SchemaError
from core.keys import Keys
from core.trading import decode_event

log = logging.getLogger(__name__)

READ_COUNT = 500
BLOCK_MS = 1_000


def user_room(address: str) -> str:
    return f"u:{address.lower()}"


class OrderEvents:
    """Read ``orders:events`` and emit each to its owner's room, until the process ends."""

    def __init__(self, client: redis.Redis, keys: Keys, emit: Any) -> None:
        self.client = client
        self.keys = keys
        self.emit = emit  # web/delivery.py Delivery.emit (socketio.emit's signature)
        self.stats = {"events": 0, "malformed": 0, "errors": 0}

    def run(self) -> None:
        last = "$"
        failing = False
        while True:
            try:
                resp: Any = self.client.xread(
                    {self.keys.order_events(): last}, count=READ_COUNT, block=BLOCK_MS
                )
                failing = False
            except redis.RedisError as exc:
                self.stats["errors"] += 1
                if not failing:
                    log.warning("order events unreadable (%s); retrying", type(exc).__name__)
                failing = True
                time.sleep(1.0)
                continue
            for _, entries in resp or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._one(fields.get(b"d", b""))

    def _one(self, data: bytes) -> None:
        try:
            event = decode_event(data)
        except SchemaError as exc:
            self.stats["malformed"] += 1
            if self.stats["malformed"] == 1:
                log.error("undecodable order event skipped: %s", exc)
            return
        self.stats["events"] += 1
        payload = {
            "kind": event.kind,
            "request_id": event.request_id,
            "data": event.data,
            "time": event.time_ms,
        }
        self.emit("order_event", payload, to=user_room(event.address), ignore_queue=True)
