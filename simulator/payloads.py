"""Payloads: every market-stream event serialized once, and when each stream is due.

Field order follows real traffic where a recording exists (aggTrade, bookTicker and kline from
cryptofeed's 2021 capture; trade from Binance.Net#1218) and the docs otherwise (markPrice, and
``nq`` which postdates the recordings). Reference: docs/binance.md, "Stream payloads".

:class:`Publisher` turns :class:`~simulator.model.StepResult` into frames on a :class:`Sink`
(the websocket hub): aggTrade, trade and bookTicker per event; kline updates at most every
250 ms per stream while trades occur; each ``x:true`` after a per-bar lag (0.2-2 s by default)
during which the next bar's updates are held back; markPrice every 3 s (``@1s``: every second);
``!bookTicker`` every 5 s. Payloads are built only for streams someone is subscribed to.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Protocol

from simulator.instruments import MARK_DP, Instrument, fmt_units
from simulator.ledger import INTERVALS, AggTrade, Bar, ClosedBar, close_time_ms
from simulator.model import MarketModel, StepResult

_FUNDING_PERIOD_MS = 8 * 3_600_000  # funding at 00:00, 08:00, 16:00 UTC


class Sink(Protocol):
    def has(self, stream: str) -> bool: ...

    def publish(self, stream: str, payload: bytes) -> None: ...


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def agg_trade_payload(inst: Instrument, agg: AggTrade, event_ms: int) -> bytes:
    """Return an aggTrade event, e.g. (2021 capture, plus ``nq`` added 2025-12-31)::

    {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10",
     "nq":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}

    ``nq`` (quantity without RPI fills) equals ``q``: the simulator has no RPI orders.
    """
    q = inst.qty_str(agg.q)
    return (
        f'{{"e":"aggTrade","E":{event_ms},"a":{agg.a},"s":"{inst.symbol}",'
        f'"p":"{inst.price_str(agg.p)}","q":"{q}","nq":"{q}","f":{agg.f},"l":{agg.l},'
        f'"T":{agg.T},"m":{_b(agg.m)}}}'
    ).encode()


def trade_payload(
    inst: Instrument, trade_id: int, price: int, qty: int, trade_ms: int, maker: bool, event_ms: int
) -> bytes:
    """Return a raw trade event (Binance.Net#1218 capture)::

    {"e":"trade","E":1679851564490,"T":1679851564486,"s":"BTCUSDT","t":3493102749,
     "p":"27785.00","q":"0.014","X":"MARKET","m":true}
    """
    return (
        f'{{"e":"trade","E":{event_ms},"T":{trade_ms},"s":"{inst.symbol}","t":{trade_id},'
        f'"p":"{inst.price_str(price)}","q":"{inst.qty_str(qty)}","X":"MARKET","m":{_b(maker)}}}'
    ).encode()


def book_ticker_payload(
    inst: Instrument,
    u: int,
    bid: int,
    bid_qty: int,
    ask: int,
    ask_qty: int,
    tx_ms: int,
    event_ms: int,
) -> bytes:
    """Return a bookTicker event in the real wire order e,u,s,b,B,a,A,T,E::

    {"e":"bookTicker","u":600859600576,"s":"SUSHIUSDT","b":"7.6110","B":"2","a":"7.6120",
     "A":"297","T":1626992741012,"E":1626992741017}
    """
    return (
        f'{{"e":"bookTicker","u":{u},"s":"{inst.symbol}","b":"{inst.price_str(bid)}",'
        f'"B":"{inst.qty_str(bid_qty)}","a":"{inst.price_str(ask)}","A":"{inst.qty_str(ask_qty)}",'
        f'"T":{tx_ms},"E":{event_ms}}}'
    ).encode()


def kline_payload(inst: Instrument, interval: str, bar: Bar, closed: bool, event_ms: int) -> bytes:
    """Return a kline event (2021 capture, closed bar)::

    {"e":"kline","E":1626992760203,"s":"SUSHIUSDT","k":{"t":1626992700000,"T":1626992759999,
     "s":"SUSHIUSDT","i":"1m","f":126902874,"L":126902986,"o":"7.6080","c":"7.6170",
     "h":"7.6180","l":"7.6070","v":"3005","n":113,"x":true,"q":"22875.8590","V":"1900",
     "Q":"14464.6960","B":"0"}}
    """
    ps, qs, qq = inst.price_str, inst.qty_str, inst.quote_str
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{inst.symbol}","k":{{"t":{bar.t},'
        f'"T":{close_time_ms(interval, bar.t)},"s":"{inst.symbol}","i":"{interval}",'
        f'"f":{bar.f},"L":{bar.L},"o":"{ps(bar.o)}","c":"{ps(bar.c)}","h":"{ps(bar.h)}",'
        f'"l":"{ps(bar.l)}","v":"{qs(bar.v)}","n":{bar.n},"x":{_b(closed)},"q":"{qq(bar.q)}",'
        f'"V":"{qs(bar.V)}","Q":"{qq(bar.Q)}","B":"0"}}}}'
    ).encode()


def kline_row(inst: Instrument, interval: str, bar: Bar) -> list[object]:
    """Return one /fapi/v1/klines row (12 columns; real BTCUSDT 1h row from hummingbot)::

    [1718654400000,"66661.40","66746.20","66122.30","66376.00","14150.996",1718657999999,
     "939449103.58380",155369,"7106.240","471742093.14380","0"]
    """
    ps, qs, qq = inst.price_str, inst.qty_str, inst.quote_str
    return [
        bar.t, ps(bar.o), ps(bar.h), ps(bar.l), ps(bar.c), qs(bar.v),
        close_time_ms(interval, bar.t), qq(bar.q), bar.n, qs(bar.V), qq(bar.Q), "0",
    ]  # fmt: skip


def agg_trade_row(inst: Instrument, agg: AggTrade) -> dict[str, object]:
    """Return one /fapi/v1/aggTrades row: ``{"a":26129,"p":"0.01633102","q":"4.70443515",
    "f":27781,"l":27781,"T":1498793709153,"m":true}``."""
    return {
        "a": agg.a,
        "p": inst.price_str(agg.p),
        "q": inst.qty_str(agg.q),
        "f": agg.f,
        "l": agg.l,
        "T": agg.T,
        "m": agg.m,
    }


def mark_price_json(
    inst: Instrument, mark_e8: int, avg_e8: int, funding_e8: int, event_ms: int
) -> str:
    """Return a markPriceUpdate object (docs; ``ap`` added 2026-03-16)::

    {"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000",
     "ap":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167",
     "T":1562306400000}

    The index sits below the mark by the funding rate; ``P`` equals the index.
    """
    index_e8 = mark_e8 - mark_e8 * funding_e8 // 10**8
    next_funding = event_ms - event_ms % _FUNDING_PERIOD_MS + _FUNDING_PERIOD_MS
    return (
        f'{{"e":"markPriceUpdate","E":{event_ms},"s":"{inst.symbol}",'
        f'"p":"{fmt_units(mark_e8, MARK_DP)}","ap":"{fmt_units(avg_e8, MARK_DP)}",'
        f'"i":"{fmt_units(index_e8, MARK_DP)}","P":"{fmt_units(index_e8, MARK_DP)}",'
        f'"r":"{fmt_units(funding_e8, 8)}","T":{next_funding}}}'
    )


class Publisher:
    """Publish the model's output on ``sink`` with Binance's cadences."""

    def __init__(
        self,
        model: MarketModel,
        sink: Sink,
        *,
        seed: int = 0,
        kline_lag_ms: tuple[int, int] = (200, 2000),
        kline_every_ms: int = 250,
    ) -> None:
        self.model = model
        self.sink = sink
        self.seed = seed
        self.kline_lag_ms = kline_lag_ms
        self.kline_every_ms = kline_every_ms
        insts: Sequence[Instrument] = model.instruments
        self._agg = [f"{x.stream_prefix}@aggTrade" for x in insts]
        self._trade = [f"{x.stream_prefix}@trade" for x in insts]
        self._book = [f"{x.stream_prefix}@bookTicker" for x in insts]
        self._kline = [[(iv, f"{x.stream_prefix}@kline_{iv}") for iv in INTERVALS] for x in insts]
        self._mark = [f"{x.stream_prefix}@markPrice" for x in insts]
        self._mark1s = [f"{x.stream_prefix}@markPrice@1s" for x in insts]
        self._avg_e8: list[int | None] = [None] * len(insts)
        self._dirty: set[int] = set()
        self._closes: list[tuple[int, int, int, ClosedBar]] = []  # (due, seq, i, bar)
        self._pending: dict[tuple[int, str], int] = {}
        self._seq = 0
        self._last_kline_slot = -1
        self._last_second = -1
        self.frames_built = 0

    def on_step(self, result: StepResult, now_ms: int) -> None:
        """Publish the step's trades and book changes; schedule the bars it closed."""
        has, publish, insts = self.sink.has, self.sink.publish, self.model.instruments
        for ev in result.events:
            i, agg = ev.i, ev.agg
            inst = insts[i]
            s = self._agg[i]
            if has(s):
                publish(s, agg_trade_payload(inst, agg, now_ms))
            s = self._trade[i]
            if has(s):
                tid = agg.f
                for q in ev.qtys:
                    publish(s, trade_payload(inst, tid, agg.p, q, agg.T, agg.m, now_ms))
                    tid += 1
            s = self._book[i]
            if has(s):
                publish(
                    s,
                    book_ticker_payload(
                        inst, ev.u, ev.bid, ev.bid_qty, ev.ask, ev.ask_qty, agg.T, now_ms
                    ),
                )
            self._dirty.add(i)
        lo, hi = self.kline_lag_ms
        for i, closed in result.closed:
            end = close_time_ms(closed.interval, closed.bar.t) + 1
            # the same lag for every interval of a symbol closing at one boundary, seeded
            lag = lo + hash((self.seed, i, end)) % (hi - lo + 1)
            self._seq += 1
            heapq.heappush(self._closes, (end + lag, self._seq, i, closed))
            key = (i, closed.interval)
            self._pending[key] = self._pending.get(key, 0) + 1

    def on_tick(self, now_ms: int) -> None:
        """Publish what is due at ``now_ms``: closes, kline updates, markPrice, !bookTicker."""
        has, publish, insts = self.sink.has, self.sink.publish, self.model.instruments
        closes = self._closes
        while closes and closes[0][0] <= now_ms:
            _, _, i, closed = heapq.heappop(closes)
            key = (i, closed.interval)
            left = self._pending[key] - 1
            if left:
                self._pending[key] = left
            else:
                del self._pending[key]
            stream = self._kline[i][INTERVALS.index(closed.interval)][1]
            if has(stream):
                publish(stream, kline_payload(insts[i], closed.interval, closed.bar, True, now_ms))
            self._dirty.add(i)
        slot = now_ms // self.kline_every_ms
        if slot != self._last_kline_slot:
            self._last_kline_slot = slot
            self._publish_kline_updates(now_ms)
        second = now_ms // 1000
        if second != self._last_second:
            self._last_second = second
            self._publish_marks(now_ms, every_3s=second % 3 == 0)
            if second % 5 == 0 and has("!bookTicker"):
                m = self.model
                for i, inst in enumerate(insts):
                    publish(
                        "!bookTicker",
                        book_ticker_payload(
                            inst, m.u[i], m.bid[i], m.bid_qty[i], m.ask[i], m.ask_qty[i],
                            now_ms, now_ms,
                        ),
                    )  # fmt: skip

    def _publish_kline_updates(self, now_ms: int) -> None:
        has, publish, insts = self.sink.has, self.sink.publish, self.model.instruments
        held: set[int] = set()
        for i in self._dirty:
            ledger = self.model.ledgers[i]
            for iv, stream in self._kline[i]:
                if not has(stream):
                    continue
                if (i, iv) in self._pending:
                    held.add(i)  # the previous bar's x:true has not gone out yet
                    continue
                bar = ledger.current(iv)
                if bar is not None:
                    publish(stream, kline_payload(insts[i], iv, bar, False, now_ms))
        self._dirty = held

    def _publish_marks(self, now_ms: int, *, every_3s: bool) -> None:
        has, publish, m = self.sink.has, self.sink.publish, self.model
        arr_1s, arr_3s = has("!markPrice@arr@1s"), every_3s and has("!markPrice@arr")
        items: list[str] = []
        for i, inst in enumerate(m.instruments):
            want_1s, want_3s = has(self._mark1s[i]), every_3s and has(self._mark[i])
            if not (want_1s or want_3s or arr_1s or arr_3s):
                continue
            mark = m.mark_e8(i)
            prev = self._avg_e8[i]
            avg = mark if prev is None else (prev * 4 + mark) // 5
            self._avg_e8[i] = avg
            text = mark_price_json(inst, mark, avg, m.funding_rate_e8[i], now_ms)
            if want_1s:
                publish(self._mark1s[i], text.encode())
            if want_3s:
                publish(self._mark[i], text.encode())
            items.append(text)
        if arr_1s:
            publish("!markPrice@arr@1s", f"[{','.join(items)}]".encode())
        if arr_3s:
            publish("!markPrice@arr", f"[{','.join(items)}]".encode())
