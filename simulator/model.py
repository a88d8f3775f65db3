"""Market model: synthetic taker flow, top of book and ground-truth recording for every symbol.

Pure logic on an injectable clock: :meth:`MarketModel.step` generates everything that happened up
to ``now_ms`` in fixed virtual slices (10 ms by default), so the same seed and the same clock give
the same trades however the calls are spaced. Nothing here sleeps or does I/O.

Shape of the flow (plausible, not calibrated):
- the event rate is aggTrades per second over all symbols (each aggTrade is 1..6 raw trades),
  modulated by a market regime (quiet / normal / busy, persistent from second to second) and
  Poisson arrivals inside each slice;
- symbols are skewed (Zipf-like weights, BTCUSDT busiest) and a random symbol now and then turns
  hot for a few seconds (x30); ``steady=True`` turns regimes and hot symbols off;
- a taker buys at the ask or sells at the bid; the book then moves by a tick at times, with a pull
  back towards the start price so a long demo stays plausible. Prices sit on the tick grid and
  quantities on the step grid between minQty and the MARKET_LOT_SIZE maxQty.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from simulator.instruments import MARK_DP, Instrument
from simulator.ledger import AggTrade, ClosedBar, SymbolLedger


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock time in ms (what Binance timestamps are)."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class VirtualClock:
    """A clock that moves only when told: unit tests run the model with no sleeping."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        self._now += ms
        return self._now

    def set(self, now_ms: int) -> None:
        self._now = now_ms


class MarketEvent(NamedTuple):
    """One taker order: its aggTrade, the raw trades inside it and the book after it."""

    i: int  # instrument index
    agg: AggTrade
    qtys: tuple[int, ...]  # raw trade quantities; raw ids are agg.f .. agg.l
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int
    u: int  # book update id after the trade


class StepResult(NamedTuple):
    events: list[MarketEvent]
    closed: list[tuple[int, ClosedBar]]  # (instrument index, bar) closed during the step
    changed: set[int]  # instruments whose book changed


_REGIMES = ((0.35, 0.30), (1.0, 0.55), (2.6, 0.15))  # (rate multiplier, stationary share)
_HOT_FACTOR = 30.0


class MarketModel:
    """Generate trades for ``instruments`` at ``rate`` aggTrades/s, recording each in a ledger."""

    def __init__(
        self,
        instruments: Sequence[Instrument],
        clock: Clock,
        *,
        seed: int = 0,
        rate: float = 200.0,
        slice_ms: int = 10,
        max_catchup_ms: int | None = None,
        trade_retention: int = 5000,
        bar_retention: int = 1000,
        steady: bool = False,
    ) -> None:
        if not instruments:
            raise ValueError("the model needs at least one instrument")
        self.instruments = list(instruments)
        self.index = {inst.symbol: i for i, inst in enumerate(self.instruments)}
        self.clock = clock
        self.rate = float(rate)
        self.steady = steady  # no regimes, no hot symbols: a constant Poisson rate (benchmarks)
        self.slice_ms = slice_ms
        self.max_catchup_ms = max_catchup_ms
        self.skipped_ms = 0  # virtual time skipped because the loop fell behind (counted)
        self._rng = random.Random(f"model:{seed}")  # noqa: S311  (a seeded market, not secrets)
        rng = self._rng
        n = len(self.instruments)
        self.ledgers = [
            SymbolLedger(trade_retention=trade_retention, bar_retention=bar_retention)
            for _ in range(n)
        ]
        self._base_w = [rng.uniform(0.5, 1.5) / (k + 1) for k in range(n)]
        self._hot: dict[int, int] = {}
        self._idx = list(range(n))
        self._cum: list[float] = []
        self._rebuild_weights()
        self.bid = [inst.start_price for inst in self.instruments]
        self.ask = [inst.start_price + inst.tick for inst in self.instruments]
        self.bid_qty = [self._depth_qty(inst) for inst in self.instruments]
        self.ask_qty = [self._depth_qty(inst) for inst in self.instruments]
        self.u = [rng.randrange(10**11, 9 * 10**11) for _ in range(n)]
        self._next_agg = [rng.randrange(10**6, 10**8) for _ in range(n)]
        self._next_trade = [rng.randrange(10**8, 10**9) for _ in range(n)]
        self.funding_rate_e8 = [rng.randint(-5000, 15000) for _ in range(n)]  # 1e-8 units
        self._t = clock.now_ms()
        self._t -= self._t % slice_ms
        self._regime = 1
        self._next_regime_ms = self._t
        self._next_close_check = self._t
        self._open: set[int] = set()

    # --- control ------------------------------------------------------------------------------

    def set_rate(self, rate: float) -> None:
        """Change the target aggTrade rate (events/s over all symbols); raise ValueError if < 0."""
        if rate < 0 or not math.isfinite(rate):
            raise ValueError("rate must be a finite number >= 0")
        self.rate = float(rate)

    def warm(self, history_ms: int, rate: float) -> int:
        """Trade the last ``history_ms`` at ``rate`` before going live (call before any step):
        REST klines and aggTrades then have a past, as the exchange's do. Return trades made."""
        now = self.clock.now_ms()
        start = now - history_ms
        self._t = self._next_regime_ms = self._next_close_check = start - start % self.slice_ms
        (live_rate, self.rate), (catchup, self.max_catchup_ms) = (
            (self.rate, rate),
            (self.max_catchup_ms, None),
        )
        made = 0
        while self._t + self.slice_ms <= now:  # in 1-minute steps: bars close as they go
            made += len(self.step(min(now, self._t + 60_000)).events)
        self.rate, self.max_catchup_ms = live_rate, catchup
        return made

    # --- reading ------------------------------------------------------------------------------

    def mark_e8(self, i: int) -> int:
        """Return the mark price of instrument ``i`` in 1e-8 units: the mid of the book."""
        scale: int = 10 ** (MARK_DP - self.instruments[i].price_dp)
        return (self.bid[i] + self.ask[i]) * scale // 2

    # --- generation ---------------------------------------------------------------------------

    def step(self, now_ms: int | None = None) -> StepResult:
        """Generate every slice that ended by ``now_ms`` (default: the clock); record the trades."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        out = StepResult([], [], set())
        if self.max_catchup_ms is not None and now - self._t > self.max_catchup_ms:
            skip = now - self._t - self.slice_ms
            skip -= skip % self.slice_ms
            self.skipped_ms += skip
            self._t += skip
        while self._t + self.slice_ms <= now:
            self._slice(self._t, out)
            self._t += self.slice_ms
        if now >= self._next_close_check:
            self._next_close_check = now + 100
            self._close_bars(now, out)
        return out

    def _close_bars(self, now: int, out: StepResult) -> None:
        for i in list(self._open):
            led = self.ledgers[i]
            if led.next_close_ms <= now:
                out.closed.extend((i, c) for c in led.close_until(now))
                if led.next_close_ms >= 1 << 62:
                    self._open.discard(i)

    def _slice(self, start: int, out: StepResult) -> None:
        rng = self._rng
        if start >= self._next_regime_ms and not self.steady:
            self._next_regime(start)
        lam = self.rate * _REGIMES[self._regime][0] * self.slice_ms / 1000.0
        n = _poisson(rng, lam)
        if n == 0:
            return
        picks = rng.choices(self._idx, cum_weights=self._cum, k=n)
        events, closed, changed = out
        ledgers, insts = self.ledgers, self.instruments
        bid, ask, bid_qty, ask_qty, u = self.bid, self.ask, self.bid_qty, self.ask_qty, self.u
        random_ = rng.random
        slice_ms = self.slice_ms
        for j, i in enumerate(picks):
            inst = insts[i]
            ts = start + j * slice_ms // n
            buyer_taker = random_() < 0.5
            price = ask[i] if buyer_taker else bid[i]
            k = 1
            while k < 6 and random_() < 0.35:
                k += 1
            qtys = tuple(self._trade_qty(inst, price) for _ in range(k))
            agg_id, first = self._next_agg[i], self._next_trade[i]
            self._next_agg[i] = agg_id + 1
            self._next_trade[i] = first + k
            agg = AggTrade(agg_id, price, sum(qtys), first, first + k - 1, ts, not buyer_taker)
            led = ledgers[i]
            bars = led.record(agg)
            if bars:
                closed.extend((i, c) for c in bars)
            self._open.add(i)
            self._move_book(i, inst, buyer_taker)
            u[i] += 1 + int(random_() * 20)
            changed.add(i)
            events.append(MarketEvent(i, agg, qtys, bid[i], bid_qty[i], ask[i], ask_qty[i], u[i]))

    def _trade_qty(self, inst: Instrument, price: int) -> int:
        # notional in USDT, heavy-tailed around ~$20..$2,000, turned into whole steps
        notional = min(20.0 * self._rng.paretovariate(1.2), 2_000_000.0)
        units = int(notional * 10 ** (inst.price_dp + inst.qty_dp) / price)
        units -= units % inst.step
        return min(max(units, inst.min_qty), inst.max_qty)

    def _depth_qty(self, inst: Instrument) -> int:
        units = inst.min_qty * int(1 + self._rng.paretovariate(1.1) * 5)
        units -= units % inst.step
        return min(max(units, inst.min_qty), inst.max_qty)

    def _move_book(self, i: int, inst: Instrument, buyer_taker: bool) -> None:
        rng = self._rng
        r = rng.random()
        if r < 0.3:
            tick = inst.tick
            # lean with the taker, pulled back once the price wanders more than 10% off its start
            drift = (self.bid[i] - inst.start_price) / inst.start_price
            up = rng.random() < (0.6 if buyer_taker else 0.4) - max(-0.3, min(0.3, drift * 2))
            new_bid = self.bid[i] + (tick if up else -tick)
            if new_bid >= 10 * tick:
                self.bid[i] = new_bid
            spread = tick if rng.random() < 0.85 else 2 * tick
            self.ask[i] = self.bid[i] + spread
            self.bid_qty[i] = self._depth_qty(inst)
            self.ask_qty[i] = self._depth_qty(inst)
        elif buyer_taker:
            self.ask_qty[i] = self._depth_qty(inst)
        else:
            self.bid_qty[i] = self._depth_qty(inst)

    def _next_regime(self, start: int) -> None:
        rng = self._rng
        self._next_regime_ms = start - start % 1000 + 1000
        if rng.random() < 0.2:  # persistent: a regime lasts ~5 s on average
            r, acc = rng.random(), 0.0
            for k, (_, share) in enumerate(_REGIMES):
                acc += share
                if r < acc:
                    self._regime = k
                    break
        expired = [i for i, until in self._hot.items() if until <= start]
        for i in expired:
            del self._hot[i]
        hot_added = False
        if rng.random() < 0.15:
            self._hot[rng.randrange(len(self.instruments))] = start + rng.randint(2, 15) * 1000
            hot_added = True
        if expired or hot_added:
            self._rebuild_weights()

    def _rebuild_weights(self) -> None:
        total = 0.0
        cum = []
        for i, w in enumerate(self._base_w):
            total += w * _HOT_FACTOR if i in self._hot else w
            cum.append(total)
        self._cum = cum


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam < 30:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
