"""Redis I/O of the execution process: orders, fills, account state, events, audit, replies.

Layout in core/keys.py and docs/architecture.md. Every write that must not be lost with the
process (an order's status, a fill) is in Redis before its event is published.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.asyncio

from core.clock import now_ms
from core.keys import Keys
from core.trading import Order, OrderEvent, encode_event

log = logging.getLogger(__name__)

EVENTS_MAXLEN = 100_000
AUDIT_MAXLEN = 10_000
DONE_KEPT = 500  # final orders kept per user (newest first)
LISTEN_KEY_FIELD = "listen_key"  # in the account state hash: a vault ciphertext, never the key
DONE_HEAD = 16  # done_order reads these newest first, the others only when it must
FILLS_KEPT = 1_000  # fills kept per user
REPLY_TTL_S = 120
RESULT_TTL_S = 86_400

# KEYS[1] live hash. ARGV: cid, expected status, new json. Compare-and-set on the status: only one
# process (or one redelivery) moves an order from PENDING to SENDING, so only one sends it.
_CAS_STATUS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
if cjson.decode(cur)['status'] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
# KEYS[1] live hash, KEYS[2] done list. ARGV: cid, json, kept. A final order leaves `live`.
_FINISH = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"""
# KEYS[1] fills hash, KEYS[2] fills index zset. ARGV: id, json, time, kept. Idempotent per trade;
# a fill first recorded from userTrades before its order id was known to us (no client order id)
# is completed by the same trade from the stream. Returns 1 (new), 2 (completed), 0 (known).
_ADD_FILL = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  if cjson.decode(old)['client_order_id'] == '' and cjson.decode(ARGV[2])['client_order_id'] ~= ''
  then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    return 2
  end
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local n = redis.call('ZCARD', KEYS[2])
if n > tonumber(ARGV[4]) then
  local popped = redis.call('ZPOPMIN', KEYS[2], n - tonumber(ARGV[4]))
  for i = 1, #popped, 2 do redis.call('HDEL', KEYS[1], popped[i]) end
end
return 1
"""


class Store:
    """The execution process's view of Redis (asyncio client)."""

    def __init__(self, r: redis.asyncio.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._cas = r.register_script(_CAS_STATUS)
        self._finish = r.register_script(_FINISH)
        self._add_fill = r.register_script(_ADD_FILL)

    # --- orders -------------------------------------------------------------------------------

    async def order(self, address: str, cid: str) -> Order | None:
        raw = await self.r.hget(self.keys.orders_live(address), cid)
        return Order.from_json(raw) if raw else None

    async def live_orders(self, address: str) -> dict[str, Order]:
        raw: Any = await self.r.hgetall(self.keys.orders_live(address))
        return {k.decode(): Order.from_json(v) for k, v in raw.items()}

    async def done_order(self, address: str, cid: str) -> Order | None:
        """Return the final order ``cid`` among the newest DONE_KEPT + 1, or None.

        The order asked for is nearly always among the newest (an event or answer that comes
        right after the order finished): those are read first, the rest only if it is not there.
        Only entries holding the id (as orjson writes it) are decoded.
        """
        key, wanted = self.keys.orders_done(address), orjson.dumps(cid)
        for first, last in ((0, DONE_HEAD - 1), (DONE_HEAD, DONE_KEPT)):
            for raw in await self.r.lrange(key, first, last):
                if wanted not in raw:
                    continue
                order = Order.from_json(raw)
                if order.client_order_id == cid:
                    return order
        return None

    async def claim(self, address: str, order: Order, expected: str) -> bool:
        """Store ``order`` only if the stored one still has status ``expected``."""
        done = await self._cas(
            keys=[self.keys.orders_live(address)],
            args=[order.client_order_id, expected, order.to_json()],
        )
        return bool(done)

    async def save(self, address: str, order: Order) -> None:
        if order.final:
            await self._finish(
                keys=[self.keys.orders_live(address), self.keys.orders_done(address)],
                args=[order.client_order_id, order.to_json(), DONE_KEPT],
            )
        else:
            await self.r.hset(
                self.keys.orders_live(address), order.client_order_id, order.to_json()
            )

    async def add_fill(self, address: str, fill: dict[str, Any]) -> bool:
        fill_id = f"{fill['symbol']}:{fill['trade_id']}"
        added = await self._add_fill(
            keys=[self.keys.order_fills(address), self.keys.order_fills(address) + ":index"],
            args=[fill_id, orjson.dumps(fill), fill["time"], FILLS_KEPT],
        )
        return bool(added)

    async def fill_cursor(self, address: str, symbol: str) -> int | None:
        raw = await self.r.hget(self.keys.account_state(address), f"trade_cursor:{symbol}")
        return int(raw) if raw else None

    async def fill_symbols(self, address: str) -> list[str]:
        """Return the symbols that have a trade cursor (every symbol the account traded)."""
        names: Any = await self.r.hkeys(self.keys.account_state(address))
        prefix = b"trade_cursor:"
        return [n[len(prefix) :].decode() for n in names if n.startswith(prefix)]

    async def recent_done(self, address: str) -> list[Order]:
        return [
            Order.from_json(r) for r in await self.r.lrange(self.keys.orders_done(address), 0, 99)
        ]

    async def set_fill_cursor(self, address: str, symbol: str, trade_id: int) -> None:
        await self.r.hset(self.keys.account_state(address), f"trade_cursor:{symbol}", trade_id)

    # --- account state ------------------------------------------------------------------------

    async def set_state(self, address: str, **fields: Any) -> None:
        await self.r.hset(
            self.keys.account_state(address),
            mapping={k: orjson.dumps(v) for k, v in fields.items()},
        )

    async def state(self, address: str, name: str) -> Any:
        raw = await self.r.hget(self.keys.account_state(address), name)
        return orjson.loads(raw) if raw else None

    async def listen_key_token(self, address: str) -> str | None:
        """The account's listenKey as a vault ciphertext (execution/listen_keys.py), or None."""
        raw: Any = await self.r.hget(self.keys.account_state(address), LISTEN_KEY_FIELD)
        return raw.decode() if raw else None

    async def set_listen_key_token(self, address: str, token: str) -> None:
        await self.r.hset(self.keys.account_state(address), LISTEN_KEY_FIELD, token)

    async def forget_listen_key(self, address: str) -> None:
        await self.r.hdel(self.keys.account_state(address), LISTEN_KEY_FIELD)

    async def states(self, address: str, *names: str) -> list[Any]:
        """Return several fields of the account state in one read (None where absent)."""
        raws: Any = await self.r.hmget(self.keys.account_state(address), names)
        return [orjson.loads(raw) if raw else None for raw in raws]

    # --- events, replies, audit ---------------------------------------------------------------

    async def emit(self, event: OrderEvent, *, reply: bool = False) -> None:
        data = encode_event(event)
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(self.keys.order_events(), {"d": data}, maxlen=EVENTS_MAXLEN, approximate=True)
        if reply and event.request_id:
            key = self.keys.order_reply(event.request_id, event.address)
            pipe.rpush(key, data)
            pipe.ltrim(key, -1, -1)
            pipe.expire(key, REPLY_TTL_S)
            pipe.set(self.keys.order_result(event.request_id, event.address), data, ex=RESULT_TTL_S)
        await pipe.execute()

    async def audit(
        self, address: str, request_id: str, action: str, outcome: str, detail: str = ""
    ) -> None:
        await self.r.xadd(
            self.keys.order_audit(),
            {
                "address": address.lower(),
                "request_id": request_id,
                "action": action,
                "outcome": outcome,
                "detail": detail[:500],
                "by": "execution",
                "ms": now_ms(),
            },
            maxlen=AUDIT_MAXLEN,
            approximate=True,
        )

    async def accounts(self) -> list[str]:
        out = []
        key: Any
        async for key in self.r.scan_iter(match=self.keys.accounts_pattern(), count=500):
            out.append(key.decode().rsplit(":", 1)[1])
        return out

    async def account_record(self, address: str) -> dict[str, str]:
        raw: Any = await self.r.hgetall(self.keys.account(address))
        return {k.decode(): v.decode() for k, v in raw.items()}
