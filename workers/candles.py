"""Building a shard's candles from its trades and klines streams (the consumer's build loop).

The consumer (``workers.consumer``) calls :meth:`ShardBuilder.build` for each shard of its own
that has news. A build delivers the shard's new entries to group ``candles`` and reads the ones
between the shard's cursor (the last trades and klines entries applied, kept in Redis) and what
the group has delivered, all in one script call (``tasks.candle_store.READ``); folds them
(``tasks.candle_fold``), reconciles the exchange's closed klines, and writes everything, cursor
included, in one script call that first checks the cursor is still where it read it
(``tasks.candle_store.BUILD``). Hence:

* a build with nothing new writes nothing;
* two consumers building one shard (a deploy's overlap, a misconfigured ``--shard``) cannot both
  write: the loser re-reads and goes on from the winner's cursor;
* a crash at any point leaves the previous state and the entries pending in the group; the next
  build of the shard, by any consumer, reads from the cursor and applies them.

An entry that cannot be decoded stops the build just before it (what precedes is written) and is
retried; after ``TP_CANDLE_MAX_DELIVERIES`` attempts it goes to the shard's dead-letter stream with
its error and the build moves past it.

The builder keeps its shard's fold state in memory between builds, valid while the cursor in
Redis is the one its last write set (always, unless another consumer built the shard meanwhile).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import redis

from core.config import Settings
from core.errors import BuildConflictError, SchemaError
from core.keys import ENTRY_FIELD, GROUP_CANDLES, Keys
from core.schemas import Candle, Kline, Trade, decode
from core.timeframes import Timeframe
from tasks.actors import EVALUATE_SIGNALS
from tasks.broker import send_bounded, trigger_bound
from tasks.candle_fold import Repair, SymbolCandles, close_due, fold_trades
from tasks.candle_store import BUILD, READ, BuildWrite
from tasks.repairs import RepairWindow, classify, containing_windows, scheduled

log = logging.getLogger("workers.candles")

MAX_ENTRIES = 20_000  # per stream per build: a longer backlog is caught up over several builds
CLOSE_GRACE_MS = 2_000  # a period is over once the shard's trades are this far past its end


@dataclass
class BuildReport:
    trades: int = 0
    klines: int = 0
    written: int = 0
    dead: int = 0
    retry: bool = False  # stopped before a failing entry that will be tried again
    more: bool = False  # a stream gave MAX_ENTRIES: the backlog goes on past this build
    oldest_ms: int = 0  # the id time of the oldest entry applied (0: none)


def _field(fields: list[bytes], name: bytes) -> bytes:
    """Return field ``name`` of a raw stream entry (``[field, value, ...]``), or b"" if absent."""
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return b""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(entry_id: bytes | str) -> int:
    return int(_s(entry_id).split("-", 1)[0])


class ShardBuilder:
    """Builds one shard's candles; one per shard in the consumer that owns it."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings, shard: int,
                 consumer: str = "") -> None:  # fmt: skip
        self.client = client
        self.keys = keys
        self.shard = shard
        self.consumer = consumer  # delivers new entries to the group under this name ("": none)
        self.timeframes: tuple[Timeframe, ...] = settings.timeframes
        self.tf_by_name = {tf.name: tf for tf in self.timeframes}
        self.retention = dict(settings.candles.retention)
        self.max_deliveries = settings.candles.max_deliveries
        self.updates_maxlen = settings.candles.updates_maxlen
        self.script = client.register_script(BUILD)
        self.read_script = client.register_script(READ)
        self.states: dict[str, SymbolCandles] = {}
        self.cursor: tuple[str, str] | None = None  # the cursor our states belong to
        self.data_time_ms = 0  # latest trade time seen in this shard

    def build(self) -> BuildReport:
        """Apply everything delivered since the cursor; raise BuildConflictError if we never win."""
        for _ in range(3):
            report = self._build_once()
            if report is not None:
                return report
            self.states.clear()
            self.cursor = None
        raise BuildConflictError(f"shard {self.shard}: cursor kept moving")

    # --- one attempt ---------------------------------------------------------------------

    def _build_once(self) -> BuildReport | None:
        k, s = self.keys, self.shard
        keys = [k.candle_cursor(s), k.trades(s), k.klines(s)]
        (cur_t, cur_k, fail_t, fail_k), raw_t, raw_k = self.read_script(
            keys=keys, args=[GROUP_CANDLES, MAX_ENTRIES, self.consumer], client=self.client
        )
        expect = (_s(cur_t) if cur_t else "0-0", _s(cur_k) if cur_k else "0-0")
        cached, self.cursor = self.cursor, None  # set again only once our write has landed
        if expect != cached:
            self.states.clear()  # another consumer wrote since our last build, or ours failed
        failing = {
            "fail:trades": _s(fail_t) if fail_t else "",
            "fail:klines": _s(fail_k) if fail_k else "",
        }
        report = BuildReport(more=max(len(raw_t), len(raw_k)) >= MAX_ENTRIES)
        firsts = [_ms(raw[0][0]) for raw in (raw_t, raw_k) if raw]
        report.oldest_ms = min(firsts) if firsts else 0
        w = BuildWrite(self.keys, s, expect, expect, self.retention, GROUP_CANDLES,
                       self.updates_maxlen)  # fmt: skip
        trades = self._decode(raw_t, k.trades(s), Trade, w, w.ack_t, failing["fail:trades"], report)
        klines = self._decode(raw_k, k.klines(s), Kline, w, w.ack_k, failing["fail:klines"], report)
        w.cursor = (w.ack_t[-1] if w.ack_t else expect[0], w.ack_k[-1] if w.ack_k else expect[1])
        if w.cursor == expect and w.fail == {k: v for k, v in failing.items() if v}:
            self.cursor = expect
            return report  # nothing new
        w.count("state_corrupt", self._load_states({t.symbol for t in trades}
                                                   | {c.symbol for c in klines}))  # fmt: skip
        changed: dict[tuple[str, str, int], Candle] = {}
        touched: set[str] = set()
        self._fold(trades, changed, touched, w, report)
        self._reconcile([c for c in klines if c.closed], changed, touched, w)
        for sym, st in self.states.items():
            for c in close_due(st, self.data_time_ms - CLOSE_GRACE_MS):
                changed[sym, c.timeframe, c.open_time_ms] = c
                touched.add(sym)
        written = {id(c): w.candle(c) for c in changed.values()}  # each candle encoded once
        for sym in touched:
            st = self.states[sym]
            fields: dict[str, str | int] = {
                "last": f"{st.last_trade_id}:{st.last_raw_id}:{st.last_time_ms}"
            }
            fields.update((tf, written.get(id(c)) or w.text(c)) for tf, c in st.current.items())
            w.symbol_state(sym, fields)
        w.count("builds")
        outcome = w.execute(self.client, self.script)
        if not outcome:
            return None
        if outcome == 2 and not send_bounded(EVALUATE_SIGNALS, s, bound=trigger_bound()):
            self.client.hincrby(self.keys.candle_metrics(s), "signals_refused", 1)
        self.cursor = w.cursor
        report.written = len(changed)
        report.trades = len(trades)
        report.klines = len(klines)
        return report

    def _decode(
        self,
        entries: list[Any],
        stream: str,
        cls: Any,  # Trade or Kline
        w: BuildWrite,
        acks: list[str],
        fail: str,
        report: BuildReport,
    ) -> list[Any]:
        """Decode the entries READ returned (``[id, [field, value, ...]]``); note acks."""
        out = []
        for raw_id, fields in entries:
            entry_id = _s(raw_id)
            data = _field(fields or [], ENTRY_FIELD)
            try:
                out.append(decode(data, cls))
            except SchemaError as exc:
                tag = f"{stream}|{entry_id}|"
                attempts = int(fail[len(tag) :].split("|", 1)[0]) + 1 if fail.startswith(tag) else 1
                if attempts < self.max_deliveries:
                    w.fail["fail:" + stream.rsplit(":", 1)[1]] = f"{tag}{attempts}|{exc}"
                    report.retry = True
                    log.warning("entry %s of %s failed (attempt %d): %s", entry_id, stream,
                                attempts, exc, extra={"stream": stream})  # fmt: skip
                    break
                w.dead.append([stream, entry_id, str(exc), _s(data)])
                w.count("dead")
                report.dead += 1
                log.error("entry %s of %s dead-lettered after %d attempts: %s", entry_id, stream,
                          attempts, exc, extra={"stream": stream})  # fmt: skip
            acks.append(entry_id)
        return out

    def _load_states(self, symbols: set[str]) -> int:
        """Load the fold state of ``symbols``; return how many records were unreadable.

        An unreadable record must not stop its shard: the symbol starts afresh (its next trade is
        a first trade: its candles become partial and are repaired from the exchange's klines).
        """
        need = sorted(symbols - self.states.keys())
        if not need:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for sym in need:
            pipe.hgetall(self.keys.candle_state(sym))
        corrupt = 0
        for sym, raw in zip(need, pipe.execute(), strict=True):
            st = SymbolCandles(sym)
            try:
                for f, v in raw.items():
                    name = _s(f)
                    if name == "last":
                        last = map(int, _s(v).split(":"))
                        st.last_trade_id, st.last_raw_id, st.last_time_ms = last
                    elif name in self.tf_by_name:
                        st.current[name] = decode(v, Candle)
            except (SchemaError, ValueError) as exc:
                corrupt += 1
                log.error("candle state of %s unreadable, starting it afresh: %s", sym, exc,
                          extra={"symbol": sym})  # fmt: skip
                st = SymbolCandles(sym)
            self.states[sym] = st
        return corrupt

    def _fold(
        self,
        trades: list[Trade],
        changed: dict[tuple[str, str, int], Candle],
        touched: set[str],
        w: BuildWrite,
        report: BuildReport,
    ) -> None:
        by_symbol: dict[str, list[Trade]] = defaultdict(list)
        for t in trades:
            by_symbol[t.symbol].append(t)
        for sym, run in by_symbol.items():
            st = self.states[sym]
            res = fold_trades(st, run, self.timeframes)
            for (tf, open_ms), c in res.changed.items():
                changed[sym, tf, open_ms] = c
            self._repair(sym, res.repairs, w)
            touched.add(sym)
            w.count("trades_applied", res.applied)
            w.count("duplicates", res.duplicates)
            w.count("gaps", res.gaps)
            self.data_time_ms = max(self.data_time_ms, run[-1].trade_time_ms)

    def _reconcile(
        self,
        klines: list[Kline],
        changed: dict[tuple[str, str, int], Candle],
        touched: set[str],
        w: BuildWrite,
    ) -> None:
        """The exchange's closed klines win over our candles; every difference is counted."""
        klines = [k for k in klines if k.timeframe in self.tf_by_name]
        unknown = [k for k in klines if (k.symbol, k.timeframe, k.open_time_ms) not in changed
                   and self._current(k) is None]  # fmt: skip
        stored = self._stored(unknown)
        for k in klines:
            key = (k.symbol, k.timeframe, k.open_time_ms)
            exch = k.candle()
            ours = changed.get(key) or self._current(k) or stored.get(key)
            self._count_difference(ours, exch, w)
            changed[key] = exch
            st = self.states[k.symbol]
            cur = st.current.get(k.timeframe)
            if cur is not None and cur.open_time_ms == k.open_time_ms:
                st.current[k.timeframe] = exch
            touched.add(k.symbol)

    def _current(self, k: Kline) -> Candle | None:
        c = self.states[k.symbol].current.get(k.timeframe)
        return c if c is not None and c.open_time_ms == k.open_time_ms else None

    def _stored(self, klines: list[Kline]) -> dict[tuple[str, str, int], Candle]:
        if not klines:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for k in klines:
            pipe.zrange(self.keys.candles(k.symbol, k.timeframe), k.open_time_ms, k.open_time_ms,
                        byscore=True)  # fmt: skip
        out = {}
        for k, members in zip(klines, pipe.execute(), strict=True):
            if members:
                out[k.symbol, k.timeframe, k.open_time_ms] = decode(members[0], Candle)
        return out

    def _count_difference(self, ours: Candle | None, exch: Candle, w: BuildWrite) -> None:
        outcome, diff = classify(ours, exch)
        w.count(f"reconcile_{outcome}")
        if outcome != "diff":
            return
        for f in diff:
            w.count(f"reconcile_diff_{f}")
        log.warning("%s %s %d differs from the exchange's kline in %s (exchange wins)",
                    exch.symbol, exch.timeframe, exch.open_time_ms, ",".join(diff),
                    extra={"symbol": exch.symbol})  # fmt: skip
        # The timeframes that contain this period were built from the same trades: repair them.
        windows = containing_windows(exch.symbol, exch.timeframe, exch.open_time_ms,
                                     self.timeframes)  # fmt: skip
        w.repairs.extend([due, m] for due, m in scheduled(windows, self.tf_by_name))

    def _repair(self, symbol: str, repairs: list[Repair], w: BuildWrite) -> None:
        windows = [RepairWindow(symbol, r.timeframe, r.first_open_ms, r.last_open_ms)
                   for r in repairs]  # fmt: skip
        w.repairs.extend([due, m] for due, m in scheduled(windows, self.tf_by_name))
