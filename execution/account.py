"""One linked account inside the execution process: its commands, in order, and its orders.

Commands of one account run one at a time, in stream order. Order state is changed only under
the account's lock, reloaded from Redis each time, so a user-stream event that lands while a
REST call is in flight is never overwritten by the stale copy the command holds. What the
exchange reports on its own (user stream, snapshots) is applied by execution/reconcile.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from binance.account import AccountClient, SharedWeight
from binance.signing import Signer
from binance.user_stream import KeyStore, UserStream
from core.clock import now_ms
from core.config import Settings
from core.errors import Banned, NotSent, OutcomeUnknown, RateLimited, RestError, Throttled
from core.trading import Order, OrderCommand, OrderEvent
from execution import orders
from execution.reconcile import Reconciler
from execution.store import Store

log = logging.getLogger(__name__)

QUEUE_MAX = 1_000  # commands waiting per account; a full queue makes the reader wait
RESOLVE_GRACE_MS = 5_000  # after timestamp + recvWindow + this, an unseen order never went live
RESOLVE_MIN_LOOKUPS = 3  # and at least this many "does not exist" answers (lookups lag)
RESOLVE_MAX_LOOKUPS = 60

Ack = Callable[[str], Awaitable[None]]


class AccountRuntime:
    """Run one account until stopped: ``start()``, ``submit()`` commands, ``stop()``."""

    def __init__(
        self,
        address: str,
        signer: Signer,
        store: Store,
        settings: Settings,
        *,
        linked_ms: int = 0,
        weight: SharedWeight | None = None,
        key_store: KeyStore | None = None,
    ) -> None:
        ex = settings.execution
        self.address = address
        self.store = store
        self.settings = settings
        self.linked_ms = linked_ms
        self.client = AccountClient(
            settings.market.rest_url,
            signer,
            recv_window_ms=ex.recv_window_ms,
            timeout_ms=ex.timeout_ms,
            weight=weight,
        )
        self.sync = Reconciler(self)
        self.stream = UserStream(
            self.client,
            settings.market.ws_private,
            on_event=self.sync.on_event,
            on_resync=self.sync.reconcile,
            keepalive_s=ex.keepalive_s,
            max_age_s=ex.stream_rotate_s,
            label=address,
            key_store=key_store,
        )
        self.queue: asyncio.Queue[tuple[str, OrderCommand, Ack, bool]] = asyncio.Queue(QUEUE_MAX)
        self.stats: Counter[str] = Counter()
        self.lock = asyncio.Lock()
        self.sending: set[str] = set()  # client order ids whose POST this process awaits
        self._tasks: list[asyncio.Task[Any]] = []
        self._resolving: dict[str, asyncio.Task[None]] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(RestError):
            await self.client.sync_time()
        self._tasks = [
            asyncio.create_task(self._commands(), name="commands"),
            asyncio.create_task(self.stream.run(), name="user stream"),
            asyncio.create_task(self._periodic(), name="reconciliation"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_deaths"] += 1
            log.error("%s of %s stopped: %r", task.get_name(), self.address, task.exception())

    async def stop(self) -> None:
        self.sync.cancel()
        tasks = [*self._tasks, *self._resolving.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    async def submit(
        self, entry_id: str, cmd: OrderCommand, ack: Ack, *, redelivered: bool = False
    ) -> None:
        """Queue ``cmd``; ``redelivered``: it may have been handled before a crash."""
        await self.queue.put((entry_id, cmd, ack, redelivered))

    def health(self) -> dict[str, Any]:
        return {
            "queue": self.queue.qsize(),
            "stream": self.stream.connected,
            "resolving": len(self._resolving),
            "offset_ms": self.client.offset_ms,
            **self.stats,
            **{f"stream_{k}": v for k, v in self.stream.stats.items()},
        }

    async def _commands(self) -> None:
        while True:
            entry_id, cmd, ack, redelivered = await self.queue.get()
            try:
                await self.handle(cmd, redelivered=redelivered)
                self.stats["commands"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or Redis trouble must not stop the account's commands
                self.stats["errors"] += 1
                log.exception(
                    "command %s of %s failed",
                    cmd.action,
                    self.address,
                    extra={"request_id": cmd.request_id},
                )
                with contextlib.suppress(Exception):
                    await self._reply(
                        cmd,
                        ok=None,
                        error="internal",
                        message="the command failed inside the server; it was logged",
                    )
            try:
                await ack(entry_id)
            except Exception:  # left pending: read again later, which is harmless
                log.exception("ack of %s failed", entry_id)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.execution.reconcile_s)
            if not self.stream.connected:
                continue  # the stream's own resync comes with its reconnection
            try:
                await self.sync.reconcile()
            except (Throttled, RateLimited, Banned):  # background work waits for the weight
                self.stats["reconcile_deferred"] += 1
            except Exception as exc:  # the next round tries again
                self.stats["reconcile_errors"] += 1
                log.warning("reconciliation of %s failed: %r", self.address, exc)

    # --- commands -----------------------------------------------------------------------------

    async def handle(self, cmd: OrderCommand, *, redelivered: bool = False) -> None:
        symbol = cmd.symbol or ""
        if cmd.action in ("place", "close"):
            await self._place(cmd, redelivered=redelivered)
        elif cmd.action == "cancel":
            await self._cancel(cmd)
        elif cmd.action == "cancel_all":
            await self._simple(cmd, self.client.cancel_all(symbol))
        elif cmd.action == "leverage":
            await self._simple(cmd, self.client.set_leverage(symbol, cmd.leverage or 1))
        elif cmd.action == "margin_type":
            margin = cmd.margin_type or "CROSSED"
            await self._simple(cmd, self.client.set_margin_type(symbol, margin))

    async def _simple(self, cmd: OrderCommand, call: Awaitable[dict[str, Any]]) -> None:
        try:
            body = await call
        except OutcomeUnknown:
            await self._reply(
                cmd,
                ok=None,
                message="the exchange did not answer: the change may "
                "or may not have been made; the account view will show",
            )
            self.sync.schedule_refresh(now=True)
            return
        except RestError as exc:
            await self._reply_error(cmd, exc)
            return
        await self._reply(cmd, ok=True, result=body)
        await self.store.audit(self.address, cmd.request_id, cmd.action, "ok")
        self.sync.schedule_refresh(now=True)

    async def _place(self, cmd: OrderCommand, *, redelivered: bool) -> None:
        cid = cmd.client_order_id or ""
        order = await self.store.order(self.address, cid)
        if order is None:
            done = await self.store.done_order(self.address, cid)
            if done is not None:  # a redelivered command: its order is already final
                await self._reply_order(cmd, done)
            else:
                await self._reply(
                    cmd, ok=False, error="unknown_order", message="no stored order for this command"
                )
            return
        if order.status in ("SENDING", "UNKNOWN"):
            await self._reply_order(cmd, order)  # redelivered after a crash: resolve, never resend
            self.resolve_soon(cid)
            return
        if order.status != "PENDING":
            await self._reply_order(cmd, order)
            return
        age_ms = now_ms() - cmd.created_ms
        if age_ms > self.settings.execution.command_ttl_ms:
            rejected = await self._reject(
                cid,
                0,
                f"expired: the command waited {age_ms // 1000} s "
                "for the execution service; nothing was sent",
            )
            await self._reply_order(cmd, rejected or order)
            return
        if redelivered and await self._already_on_exchange(cmd, order):
            return
        sending = dataclasses.replace(order, status="SENDING", sent_ms=self.client.now_ms())
        if cmd.action == "close" and not await self._size_close(cmd, sending):
            return
        if not await self.store.claim(self.address, sending, "PENDING"):
            current = await self.store.order(self.address, cid)
            await self._reply_order(cmd, current or order)
            return
        t0 = now_ms()
        self.sending.add(cid)
        try:
            body = await self.client.place_order(orders.place_params(sending))
        except OutcomeUnknown as exc:
            self.stats["unknown"] += 1
            log.warning(
                "order %s of %s: outcome unknown (%s); resolving by lookup",
                cid,
                self.address,
                exc.msg,
                extra={"request_id": cmd.request_id},
            )
            # The deadline counts from the timestamp actually signed (a re-sync or a -1021 retry
            # makes it later than our estimate before sending).
            sent_at = exc.sent_at_ms or self.client.now_ms()
            final = await self._set_status(cid, "UNKNOWN", expect=("SENDING",), sent_ms=sent_at)
            await self.store.audit(self.address, cmd.request_id, cmd.action, "unknown", exc.msg)
            await self._reply_order(cmd, final or sending)
            self.resolve_soon(cid)
            return
        except RestError as exc:
            why = "exchange unreachable: nothing was sent" if isinstance(exc, NotSent) else ""
            rejected = await self._reject(
                cid, exc.code or 0, why or orders.error_text(exc.code, exc.msg)
            )
            await self.store.audit(
                self.address, cmd.request_id, cmd.action, "rejected", f"{exc.code}: {exc.msg}"
            )
            await self._reply_order(cmd, rejected or sending)
            return
        finally:
            self.sending.discard(cid)
        self.stats["placed"] += 1
        self.stats["place_ms_total"] += now_ms() - t0
        updated = await self.update(cid, orders.applier(body))
        await self.store.audit(
            self.address,
            cmd.request_id,
            cmd.action,
            "placed",
            f"{body.get('status')} orderId {body.get('orderId')}",
        )
        await self._reply_order(cmd, updated or sending)

    async def _already_on_exchange(self, cmd: OrderCommand, order: Order) -> bool:
        """For a command read again after a crash: True if its order already exists (applied).

        The compare-and-set on PENDING guards against a second send, but a Redis restored from
        a file older than the send would have forgotten it: ask the exchange first.
        """
        cid = order.client_order_id
        try:
            body = await self.client.query_order(order.symbol, cid)
        except RestError as exc:
            if exc.code == -2013:
                return False
            # Not known now (the IP's weight refused the lookup, or it got no answer): never
            # send blind, never leave it PENDING (nothing else resolves a PENDING order). It is
            # resolved by lookup as a lost answer is, its deadline counted from now.
            self.stats["redelivered_unknown"] += 1
            unknown = await self._set_status(cid, "UNKNOWN", expect=("PENDING",),
                                             sent_ms=self.client.now_ms())  # fmt: skip
            await self._reply_order(cmd, unknown or order)
            self.resolve_soon(cid)
            return True
        updated = await self.update(cid, orders.applier(body))
        self.stats["redelivered_found"] += 1
        await self._reply_order(cmd, updated or order)
        return True

    async def _size_close(self, cmd: OrderCommand, sending: Order) -> bool:
        """Fill in side and size of a close from the exchange's position; False if none."""
        try:
            rows = await self.client.position_risk()
        except RestError as exc:
            await self._reject(
                sending.client_order_id,
                exc.code or 0,
                "could not read the position: " + orders.error_text(exc.code, exc.msg),
            )
            await self._reply_error(cmd, exc)
            return False
        amount = sum(
            (
                Decimal(str(r.get("positionAmt", "0")))
                for r in rows
                if r.get("symbol") == cmd.symbol
            ),
            Decimal(0),
        )
        if not amount:
            rejected = await self._reject(
                sending.client_order_id, 0, f"no open position on {cmd.symbol}"
            )
            await self._reply_order(cmd, rejected or sending)
            return False
        sending.side = "SELL" if amount > 0 else "BUY"
        sending.quantity = format(abs(amount), "f")
        sending.reduce_only = True
        return True

    async def _cancel(self, cmd: OrderCommand) -> None:
        cid = cmd.client_order_id or ""
        stored = await self.store.order(self.address, cid)
        symbol = stored.symbol if stored is not None else cmd.symbol or ""
        try:
            body = await self.client.cancel_order(symbol, cid)
        except OutcomeUnknown:
            await self._reply(
                cmd,
                ok=None,
                message="cancel sent; the exchange did not answer, the order's state will follow",
            )
            self.resolve_soon(cid, lookup_only=True)
            return
        except RestError as exc:
            await self._reply_error(cmd, exc)
            return
        updated = await self.update(cid, orders.applier(body))
        await self.store.audit(self.address, cmd.request_id, "cancel", "ok", cid)
        if updated is not None:
            await self._reply_order(cmd, updated)
        else:
            await self._reply(cmd, ok=True, result=body)

    # --- order state --------------------------------------------------------------------------

    async def update(self, cid: str, change: Callable[[Order], bool]) -> Order | None:
        """Apply ``change`` to the stored order under the lock; publish it if it changed."""
        async with self.lock:
            order = await self.store.order(self.address, cid)
            if order is None:
                return await self.store.done_order(self.address, cid)
            if change(order):
                await self.store.save(self.address, order)
                await self.emit("order", order.view())
            return order

    async def _set_status(
        self, cid: str, status: str, *, expect: tuple[str, ...], sent_ms: int = 0
    ) -> Order | None:
        def change(o: Order) -> bool:
            if o.status not in expect:
                return False
            o.status, o.sent_ms = status, max(o.sent_ms, sent_ms)
            return True

        return await self.update(cid, change)

    async def _reject(self, cid: str, code: int, text: str) -> Order | None:
        def change(o: Order) -> bool:
            if o.status not in ("PENDING", "SENDING", "UNKNOWN"):
                return False
            o.status, o.error_code, o.error = "REJECTED", code, text
            return True

        return await self.update(cid, change)

    def resolve_soon(self, cid: str, *, lookup_only: bool = False) -> None:
        if cid in self._resolving:
            return
        task = asyncio.create_task(self._resolve(cid, lookup_only=lookup_only))
        self._resolving[cid] = task
        task.add_done_callback(lambda t: self._resolved(cid, t))

    def _resolved(self, cid: str, task: asyncio.Task[None]) -> None:
        self._resolving.pop(cid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("resolving %s of %s failed: %r", cid, self.address, task.exception())

    async def _resolve(self, cid: str, *, lookup_only: bool = False) -> None:
        """Find out what happened to an order whose answer was lost; never send it again."""
        misses = attempt = 0
        while attempt < RESOLVE_MAX_LOOKUPS:
            order = await self.store.order(self.address, cid)
            if order is None or (not lookup_only and order.status not in ("SENDING", "UNKNOWN")):
                return  # the user stream (or a reconciliation) resolved it
            if cid in self.sending:  # our own POST is still out: its answer comes first
                await asyncio.sleep(0.5)
                attempt += 1
                continue
            try:
                body = await self.client.query_order(order.symbol, cid)
            except (Throttled, RateLimited, Banned) as exc:
                # Refused by the IP's weight, nothing sent: not a lookup; asked again when the
                # refusal ends (a minute at most), so a long back-off does not use the lookups up.
                await asyncio.sleep(min((exc.retry_after_ms or 1000) / 1000, 60.0))
                continue
            except RestError as exc:
                deadline = order.sent_ms + self.settings.execution.recv_window_ms
                if exc.code == -2013:
                    misses += 1
                if (
                    exc.code == -2013
                    and not lookup_only
                    and misses >= RESOLVE_MIN_LOOKUPS
                    and self.client.now_ms() > deadline + RESOLVE_GRACE_MS
                ):
                    # Past timestamp + recvWindow the matching engine refuses it (-5028):
                    # an order the exchange still does not know will never exist.
                    await self._reject(
                        cid, -2013, "the order never reached the exchange: nothing was placed"
                    )
                    self.stats["resolved_absent"] += 1
                    return
            else:
                await self.update(cid, orders.applier(body))
                self.stats["resolved"] += 1
                return
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
            attempt += 1
        log.error(
            "order %s of %s still unresolved after %d lookups",
            cid,
            self.address,
            RESOLVE_MAX_LOOKUPS,
        )

    # --- events and replies -------------------------------------------------------------------

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        await self.store.emit(OrderEvent(self.address, kind, now_ms(), None, data))

    async def _reply(
        self,
        cmd: OrderCommand,
        *,
        ok: bool | None,
        error: str = "",
        message: str = "",
        result: Any = None,
        order: Order | None = None,
    ) -> None:
        data: dict[str, Any] = {"ok": ok, "action": cmd.action}
        if error:
            data["error"] = error
        if message:
            data["message"] = message
        if result is not None:
            data["result"] = result
        if order is not None:
            data["order"] = order.view()
        await self.store.emit(
            OrderEvent(self.address, "result", now_ms(), cmd.request_id, data), reply=True
        )

    async def _reply_order(self, cmd: OrderCommand, order: Order) -> None:
        if order.status == "REJECTED":
            await self._reply(cmd, ok=False, error="rejected", message=order.error, order=order)
        elif order.status in ("SENDING", "UNKNOWN"):
            await self._reply(
                cmd,
                ok=None,
                order=order,
                message="the exchange did not answer; "
                "the order is being looked up and will not be sent twice",
            )
        else:
            await self._reply(cmd, ok=True, order=order)

    async def _reply_error(self, cmd: OrderCommand, exc: RestError) -> None:
        await self.store.audit(
            self.address, cmd.request_id, cmd.action, "rejected", f"{exc.code}: {exc.msg}"
        )
        await self._reply(
            cmd,
            ok=False,
            error=f"exchange_{-(exc.code or 0)}",
            message=orders.error_text(exc.code, exc.msg),
        )
