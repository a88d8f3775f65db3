"""What the exchange says happened, applied to one account: user-stream events and snapshots.

The user stream is trusted only after a REST snapshot taken once it is connected
(binance/user_stream.py): open orders (orders we did not place are recorded ``external``), the
orders that left the open set (looked up for how they ended), balances and positions, and fills
from ``userTrades`` since each symbol's trade cursor. Only ``userTrades`` moves a cursor: a fill
seen on the stream proves nothing about the trades before it.

Every REST read here is background work (``background=True``): it leaves the IP's weight reserve
(``TP_REST_WEIGHT_RESERVE``) to the users' cancels and order lookups, and waits when its share of
the budget is spent (docs/execution.md, "The user data stream and reconciliation").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from core.clock import now_ms
from core.errors import Banned, RateLimited, RestError, Throttled
from core.trading import Order
from execution import orders

if TYPE_CHECKING:
    from execution.account import AccountRuntime

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
REFRESH_DELAY_S = 0.3  # coalesce the burst of events a fill brings into one account read
REFRESH_EVERY_S = 30.0  # REST reads of balances and positions after fills, at most this often
WARN_EVERY_S = 60.0  # one warning per account and minute, however often it fails
ORPHAN_AFTER_MS = 60_000  # a PENDING order this long past its command's TTL is resolved by lookup


def vanished(order: Order) -> bool:
    """Mark an open order the exchange no longer knows (archived, or another account's)."""
    if order.final or order.status in ("PENDING", "SENDING", "UNKNOWN"):
        return False
    order.status, order.error = "EXPIRED", "the exchange no longer knows this order"
    return True


class Reconciler:
    """The account's view of the exchange: events in, snapshots on (re)connect and periodically."""

    def __init__(self, rt: AccountRuntime) -> None:
        self.rt = rt
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_waiting = False
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        self._warned_at = 0.0

    # --- user stream --------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("e")
        if kind == "ORDER_TRADE_UPDATE" and isinstance(event.get("o"), dict):
            await self._order_update(event["o"])
        elif kind == "ACCOUNT_UPDATE" and isinstance(event.get("a"), dict):
            await self._account_update(event["a"], int(event.get("E") or 0))
        elif kind == "ACCOUNT_CONFIG_UPDATE":  # leverage: only the REST view carries it
            self.schedule_refresh(now=True)

    async def _account_update(self, a: dict[str, Any], event_ms: int) -> None:
        """Apply an ACCOUNT_UPDATE (wallet balances, position sizes) without a REST read.

        Its values are absolute; one older than the last REST read is skipped. Mark price,
        unrealized PnL at mark and leverage come with the next REST read (``schedule_refresh``).
        """
        rt = self.rt
        async with self._refresh_lock:
            as_of, balances, positions = await rt.store.states(
                rt.address, "as_of_ms", "balances", "positions"
            )
            if event_ms and event_ms < (as_of or 0):
                return
            balances, positions = balances or {}, positions or {}
            orders.apply_account_update(a, balances, positions)
            await rt.store.set_state(rt.address, balances=balances, positions=positions,
                                     updated_ms=now_ms())  # fmt: skip
            await rt.emit("account", {"balances": balances, "positions": positions})
        self.schedule_refresh()

    async def _order_update(self, o: dict[str, Any]) -> None:
        rt, cid = self.rt, str(o.get("c", ""))
        # A fill first: its owner hears of it without waiting for the order's lock and update.
        fill = orders.fill_from_event(o) if o.get("x") == "TRADE" else None
        if fill is not None and await rt.store.add_fill(rt.address, fill):
            await rt.emit("fill", fill)
        async with rt.lock:
            order = await rt.store.order(rt.address, cid)
            if order is None:
                if await rt.store.done_order(rt.address, cid) is None:
                    order = orders.external_from_event(o)
                    await rt.store.save(rt.address, order)
                    await rt.emit("order", order.view())
            elif orders.apply_event(order, o):
                await rt.store.save(rt.address, order)
                await rt.emit("order", order.view())
        if fill is not None:
            if await rt.store.fill_cursor(rt.address, fill["symbol"]) is None:
                await rt.store.set_fill_cursor(rt.address, fill["symbol"], -1)  # known symbol
            self.schedule_refresh()

    # --- snapshots ----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Bring orders, fills, balances and positions back in line with the exchange."""
        rt = self.rt
        rt.stats["reconciles"] += 1
        rows = await rt.client.open_orders(background=True)
        seen: set[str] = set()
        symbols: set[str] = set()
        for row in rows:
            cid = str(row.get("clientOrderId", ""))
            seen.add(cid)
            symbols.add(str(row.get("symbol")))
            async with rt.lock:
                order = await rt.store.order(rt.address, cid)
                if order is None:
                    if await rt.store.done_order(rt.address, cid) is not None:
                        continue  # it finished after the snapshot was taken (a stream event)
                    order = orders.external_from_rest(row)
                    await rt.store.save(rt.address, order)
                    await rt.emit("order", order.view())
                elif orders.apply_rest(order, row):
                    await rt.store.save(rt.address, order)
                    await rt.emit("order", order.view())
        orphan_ms = now_ms() - rt.settings.execution.command_ttl_ms - ORPHAN_AFTER_MS
        for cid, order in (await rt.store.live_orders(rt.address)).items():
            symbols.add(order.symbol)
            if cid in seen:
                continue
            if order.status == "PENDING":
                if order.created_ms < orphan_ms and cid not in rt.sending:
                    await self._orphan(cid)
                continue
            if order.status in ("SENDING", "UNKNOWN"):
                if cid not in rt.sending:  # not our own POST still waiting for its answer
                    rt.resolve_soon(cid)
                continue
            try:  # open in our records, no longer open on the exchange: read how it ended
                body = await rt.client.query_order(order.symbol, cid, background=True)
            except RestError as exc:
                if exc.code == -2013:
                    await rt.update(cid, vanished)
                continue
            await rt.update(cid, orders.applier(body))
        positions = await self.refresh_account()
        symbols |= set(positions) | set(await rt.store.fill_symbols(rt.address))
        await self._catch_up_fills(symbols)

    async def _orphan(self, cid: str) -> None:
        """A PENDING order whose command is past its TTL and then some: its command failed in a
        way that left it so (a bug, a crash). Whether it was sent is not known for sure (a Redis
        restored from an older file forgets a send): resolved by lookup, never sent."""
        rt = self.rt
        changed = False

        def unknown(o: Order) -> bool:
            nonlocal changed
            if o.status != "PENDING":
                return False
            o.status, o.sent_ms = "UNKNOWN", max(o.sent_ms, rt.client.now_ms())
            changed = True
            return True

        await rt.update(cid, unknown)
        if changed:
            rt.stats["orphans"] += 1
            log.warning("order %s of %s was left PENDING; resolving it by lookup", cid, rt.address)
            rt.resolve_soon(cid)

    async def refresh_account(self) -> dict[str, dict[str, str]]:
        """Read balances and positions and publish them; one read at a time, so that a read
        started earlier (with older figures) never lands after a later one."""
        async with self._refresh_lock:
            return await self._refresh_account()

    async def _refresh_account(self) -> dict[str, dict[str, str]]:
        rt = self.rt
        as_of = rt.client.now_ms()  # events before this are in what is read now
        account = await rt.client.account(background=True)
        positions = orders.positions_view(await rt.client.position_risk(background=True))
        balances = orders.balances_view(account)
        self._refreshed_at = time.monotonic()
        await rt.store.set_state(
            rt.address, balances=balances, positions=positions, updated_ms=now_ms(), as_of_ms=as_of
        )
        await rt.emit("account", {"balances": balances, "positions": positions})
        return positions

    def schedule_refresh(self, *, now: bool = False) -> None:
        """Read balances and positions from REST soon: after REFRESH_DELAY_S when ``now``, else
        at most every REFRESH_EVERY_S (events carry balances and sizes; the read adds the mark
        price, PnL at mark and leverage, for ~10 weight of the IP's budget). Events meanwhile
        share one read; one landing during a read gets a read of its own after it."""
        if self._refresh_waiting:
            return
        self._refresh_waiting = True
        previous = self._refresh_task
        since = time.monotonic() - self._refreshed_at
        delay = REFRESH_DELAY_S if now else max(REFRESH_DELAY_S, REFRESH_EVERY_S - since)

        async def later() -> None:
            await asyncio.sleep(delay)
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            self._refresh_waiting = False
            try:
                await self.refresh_account()
            except (Throttled, RateLimited, Banned):
                self.rt.stats["refresh_throttled"] += 1  # the IP's budget first; events go on
            except Exception as exc:  # the next event or reconciliation retries
                self.rt.stats["refresh_errors"] += 1
                if time.monotonic() - self._warned_at > WARN_EVERY_S:
                    self._warned_at = time.monotonic()
                    log.warning("account refresh of %s failed: %r", self.rt.address, exc)

        self._refresh_task = asyncio.create_task(later())

    def cancel(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()

    async def _catch_up_fills(self, symbols: set[str]) -> None:
        """Record fills the user stream did not deliver (a drop, an expired key)."""
        rt = self.rt
        for symbol in sorted(s for s in symbols if s):
            cursor = await rt.store.fill_cursor(rt.address, symbol)
            if cursor is not None and cursor < 0:
                cursor = None  # a symbol seen on the stream, not read from userTrades yet
            start = max(rt.linked_ms, now_ms() - DAY_MS) if cursor is None else None
            while True:
                rows = await rt.client.user_trades(
                    symbol,
                    from_id=None if cursor is None else cursor + 1,
                    start_ms=start,
                    background=True,
                )
                cids = _CidFinder(rt)  # one read of our orders per page of trades
                for row in rows:
                    fill = orders.fill_from_trade(row, await cids.of(row))
                    if await rt.store.add_fill(rt.address, fill):
                        rt.stats["fills_caught_up"] += 1
                        await rt.emit("fill", fill)
                    cursor = max(cursor or 0, fill["trade_id"])
                if cursor is not None:
                    await rt.store.set_fill_cursor(rt.address, symbol, cursor)
                if len(rows) < 1000:
                    break


class _CidFinder:
    """The client order ids of trade rows (userTrades carry only the order id).

    Our live orders and the 100 newest final ones are read once, when the first row asks, not
    once per row: a page of a thousand trades would read them a thousand times. The rows were
    read from the exchange before, so an order of theirs is already known to us, or only
    becomes known through the stream, whose fill completes the id (Store.add_fill).
    """

    def __init__(self, rt: AccountRuntime) -> None:
        self.rt = rt
        self._live: list[Order] | None = None
        self._done: list[Order] | None = None

    async def of(self, row: dict[str, Any]) -> str:
        order_id, symbol = int(row.get("orderId") or 0), row.get("symbol")
        if self._live is None:
            self._live = list((await self.rt.store.live_orders(self.rt.address)).values())
        for order in self._live:
            if order.order_id == order_id and order.symbol == symbol:
                return order.client_order_id
        if self._done is None:
            self._done = []
            with contextlib.suppress(Exception):
                self._done = await self.rt.store.recent_done(self.rt.address)
        for raw in self._done:
            if raw.order_id == order_id and raw.symbol == symbol:
                return raw.client_order_id
        return ""
