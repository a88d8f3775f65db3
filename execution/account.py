"""One linked account inside the execution process: its commands, user stream and reconciliation.

Commands of one account run one at a time, in stream order. Order state is changed only under
the account's lock, reloaded from Redis each time, so a user-stream event that lands while a
REST call is in flight is never overwritten by the stale copy the command holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from binance.account import AccountClient
from binance.signing import Signer
from binance.user_stream import UserStream
from core.config import Settings
from core.errors import NotSent, OutcomeUnknown, RestError
from core.trading import Order, OrderCommand, OrderEvent
from execution import orders
from execution.store import Store

log = logging.getLogger(__name__)

QUEUE_MAX = 1_000  # commands waiting per account; a full queue makes the reader wait
RESOLVE_GRACE_MS = 5_000  # after timestamp + recvWindow + this, an unseen order never went live
RESOLVE_MIN_LOOKUPS = 3  # and at least this many "does not exist" answers (lookups lag)
DAY_MS = 86_400_000

Ack = Callable[[str], Awaitable[None]]


def _ms() -> int:
    return time.time_ns() // 1_000_000


def _apply_rest(order: Order, *, body: dict[str, Any]) -> bool:
    return orders.apply_rest(order, body)


class AccountRuntime:
    """Run one account until stopped: ``start()``, ``submit()`` commands, ``stop()``."""

    def __init__(
        self, address: str, signer: Signer, store: Store, settings: Settings, *, linked_ms: int = 0
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
        )
        self.stream = UserStream(
            self.client,
            settings.market.ws_private,
            on_event=self.on_event,
            on_resync=self.reconcile,
            keepalive_s=ex.keepalive_s,
            label=address,
        )
        self.queue: asyncio.Queue[tuple[str, OrderCommand, Ack]] = asyncio.Queue(QUEUE_MAX)
        self.stats: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._refresh_pending = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(RestError):
            await self.client.sync_time()
        self._tasks = [
            asyncio.create_task(self._commands(), name=f"commands {self.address}"),
            asyncio.create_task(self.stream.run(), name=f"stream {self.address}"),
            asyncio.create_task(self._periodic(), name=f"reconcile {self.address}"),
        ]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._resolving.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._resolving.values(), return_exceptions=True)
        await self.client.aclose()

    async def submit(self, entry_id: str, cmd: OrderCommand, ack: Ack) -> None:
        await self.queue.put((entry_id, cmd, ack))

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
            entry_id, cmd, ack = await self.queue.get()
            try:
                await self.handle(cmd)
                self.stats["commands"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the account's other commands
                self.stats["errors"] += 1
                log.exception(
                    "command %s of %s failed",
                    cmd.action,
                    self.address,
                    extra={"request_id": cmd.request_id},
                )
                await self._reply(
                    cmd,
                    ok=False,
                    error="internal",
                    message="the command failed inside the server; it was logged",
                )
            await ack(entry_id)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.execution.reconcile_s)
            if self.stream.connected:
                try:
                    await self.reconcile()
                except (RestError, OSError) as exc:
                    log.warning("reconcile of %s failed: %s", self.address, type(exc).__name__)

    # --- commands -----------------------------------------------------------------------------

    async def handle(self, cmd: OrderCommand) -> None:
        if cmd.action in ("place", "close"):
            await self._place(cmd)
        elif cmd.action == "cancel":
            await self._cancel(cmd)
        elif cmd.action == "cancel_all":
            await self._simple(cmd, self.client.cancel_all(cmd.symbol or ""))
        elif cmd.action == "leverage":
            await self._simple(cmd, self.client.set_leverage(cmd.symbol or "", cmd.leverage or 1))
        elif cmd.action == "margin_type":
            await self._simple(
                cmd, self.client.set_margin_type(cmd.symbol or "", cmd.margin_type or "CROSSED")
            )

    async def _simple(self, cmd: OrderCommand, call: Awaitable[dict[str, Any]]) -> None:
        try:
            body = await call
        except RestError as exc:
            await self._reply_error(cmd, exc)
            return
        await self._reply(cmd, ok=True, result=body)
        await self.store.audit(self.address, cmd.request_id, cmd.action, "ok")
        self._schedule_refresh()

    async def _place(self, cmd: OrderCommand) -> None:
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
            self._resolve_soon(cid)
            return
        if order.status != "PENDING":
            await self._reply_order(cmd, order)
            return
        sending = dataclasses.replace(order, status="SENDING", sent_ms=self.client.now_ms())
        if cmd.action == "close" and not await self._size_close(cmd, sending):
            return
        if not await self.store.claim(self.address, sending, "PENDING"):
            current = await self.store.order(self.address, cid)
            await self._reply_order(cmd, current or order)
            return
        t0 = _ms()
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
            final = await self._set_status(cid, "UNKNOWN", expect=("SENDING",))
            await self.store.audit(self.address, cmd.request_id, cmd.action, "unknown", exc.msg)
            await self._reply_order(cmd, final or sending)
            self._resolve_soon(cid)
            return
        except RestError as exc:
            why = "exchange unreachable: nothing was sent" if isinstance(exc, NotSent) else None
            rejected = await self._reject(
                cid, exc.code or 0, why or orders.error_text(exc.code, exc.msg)
            )
            await self.store.audit(
                self.address, cmd.request_id, cmd.action, "rejected", f"{exc.code}: {exc.msg}"
            )
            await self._reply_order(cmd, rejected or sending)
            return
        self.stats["placed"] += 1
        self.stats["place_ms_total"] += _ms() - t0
        updated = await self._update(cid, lambda o: orders.apply_rest(o, body))
        await self.store.audit(
            self.address,
            cmd.request_id,
            cmd.action,
            "placed",
            f"{body.get('status')} orderId {body.get('orderId')}",
        )
        await self._reply_order(cmd, updated or sending)

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
        try:
            body = await self.client.cancel_order(cmd.symbol or "", cid)
        except OutcomeUnknown:
            await self._reply(
                cmd,
                ok=None,
                message="cancel sent; the exchange did not answer, the order's state will follow",
            )
            self._resolve_soon(cid, lookup_only=True)
            return
        except RestError as exc:
            await self._reply_error(cmd, exc)
            return
        updated = await self._update(cid, lambda o: orders.apply_rest(o, body))
        await self.store.audit(self.address, cmd.request_id, "cancel", "ok", cid)
        if updated is not None:
            await self._reply_order(cmd, updated)
        else:
            await self._reply(cmd, ok=True, result=body)

    # --- order state --------------------------------------------------------------------------

    async def _update(self, cid: str, change: Callable[[Order], bool]) -> Order | None:
        async with self._lock:
            order = await self.store.order(self.address, cid)
            if order is None:
                return await self.store.done_order(self.address, cid)
            if change(order):
                await self.store.save(self.address, order)
                await self._emit("order", order.view())
            return order

    async def _set_status(self, cid: str, status: str, *, expect: tuple[str, ...]) -> Order | None:
        def change(o: Order) -> bool:
            if o.status not in expect:
                return False
            o.status = status
            return True

        return await self._update(cid, change)

    async def _reject(self, cid: str, code: int, text: str) -> Order | None:
        def change(o: Order) -> bool:
            if o.status not in ("PENDING", "SENDING", "UNKNOWN"):
                return False
            o.status, o.error_code, o.error = "REJECTED", code, text
            return True

        return await self._update(cid, change)

    def _resolve_soon(self, cid: str, *, lookup_only: bool = False) -> None:
        if cid in self._resolving:
            return
        task = asyncio.create_task(self._resolve(cid, lookup_only=lookup_only))
        self._resolving[cid] = task
        task.add_done_callback(lambda _: self._resolving.pop(cid, None))

    async def _resolve(self, cid: str, *, lookup_only: bool = False) -> None:
        """Find out what happened to an order whose answer was lost; never send it again."""
        misses = 0
        for attempt in range(60):
            order = await self.store.order(self.address, cid)
            if order is None or (not lookup_only and order.status not in ("SENDING", "UNKNOWN")):
                return  # the user stream (or a reconciliation) resolved it
            try:
                body = await self.client.query_order(order.symbol, cid)
            except RestError as exc:
                if exc.code == -2013:
                    misses += 1
                    deadline = order.sent_ms + self.settings.execution.recv_window_ms
                    if (
                        not lookup_only
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
                await self._update(cid, functools.partial(_apply_rest, body=body))
                self.stats["resolved"] += 1
                return
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        log.error("order %s of %s still unresolved after 60 lookups", cid, self.address)

    # --- user stream --------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("e")
        if kind == "ORDER_TRADE_UPDATE" and isinstance(event.get("o"), dict):
            await self._order_update(event["o"])
        elif (
            kind == "ACCOUNT_UPDATE" and isinstance(event.get("a"), dict)
        ) or kind == "ACCOUNT_CONFIG_UPDATE":
            self._schedule_refresh()

    async def _order_update(self, o: dict[str, Any]) -> None:
        cid = str(o.get("c", ""))
        async with self._lock:
            order = await self.store.order(self.address, cid)
            if order is None:
                if await self.store.done_order(self.address, cid) is None:
                    order = orders.external_from_event(o)
                    await self.store.save(self.address, order)
                    await self._emit("order", order.view())
            elif orders.apply_event(order, o):
                await self.store.save(self.address, order)
                await self._emit("order", order.view())
        if o.get("x") == "TRADE":
            fill = orders.fill_from_event(o)
            if await self.store.add_fill(self.address, fill):
                await self._emit("fill", fill)
            cursor = await self.store.fill_cursor(self.address, fill["symbol"])
            if cursor is None or fill["trade_id"] > cursor:
                await self.store.set_fill_cursor(self.address, fill["symbol"], fill["trade_id"])
            self._schedule_refresh()

    # --- reconciliation -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Bring orders, fills, balances and positions back in line with the exchange."""
        self.stats["reconciles"] += 1
        rows = await self.client.open_orders()
        seen: set[str] = set()
        symbols: set[str] = set()
        for row in rows:
            cid = str(row.get("clientOrderId", ""))
            seen.add(cid)
            symbols.add(str(row.get("symbol")))
            async with self._lock:
                order = await self.store.order(self.address, cid)
                if order is None:
                    order = orders.external_from_rest(row)
                    await self.store.save(self.address, order)
                    await self._emit("order", order.view())
                elif orders.apply_rest(order, row):
                    await self.store.save(self.address, order)
                    await self._emit("order", order.view())
        for cid, order in (await self.store.live_orders(self.address)).items():
            symbols.add(order.symbol)
            if cid in seen or order.status == "PENDING":
                continue
            if order.status in ("SENDING", "UNKNOWN"):
                self._resolve_soon(cid)
                continue
            try:  # open in our records, no longer open on the exchange: read how it ended
                body = await self.client.query_order(order.symbol, cid)
            except RestError:
                continue
            await self._update(cid, functools.partial(_apply_rest, body=body))
        positions = await self.refresh_account()
        symbols |= set(positions)
        await self._catch_up_fills(symbols)

    async def refresh_account(self) -> dict[str, dict[str, str]]:
        account = await self.client.account()
        positions = orders.positions_view(await self.client.position_risk())
        balances = orders.balances_view(account)
        await self.store.set_state(
            self.address, balances=balances, positions=positions, updated_ms=_ms()
        )
        await self._emit("account", {"balances": balances, "positions": positions})
        return positions

    def _schedule_refresh(self) -> None:
        if self._refresh_pending:
            return
        self._refresh_pending = True

        async def later() -> None:
            await asyncio.sleep(0.3)  # coalesce the burst of events a fill brings
            self._refresh_pending = False
            with contextlib.suppress(RestError, OSError):
                await self.refresh_account()

        task = asyncio.create_task(later())
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _catch_up_fills(self, symbols: set[str]) -> None:
        """Record fills the user stream did not deliver (a drop, an expired key)."""
        for symbol in sorted(s for s in symbols if s):
            cursor = await self.store.fill_cursor(self.address, symbol)
            start = max(self.linked_ms, _ms() - DAY_MS) if cursor is None else None
            while True:
                rows = await self.client.user_trades(
                    symbol, from_id=None if cursor is None else cursor + 1, start_ms=start
                )
                for row in rows:
                    fill = orders.fill_from_trade(row, await self._cid_of(row))
                    if await self.store.add_fill(self.address, fill):
                        self.stats["fills_caught_up"] += 1
                        await self._emit("fill", fill)
                    cursor = max(cursor or 0, fill["trade_id"])
                if cursor is not None:
                    await self.store.set_fill_cursor(self.address, symbol, cursor)
                if len(rows) < 1000:
                    break

    async def _cid_of(self, row: dict[str, Any]) -> str:
        order_id = int(row.get("orderId") or 0)
        for order in (await self.store.live_orders(self.address)).values():
            if order.order_id == order_id and order.symbol == row.get("symbol"):
                return order.client_order_id
        return ""

    # --- replies ------------------------------------------------------------------------------

    async def _emit(self, kind: str, data: dict[str, Any]) -> None:
        await self.store.emit(OrderEvent(self.address, kind, _ms(), None, data))

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
            OrderEvent(self.address, "result", _ms(), cmd.request_id, data), reply=True
        )

    async def _reply_order(self, cmd: OrderCommand, order: Order) -> None:
        if order.status == "REJECTED":
            await self._reply(cmd, ok=False, error="rejected", message=order.error, order=order)
        elif order.status in ("SENDING", "UNKNOWN"):
            await self._reply(
                cmd,
                ok=None,
                order=order,
                message="the exchange did not answer; the order is being looked up "
                "and will not be sent twice",
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
