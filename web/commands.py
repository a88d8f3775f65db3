"""Trade commands in the web tier: check, store, queue for execution, wait for the outcome.

One function, :meth:`Trading.execute`, serves REST (web/trade_api.py) and Socket.IO (the
``trade`` event): the same checks, the same idempotency, the same answers.

Idempotency: a command's request id is claimed with ``SET NX`` in the same script that stores
the order (status PENDING, with the client order id it will carry) and queues the command; a
second submission of the request id, concurrent or later (within :data:`REQUEST_TTL_S`), queues
nothing and is answered with that order's state.
"""

from __future__ import annotations

import base64
import logging
import time
from decimal import Decimal
from typing import Any

import orjson
import redis

from binance.signing import generate_ed25519
from core.clock import now_ms
from core.config import Settings
from core.errors import SchemaError
from core.keys import Keys, execution_shard_of
from core.trading import (
    Instrument,
    Order,
    OrderCommand,
    decode_event,
    decode_instruments,
    encode_command,
    new_client_order_id,
)
from core.vault import Vault, fingerprint
from web import trade_checks as checks
from web.trade_checks import Refusal

log = logging.getLogger(__name__)

REQUEST_TTL_S = 7 * 86_400  # a request id maps to its order for a week
COMMANDS_MAXLEN = 100_000
ORDERS_PER_10S, ORDERS_PER_MIN = 300, 1_200  # Binance's per-account order limits (reference §2.5)
INSTRUMENTS_TTL_S = 60.0
# A reference price (min notional, percent price: the exchange checks both again) is reused this
# long: reading it costs a 200-entry stream read, the heaviest round trip of a command.
REFERENCE_TTL_S = 1.0
MAX_WAITERS = 32
WAIT_SLICE_S = 2  # one BLPOP never blocks longer (the clients' socket timeout is 10 s)
AUDIT_MAXLEN = 10_000
MAX_SECRET_CHARS = 512

# One script checks and queues a command (one round trip; a web process busy with market data
# can make each round trip wait for a slice of its fan-out, web/fanout.py).
# KEYS: request, live hash, commands, per-user minute, account 10 s, account minute.
# ARGV: marker (cid or cmd:<action>), order json or '', command, ttl, maxlen, per-minute limit,
# what it spends (2: an order and a command, 1: a command, 0: nothing: linking a key), account
# 10 s limit, account minute limit.
# Returns the marker of an earlier submission of the request id (nothing spent, nothing queued),
# 1 (the user's command rate), 2 or 3 (the account's order budget per 10 s or minute), or false:
# queued. A refused command leaves its request id free, so a retry after the wait can pass.
_SUBMIT = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
if ARGV[7] ~= '0' then
  local n = redis.call('INCR', KEYS[4])
  if n == 1 then redis.call('EXPIRE', KEYS[4], 120) end
  if n > tonumber(ARGV[6]) then return 1 end
end
if ARGV[7] == '2' then
  local a = redis.call('INCR', KEYS[5])
  if a == 1 then redis.call('EXPIRE', KEYS[5], 20) end
  local b = redis.call('INCR', KEYS[6])
  if b == 1 then redis.call('EXPIRE', KEYS[6], 120) end
  if a > tonumber(ARGV[8]) then return 2 end
  if b > tonumber(ARGV[9]) then return 3 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'd', ARGV[3])
return false
"""


def submission(
    keys: Keys, cmd: OrderCommand, order: Order | None, *, per_minute: int, exec_shards: int = 1
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of :data:`_SUBMIT` for one command (the format's one owner: the
    execution benchmark queues commands with it too)."""
    address, now = cmd.address, cmd.created_ms
    marker = order.client_order_id if order is not None else f"cmd:{cmd.action}"
    spends = 2 if cmd.action in ("place", "close") else 0 if cmd.action in ("link", "unlink") else 1
    return (
        [
            keys.order_request(address, cmd.request_id),
            keys.orders_live(address),
            keys.order_commands(execution_shard_of(address, exec_shards)),
            keys.order_rate("cmd", address, now // 60_000),
            keys.order_rate("o10s", address, now // 10_000),
            keys.order_rate("o1m", address, now // 60_000),
        ],
        [
            marker,
            order.to_json() if order else "",
            encode_command(cmd),
            REQUEST_TTL_S,
            COMMANDS_MAXLEN,
            per_minute,
            spends,
            ORDERS_PER_10S,
            ORDERS_PER_MIN,
        ],
    )


class Trading:
    """The web tier's side of trading, for one process."""

    def __init__(
        self,
        r: redis.Redis,
        settings: Settings,
        keys: Keys,
        *,
        waiters: redis.Redis | None = None,
        market: redis.Redis | None = None,
    ) -> None:
        self.r: Any = r  # redis-py's reply types are too loose to be useful here
        self.market: Any = r if market is None else market  # book tickers
        self.settings = settings
        self.keys = keys
        self.vault = Vault.from_setting(settings.namespace, settings.key_encryption_key)
        self._submit = r.register_script(_SUBMIT)
        self._instruments: dict[str, Instrument] = {}
        self._instruments_at = 0.0
        self._reference: dict[str, tuple[float, Decimal | None]] = {}  # bounded: instruments
        # Requests waiting for their outcome hold a connection of their own pool, at most
        # MAX_WAITERS at once: a slow execution process cannot starve the pump and the sign-ins
        # of connections; past the cap a command is answered 202 at once.
        self._waiters: Any = waiters if waiters is not None else r
        self._waiting = 0

    # --- reference data -----------------------------------------------------------------------

    def instruments(self) -> dict[str, Instrument]:
        if time.monotonic() - self._instruments_at > INSTRUMENTS_TTL_S or not self._instruments:
            raw = self.r.get(self.keys.instruments())
            if raw:
                try:
                    self._instruments = decode_instruments(raw)
                except SchemaError as exc:  # keep what was read before; execution rewrites it
                    log.error("unreadable instruments record: %s", exc)
                self._instruments_at = time.monotonic()
        return self._instruments

    def reference_price(self, symbol: str) -> Decimal | None:
        """Return the mid of the latest book ticker of ``symbol`` (None if none is recent), as
        read at most REFERENCE_TTL_S ago. ``symbol`` is a traded instrument (checked before)."""
        now = time.monotonic()
        cached = self._reference.get(symbol)
        if cached is not None and now - cached[0] < REFERENCE_TTL_S:
            return cached[1]
        price = None
        stream = self.keys.book(self.keys.shard_of(symbol))
        for _, fields in self.market.xrevrange(stream, count=200):
            raw = orjson.loads(fields[b"d"])
            if raw[2] == symbol:
                price = (Decimal(raw[4]) + Decimal(raw[6])) / 2
                break
        self._reference[symbol] = (now, price)
        return price

    # --- account ------------------------------------------------------------------------------

    def account(self, address: str) -> dict[str, Any]:
        rec = {
            k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.account(address)).items()
        }
        state = self.r.hgetall(self.keys.account_state(address))
        out: dict[str, Any] = {
            "linked": rec.get("status") == "linked",
            "status": rec.get("status", "none"),
            "kind": rec.get("kind"),
            "fingerprint": rec.get("fingerprint"),
            "public_key": rec.get("public_key"),
        }
        for name in ("balances", "positions", "updated_ms"):
            raw = state.get(name.encode())
            out[name] = orjson.loads(raw) if raw else None
        return out

    def new_keypair(self, address: str) -> dict[str, Any]:
        """Generate the server-held Ed25519 key pair; return its public key to register."""
        private, public_pem = generate_ed25519()
        token = self.vault.encrypt(
            orjson.dumps({"private_key": base64.b64encode(private).decode()}),
            address=address,
            purpose="keypair",
        )
        key = self.keys.account(address)
        pipe = self.r.pipeline()
        pipe.hset(
            key,
            mapping={
                "kind": "ed25519",
                "public_key": public_pem,
                "keypair": token,
                "created_ms": now_ms(),
            },
        )
        pipe.hsetnx(key, "status", "pending")
        pipe.execute()
        return {
            "public_key": public_pem,
            "status": self.account(address)["status"],
            "instructions": "Register this public key on Binance (API Management, create an API "
            "key, self-generated/Ed25519), enable futures trading, leave withdrawals off, "
            "restrict it to this server's IP addresses, then link it with the API key Binance "
            "shows (kind ed25519). The private key never leaves this server.",
        }

    def link(self, address: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Store candidate credentials and have execution verify them against the exchange."""
        rid = checks.request_id(body)
        kind = body.get("kind")
        api_key = body.get("api_key")
        if not isinstance(api_key, str) or not 8 <= len(api_key) <= MAX_SECRET_CHARS:
            raise Refusal("bad_api_key", "api_key must be the API key Binance shows (a string)")
        if not api_key.isascii() or not api_key.isalnum():
            raise Refusal("bad_api_key", "api_key must be letters and digits only")
        key = self.keys.account(address)
        if kind == "hmac":
            secret = body.get("secret")
            if not isinstance(secret, str) or not 8 <= len(secret) <= MAX_SECRET_CHARS:
                raise Refusal("bad_secret", "secret must be the secret key Binance showed once")
            payload: dict[str, Any] = {"api_key": api_key, "secret": secret}
            if self.r.hget(key, "kind") not in (None, b"hmac") and self._linked(address):
                raise Refusal("already_linked", "unlink the current key first", 409)
            self.r.hsetnx(key, "kind", "hmac")
        elif kind == "ed25519":
            token = self.r.hget(key, "keypair")
            if token is None:
                raise Refusal(
                    "no_keypair",
                    "generate a key pair first (POST "
                    "/api/account/keypair) and register its public key on Binance",
                    409,
                )
            pair = orjson.loads(
                self.vault.decrypt(token.decode(), address=address, purpose="keypair")
            )
            payload = {"api_key": api_key, "private_key": pair["private_key"]}
        else:
            raise Refusal("bad_kind", "kind must be ed25519 (recommended) or hmac")
        candidate = self.vault.encrypt(orjson.dumps(payload), address=address, purpose="candidate")
        del payload
        self.r.hset(
            key, mapping={"candidate": candidate, "fingerprint": fingerprint(api_key), "kind": kind}
        )
        self.r.hsetnx(key, "status", "verifying")
        return self._queue(OrderCommand(rid, address, "link", now_ms()), order=None)

    def unlink(self, address: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        rid = checks.request_id(body)
        self.r.delete(self.keys.account(address))
        return self._queue(OrderCommand(rid, address, "unlink", now_ms()), order=None)

    def _linked(self, address: str) -> bool:
        return bool(self.r.hget(self.keys.account(address), "status") == b"linked")

    # --- trade commands -----------------------------------------------------------------------

    def execute(self, address: str, action: str, body: Any, *, family: str | None = None
                ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        """Check and queue one command; return (HTTP status, answer). Raises nothing.

        ``family``: the login of a socket's token, checked to be alive in the same round trip
        as the first reads (a REST request's token was checked by ``require``). The command's
        time (its order's ``created_ms``, the start of its time to live) is its receipt here."""
        received = now_ms()
        try:
            if not isinstance(body, dict):
                raise Refusal("bad_request", "expected a JSON object")
            return self._execute(address, action, body, family, received)
        except Refusal as exc:
            rid = body.get("request_id") if isinstance(body, dict) else None
            self.r.xadd(
                self.keys.order_audit(),
                {
                    "address": address.lower(),
                    "request_id": str(rid)[:64] if rid else "",
                    "action": action[:30],
                    "outcome": "refused",
                    "detail": exc.code,
                    "by": "web",
                    "ms": now_ms(),
                },
                maxlen=AUDIT_MAXLEN,
                approximate=True,
            )
            return exc.status, {"ok": False, "error": exc.code, "message": exc.message}

    def _execute(
        self, address: str, action: str, body: dict[str, Any], family: str | None, now: int
    ) -> tuple[int, dict[str, Any]]:
        rid = checks.request_id(body)
        target = body.get("client_order_id") if action == "cancel" else None
        if action == "cancel" and (not isinstance(target, str) or not target or len(target) > 36):
            raise Refusal("bad_client_order_id", "client_order_id of the order to cancel")
        # One round trip for these reads, one for the script that checks the budget and queues:
        # in a web process busy with market data, each round trip may wait for the fan-out's
        # current slice (web/fanout.py).
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.order_request(address, rid))
            pipe.hget(self.keys.account(address), "status")
            if family is not None:
                pipe.exists(self.keys.auth_family(family))
            if target is not None:
                pipe.hget(self.keys.orders_live(address), target)
            done, status, *rest = pipe.execute()
        if family is not None and not rest.pop(0):
            raise Refusal("token_revoked", "this session was signed out or revoked", 401)
        if done is not None:
            return self._duplicate(address, rid, done.decode())
        if action == "link":
            return self.link(address, body)
        if action == "unlink":
            return self.unlink(address, body)
        if status != b"linked":
            raise Refusal("no_account", "link a Binance account before trading", 409)
        if target is not None:
            if rest[0] is None:
                raise Refusal("unknown_order", "no open order of yours has this id", 404)
            symbol = Order.from_json(rest[0]).symbol
            cmd = OrderCommand(rid, address, "cancel", now, symbol=symbol, client_order_id=target)
            return self._queue(cmd, order=None)
        inst = checks.symbol(body, self.instruments())
        cmd = OrderCommand(rid, address, action, now, symbol=inst.symbol)
        order: Order | None = None
        if action == "place":
            p = checks.place(body, inst, self.reference_price(inst.symbol))
            cid = new_client_order_id()
            cmd = OrderCommand(
                rid,
                address,
                action,
                now,
                symbol=p.symbol,
                client_order_id=cid,
                side=p.side,
                order_type=p.order_type,
                time_in_force=p.time_in_force,
                quantity=p.quantity,
                price=p.price,
                reduce_only=p.reduce_only,
            )
            order = Order(
                cid,
                p.symbol,
                p.side,
                p.order_type,
                format(p.quantity, "f"),
                "PENDING",
                request_id=rid,
                time_in_force=p.time_in_force or "",
                price=format(p.price, "f") if p.price is not None else "0",
                reduce_only=p.reduce_only,
                created_ms=now,
            )
        elif action == "close":
            cid = new_client_order_id()
            cmd = OrderCommand(
                rid,
                address,
                action,
                now,
                symbol=inst.symbol,
                client_order_id=cid,
                order_type="MARKET",
                reduce_only=True,
            )
            order = Order(
                cid,
                inst.symbol,
                "",
                "MARKET",
                "0",
                "PENDING",
                request_id=rid,
                reduce_only=True,
                created_ms=now,
            )
        elif action == "leverage":
            cmd = OrderCommand(
                rid, address, action, now, symbol=inst.symbol, leverage=checks.leverage(body)
            )
        elif action == "margin_type":
            cmd = OrderCommand(
                rid, address, action, now, symbol=inst.symbol, margin_type=checks.margin_type(body)
            )
        elif action != "cancel_all":
            raise Refusal("bad_action", f"unknown action {action[:30]!r}")
        return self._queue(cmd, order=order)

    def _queue(self, cmd: OrderCommand, *, order: Order | None) -> tuple[int, dict[str, Any]]:
        """Check the budgets and queue ``cmd`` in one script; then wait for its outcome."""
        limit = self.settings.execution.commands_per_minute
        keys, args = submission(self.keys, cmd, order, per_minute=limit,
                                exec_shards=self.settings.execution.shards)  # fmt: skip
        verdict = self._submit(keys=keys, args=args)
        if verdict == 1:
            raise Refusal("rate_limited", f"at most {limit} trade commands per minute", 429)
        if verdict in (2, 3):
            window = "10 seconds" if verdict == 2 else "minute"
            raise Refusal(
                "order_budget",
                f"the account's order budget for this {window} is "
                "spent (Binance: 300 per 10 s, 1,200 per minute)",
                429,
            )
        if verdict is not None:
            return self._duplicate(cmd.address, cmd.request_id, verdict.decode())
        return self._wait(cmd.address, cmd.request_id, order)

    def _wait(self, address: str, rid: str, order: Order | None) -> tuple[int, dict[str, Any]]:
        got = None
        if self._waiting < MAX_WAITERS:
            self._waiting += 1
            try:
                deadline = time.monotonic() + self.settings.execution.reply_timeout_ms / 1000
                key = self.keys.order_reply(rid, address)
                while got is None and (left := deadline - time.monotonic()) > 0:
                    got = self._waiters.blpop([key], timeout=max(min(left, WAIT_SLICE_S), 0.01))
            finally:
                self._waiting -= 1
        if got is None:
            answer: dict[str, Any] = {
                "ok": None,
                "request_id": rid,
                "message": "queued; the outcome will arrive on the socket (order_event)",
            }
            if order is not None:
                answer["order"] = self._order_view(address, order.client_order_id)
            return 202, answer
        data = decode_event(got[1]).data
        data["request_id"] = rid
        ok = data.get("ok")
        return (200 if ok else 202 if ok is None else 400), data

    def _duplicate(self, address: str, rid: str, marker: str) -> tuple[int, dict[str, Any]]:
        answer: dict[str, Any] = {"request_id": rid, "duplicate": True}
        if marker.startswith("cmd:"):
            raw = self.r.get(self.keys.order_result(rid, address))
            if raw is None:
                return 202, {**answer, "ok": None, "message": "this request id was already "
                             "received; its outcome is not known yet"}  # fmt: skip
            data = decode_event(raw).data
            ok = data.get("ok")
            return (200 if ok else 202 if ok is None else 400), {**data, **answer}
        deadline = time.monotonic() + self.settings.execution.reply_timeout_ms / 1000
        while True:
            view = self._order_view(address, marker)
            status = view.get("status") if view else None
            if status not in ("PENDING", "SENDING") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        ok = None if status in ("PENDING", "SENDING", "UNKNOWN") else status != "REJECTED"
        return (200 if ok else 202 if ok is None else 400), {**answer, "ok": ok, "order": view}

    # --- reads --------------------------------------------------------------------------------

    def _order_view(self, address: str, cid: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys.orders_live(address), cid)
        if raw is not None:
            return Order.from_json(raw).view()
        for item in self.r.lrange(self.keys.orders_done(address), 0, -1):
            order = Order.from_json(item)
            if order.client_order_id == cid:
                return order.view()
        return None

    def open_orders(self, address: str) -> list[dict[str, Any]]:
        rows = [Order.from_json(v).view() for v in self.r.hvals(self.keys.orders_live(address))]
        return sorted(rows, key=lambda o: o["created_ms"] or o["update_ms"])

    def history(self, address: str, limit: int) -> list[dict[str, Any]]:
        return [
            Order.from_json(v).view()
            for v in self.r.lrange(self.keys.orders_done(address), 0, limit - 1)
        ]

    def fills(self, address: str, limit: int) -> list[dict[str, Any]]:
        key = self.keys.order_fills(address)
        ids = self.r.zrevrange(key + ":index", 0, limit - 1)
        rows = self.r.hmget(key, ids) if ids else []
        return [orjson.loads(r) for r in rows if r]

    def audit(self, address: str, limit: int) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for _, fields in self.r.xrevrange(self.keys.order_audit(), count=10_000):
            if fields.get(b"address") == address.lower().encode():
                out.append({k.decode(): v.decode() for k, v in fields.items()})
                if len(out) >= limit:
                    break
        return out
