"""The execution process: reads trade commands, runs one AccountRuntime per linked account.

``orders:commands`` is read through the consumer group ``execution``; an entry is acked only
once its command has been handled, so a crash leaves it pending and the restarted process (same
consumer name) reads it again. Redelivery is harmless: an order moves from PENDING to SENDING
exactly once (compare-and-set in Redis), and an order found SENDING or UNKNOWN is looked up,
never sent again. Entries left pending by a consumer that is gone are claimed after
:data:`CLAIM_IDLE_MS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from typing import Any

import orjson
import redis.asyncio
from redis.exceptions import ResponseError

from binance.account import AccountClient, SharedWeight
from binance.exchange_info import load_exchange_info
from core.clock import now_ms
from core.config import Settings
from core.errors import Banned, RateLimited, RestError, SchemaError, Throttled
from core.keys import GROUP_EXECUTION, Keys, execution_shard_of
from core.trading import (
    Instrument,
    OrderCommand,
    OrderEvent,
    decode_command,
    encode_instruments,
)
from core.vault import Vault, VaultError, fingerprint
from execution import orders
from execution.account import AccountRuntime
from execution.credentials import seal, signer_from, unseal
from execution.listen_keys import StoredListenKey
from execution.store import Store

log = logging.getLogger(__name__)

READ_COUNT = 100
BLOCK_MS = 1_000
CLAIM_IDLE_MS = 30_000
HEALTH_EVERY_S = 2.0
HEALTH_TTL_S = 60
LINK_BUDGET_TRIES = 3  # a link check that meets a spent IP budget waits for it, twice


class Backoff:
    """Retry pacing while Redis is unreachable: 0.5 s doubling to 5 s, one warning per outage."""

    def __init__(self) -> None:
        self.delay = 0.0

    async def failed(self, exc: BaseException) -> None:
        if self.delay == 0.0:
            log.warning("redis unreachable (%s): waiting for it", type(exc).__name__)
            self.delay = 0.5
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 5.0)

    def answered(self) -> None:
        if self.delay:
            log.info("redis answers again")
            self.delay = 0.0


class ExecutionService:
    """Everything one execution process does."""

    def __init__(
        self, settings: Settings, r: redis.asyncio.Redis, *, consumer: str, shard: int = 0
    ) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        # Execution shard: the accounts with execution_shard_of(address) == shard, and their
        # commands' stream (docs/architecture.md, "Scaling out").
        self.shard = shard
        self.commands = self.keys.order_commands(shard)
        self.r = r
        self.store = Store(r, self.keys)
        self.vault = Vault.from_setting(settings.namespace, settings.key_encryption_key)
        self.consumer = consumer
        self.runtimes: dict[str, AccountRuntime] = {}
        self.stats: Counter[str] = Counter()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inflight: set[str] = set()  # entry ids dispatched and not yet acked
        self.weight = SharedWeight(
            r, self.keys, settings.candles.rest_weight_budget, settings.candles.rest_weight_reserve
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        await self._publish_instruments()
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.r.xgroup_create(self.commands, GROUP_EXECUTION, id="0", mkstream=True)
        shards = self.settings.execution.shards
        for address in await self.store.accounts():
            if execution_shard_of(address, shards) == self.shard:
                await self._start_account(address)
        health = asyncio.create_task(self._health())
        try:
            await self._read_loop()
        finally:
            self._stopping.set()
            health.cancel()
            for rt in list(self.runtimes.values()):
                await rt.stop()
            with contextlib.suppress(OSError, redis.RedisError):  # Redis may be the reason
                await self._write_health()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Stopping: its clean-up has begun (core/stopping.py must not cancel it again)."""
        return self._stopping.is_set()

    async def _publish_instruments(self) -> None:
        stop = threading.Event()
        try:
            symbols, info = await asyncio.to_thread(load_exchange_info, self.settings, stop=stop)
        finally:
            stop.set()  # cancelled (SIGTERM) while the exchange is unreachable: end the retries
        wanted = set(symbols)
        items = [
            Instrument.from_exchange(e)
            for e in info.get("symbols", [])
            if e.get("symbol") in wanted
        ]
        await self.r.set(self.keys.instruments(), encode_instruments(items))
        log.info("instruments published: %d symbols", len(items))

    async def _start_account(self, address: str) -> None:
        record = await self.store.account_record(address)
        if record.get("status") != "linked" or "secret" not in record:
            return
        try:
            signer = signer_from(unseal(self.vault, address, "secret", record["secret"]))
        except VaultError as exc:
            self.stats["undecryptable"] += 1
            log.error("credentials of %s do not decrypt (%s): account not started", address, exc)
            return
        old = self.runtimes.pop(address.lower(), None)
        if old is not None:
            await old.stop()
        rt = AccountRuntime(
            address,
            signer,
            self.store,
            self.settings,
            linked_ms=int(record.get("linked_ms", "0") or 0),
            weight=self.weight,
            key_store=StoredListenKey(
                self.store, self.vault, address, record.get("fingerprint", "")
            ),
        )
        self.runtimes[address.lower()] = rt
        await rt.start()
        log.info("account %s started (key %s)", address, record.get("fingerprint", "?"))

    # --- commands -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        stream = self.commands
        # First what this consumer left pending (a crash), page by page from "0"; once a page
        # comes back empty, new entries (">").
        start_id = "0"
        last_claim = time.monotonic()  # claims come after our own pending entries
        outage = Backoff()
        while not self._stopping.is_set():
            try:
                if start_id == ">" and time.monotonic() - last_claim > CLAIM_IDLE_MS / 1000:
                    last_claim = time.monotonic()
                    await self._claim_orphans()
                reply: Any = await self.r.xreadgroup(
                    GROUP_EXECUTION,
                    self.consumer,
                    {stream: start_id},
                    count=READ_COUNT,
                    block=None if start_id != ">" else BLOCK_MS,
                )
            except (OSError, redis.ConnectionError, redis.TimeoutError) as exc:
                # Redis restarting: wait for it like every other process type. The commands
                # stay in the stream and the group, unacked ones pending: nothing is lost.
                await outage.failed(exc)
                continue
            outage.answered()
            entries = reply[0][1] if reply else []
            if start_id != ">" and not entries:
                start_id = ">"
                continue
            for entry_id, fields in entries:
                await self._dispatch(entry_id.decode(), fields.get(b"d", b""),
                                     redelivered=start_id != ">")  # fmt: skip
            if start_id != ">" and entries:
                start_id = entries[-1][0].decode()

    async def _claim_orphans(self) -> None:
        """Take over entries another consumer left pending, once that consumer is gone.

        Only entries idle for CLAIM_IDLE_MS, of consumers whose health report is stale: a live
        execution process's slow command is never taken from it, and our own entries (in an
        account's queue, not yet acked) are never dispatched twice.
        """
        stream = self.commands
        try:
            rows: Any = await self.r.xpending_range(
                stream, GROUP_EXECUTION, min="-", max="+", count=READ_COUNT, idle=CLAIM_IDLE_MS
            )
        except ResponseError:
            return
        health: Any = await self.r.hgetall(self.keys.execution_health())
        alive = {
            name.decode()
            for name, raw in health.items()
            if now_ms() - int(orjson.loads(raw).get("at_ms", 0)) < CLAIM_IDLE_MS
        }
        ids = [
            row["message_id"]
            for row in rows
            if row["consumer"].decode() not in alive | {self.consumer}
        ]
        if not ids:
            return
        claimed: Any = await self.r.xclaim(
            stream, GROUP_EXECUTION, self.consumer, min_idle_time=CLAIM_IDLE_MS, message_ids=ids
        )
        for entry_id, fields in claimed:
            if fields and entry_id.decode() not in self._inflight:
                self.stats["claimed"] += 1
                await self._dispatch(entry_id.decode(), fields.get(b"d", b""), redelivered=True)

    async def _ack(self, entry_id: str) -> None:
        self._inflight.discard(entry_id)
        await self.r.xack(self.commands, GROUP_EXECUTION, entry_id)

    async def _dispatch(self, entry_id: str, data: bytes, *, redelivered: bool = False) -> None:
        if entry_id in self._inflight:
            return  # already in an account's queue
        self._inflight.add(entry_id)
        try:
            cmd = decode_command(data)
        except SchemaError as exc:
            self.stats["malformed"] += 1
            log.error("undecodable command %s dropped: %s", entry_id, exc)
            await self.store.audit("", "", "?", "malformed", str(exc))
            await self._ack(entry_id)
            return
        self.stats["commands"] += 1
        log.debug(
            "command %s %s of %s",
            cmd.action,
            cmd.request_id,
            cmd.address,
            extra={"entry": entry_id},
        )
        key = cmd.address.lower()
        if cmd.action == "link":
            self._spawn(self._link(cmd, entry_id))
        elif cmd.action == "unlink":
            rt = self.runtimes.pop(key, None)
            if rt is not None:
                await rt.stop()
            await self.store.forget_listen_key(cmd.address)
            await self._reply(cmd, ok=True)
            await self._ack(entry_id)
        elif key in self.runtimes:
            await self.runtimes[key].submit(entry_id, cmd, self._ack, redelivered=redelivered)
        else:
            await self._refuse_unlinked(cmd)
            await self._ack(entry_id)

    async def _refuse_unlinked(self, cmd: OrderCommand) -> None:
        if cmd.client_order_id:
            order = await self.store.order(cmd.address, cmd.client_order_id)
            if order is not None and order.status == "PENDING":
                order.status, order.error = "REJECTED", "no linked exchange account"
                await self.store.save(cmd.address, order)
        await self._reply(
            cmd, ok=False, error="no_account", message="link a Binance account before trading"
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _link(self, cmd: OrderCommand, entry_id: str) -> None:
        """Try stored candidate credentials against the exchange; keep them only if they work."""
        address = cmd.address
        try:
            try:
                problem, detail = await self._verify(address)
            except Exception as exc:  # Redis or a bug: tell the user, keep nothing half-linked
                log.exception("linking %s failed", address)
                await self.r.hdel(self.keys.account(address), "candidate")
                await self._reply(
                    cmd,
                    ok=False,
                    error="link_failed",
                    message=f"linking failed inside the server ({type(exc).__name__})",
                )
                return
            record = await self.store.account_record(address)
            if problem:
                if "secret" not in record and "keypair" not in record:
                    await self.r.delete(self.keys.account(address))
                else:
                    await self.r.hdel(self.keys.account(address), "candidate")
                    await self.r.hset(
                        self.keys.account(address),
                        "status",
                        "linked" if "secret" in record else "pending",
                    )
                await self.store.audit(address, cmd.request_id, "link", "refused", problem)
                await self._reply(cmd, ok=False, error="link_refused", message=problem)
                return
            await self._start_account(address)
            await self.store.audit(
                address, cmd.request_id, "link", "ok", record.get("fingerprint", "")
            )
            await self._reply(
                cmd,
                ok=True,
                result={
                    "kind": record.get("kind"),
                    "fingerprint": record.get("fingerprint"),
                    **detail,
                },
            )
        finally:
            await self._ack(entry_id)

    async def _verify(self, address: str) -> tuple[str, dict[str, Any]]:
        record = await self.store.account_record(address)
        token = record.get("candidate")
        if not token:
            return "there are no credentials waiting to be verified", {}
        try:
            payload = unseal(self.vault, address, "candidate", token)
            signer = signer_from(payload)
        except VaultError:
            return "the stored credentials could not be read; link the account again", {}
        ex = self.settings.execution
        client = AccountClient(
            self.settings.market.rest_url,
            signer,
            recv_window_ms=ex.recv_window_ms,
            timeout_ms=ex.timeout_ms,
            weight=self.weight,
        )
        try:
            for attempt in range(LINK_BUDGET_TRIES):
                try:
                    await client.sync_time()
                    account = await client.account()
                    # One-way mode shows one BOTH row per symbol; hedge mode LONG and SHORT rows.
                    # (5 weight, where GET /fapi/v1/positionSide/dual weighs 30.)
                    rows = await client.position_risk()
                    break
                except (Throttled, RateLimited, Banned) as exc:
                    wait_s = min((exc.retry_after_ms or 60_000) / 1000 + 0.5, 61.0)
                    if attempt == LINK_BUDGET_TRIES - 1:
                        return (f"the server's request budget on the exchange is spent for now: "
                                f"try again in {wait_s:.0f} s (nothing was kept)"), {}  # fmt: skip
                    await asyncio.sleep(wait_s)  # our own budget: the key is not at fault
        except RestError as exc:
            return "the exchange refused the key: " + orders.error_text(exc.code, exc.msg), {}
        finally:
            await client.aclose()
        dual = any(r.get("positionSide") in ("LONG", "SHORT") for r in rows)
        if account.get("canTrade") is False:
            return "futures trading is not enabled for this API key", {}
        if dual:
            return ("the account is in hedge mode; switch it to one-way mode to trade here", {})
        secret = seal(self.vault, address, "secret", payload)
        await self.r.hset(
            self.keys.account(address),
            mapping={
                "secret": secret,
                "status": "linked",
                "linked_ms": now_ms(),
                "fingerprint": fingerprint(signer.api_key),
            },
        )
        await self.r.hdel(self.keys.account(address), "candidate", "keypair")
        return "", {"balances": orders.balances_view(account)}

    async def _reply(
        self, cmd: OrderCommand, *, ok: bool, error: str = "", message: str = "", result: Any = None
    ) -> None:
        data: dict[str, Any] = {"ok": ok, "action": cmd.action}
        if error:
            data["error"], data["message"] = error, message
        if result is not None:
            data["result"] = result
        await self.store.emit(
            OrderEvent(cmd.address, "result", now_ms(), cmd.request_id, data), reply=True
        )

    # --- health -------------------------------------------------------------------------------

    async def _health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            try:
                await self._write_health()
            except (OSError, redis.RedisError) as exc:
                log.warning("health not written: %s", type(exc).__name__)

    async def _write_health(self) -> None:
        pending = 0
        with contextlib.suppress(ResponseError):
            info = await self.r.xpending(self.commands, GROUP_EXECUTION)
            pending = int(info.get("pending", 0))
        body = {
            "at_ms": now_ms(),
            "consumer": self.consumer,
            "shard": f"{self.shard + 1}/{self.settings.execution.shards}",
            "pending": pending,
            "accounts": {a: rt.health() for a, rt in self.runtimes.items()},
            **self.stats,
        }
        await self.r.hset(self.keys.execution_health(), self.consumer, orjson.dumps(body))
        await self.r.expire(self.keys.execution_health(), HEALTH_TTL_S)
