"""Market model on a virtual clock: determinism, grids, ids and klines equal to the trades."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from simulator.instruments import fmt_units, load_instruments, parse_units
from simulator.ledger import INTERVALS, open_time_ms
from simulator.model import MarketEvent, MarketModel, VirtualClock

START = 1_700_000_000_000


def run(seed: int, *, seconds: int, step_ms: int, rate: float = 400.0) -> list[MarketEvent]:
    clock = VirtualClock(START)
    model = MarketModel(load_instruments(count=20), clock, seed=seed, rate=rate)
    events: list[MarketEvent] = []
    for _ in range(seconds * 1000 // step_ms):
        clock.advance(step_ms)
        events += model.step().events
    return events


def test_same_seed_and_clock_give_the_same_trades_however_the_steps_are_spaced() -> None:
    a = run(7, seconds=20, step_ms=10)
    b = run(7, seconds=20, step_ms=1000)
    assert [e.agg for e in a] == [e.agg for e in b]
    assert len(a) > 1000
    assert [e.agg for e in run(8, seconds=20, step_ms=1000)] != [e.agg for e in a]


def test_prices_and_quantities_sit_on_the_grids_and_ids_are_consecutive() -> None:
    instruments = load_instruments(count=20)
    events = run(1, seconds=30, step_ms=100)
    last_agg: dict[int, int] = {}
    last_trade: dict[int, int] = {}
    for e in events:
        inst, agg = instruments[e.i], e.agg
        assert agg.p % inst.tick == 0
        assert agg.p > 0
        assert all(q % inst.step == 0 and inst.min_qty <= q <= inst.max_qty for q in e.qtys)
        assert sum(e.qtys) == agg.q
        assert agg.l - agg.f + 1 == len(e.qtys)
        assert e.bid < e.ask
        assert (e.ask - e.bid) % inst.tick == 0
        assert abs(agg.p - e.bid) <= 3 * inst.tick  # traded at the touch, then the book moved
        if e.i in last_agg:
            assert agg.a == last_agg[e.i] + 1
            assert agg.f == last_trade[e.i] + 1
        last_agg[e.i], last_trade[e.i] = agg.a, agg.l


def test_activity_is_skewed_and_the_rate_is_roughly_honoured() -> None:
    events = run(3, seconds=600, step_ms=1000, rate=100.0)
    per_symbol = Counter(e.i for e in events)
    counts = sorted(per_symbol.values(), reverse=True)
    assert counts[0] > 4 * counts[len(counts) // 2]  # busy and quiet symbols
    # 100/s for 10 virtual minutes; regimes (quiet/normal/busy) make a single minute vary 2x
    assert 0.8 * 60_000 < len(events) < 1.25 * 60_000


def test_ledger_klines_equal_a_decimal_recomputation_from_the_emitted_trades() -> None:
    clock = VirtualClock(START)
    instruments = load_instruments(count=5)
    model = MarketModel(instruments, clock, seed=11, rate=50.0)
    events: list[MarketEvent] = []
    for _ in range(12 * 60):  # 12 virtual minutes
        clock.advance(1000)
        events += model.step().events
    for i, inst in enumerate(instruments):
        mine = [e.agg for e in events if e.i == i]
        for iv in INTERVALS:
            expected: dict[int, dict[str, Decimal | int]] = {}
            for t in mine:
                p = Decimal(fmt_units(t.p, inst.price_dp))
                q = Decimal(fmt_units(t.q, inst.qty_dp))
                bar = expected.setdefault(
                    open_time_ms(iv, t.T),
                    {"o": p, "h": p, "l": p, "v": Decimal(0), "q": Decimal(0), "n": 0,
                     "V": Decimal(0), "Q": Decimal(0), "f": t.f},
                )  # fmt: skip
                bar["h"], bar["l"], bar["c"] = max(bar["h"], p), min(bar["l"], p), p
                bar["v"] += q
                bar["q"] += p * q
                bar["n"] += t.l - t.f + 1
                if not t.m:
                    bar["V"] += q
                    bar["Q"] += p * q
                bar["L"] = t.l
            got = model.ledgers[i].klines(iv, limit=1500)
            assert [b.t for b in got] == sorted(expected)
            for b in got:
                e = expected[b.t]
                assert (b.o, b.h, b.l, b.c) == tuple(
                    parse_units(str(e[k]), inst.price_dp) for k in "ohlc"
                )
                assert b.v == parse_units(str(e["v"]), inst.qty_dp)
                assert b.q == parse_units(str(e["q"]), inst.quote_dp)
                assert parse_units(str(e["V"]), inst.qty_dp) == b.V
                assert parse_units(str(e["Q"]), inst.quote_dp) == b.Q
                assert (b.n, b.f, b.L) == (e["n"], e["f"], e["L"])


def test_more_symbols_than_recorded_are_synthesised_with_real_filters() -> None:
    instruments = load_instruments(count=300)
    assert len(instruments) == 300
    assert len({i.symbol for i in instruments}) == 300
    assert instruments[0].symbol == "BTCUSDT"
    assert instruments[200].symbol.startswith("SIM")
    assert instruments[200].info["filters"] == instruments[200 - 122].info["filters"]
    assert all(i.info["status"] == "TRADING" and i.info["contractType"] == "PERPETUAL"
               for i in instruments)  # fmt: skip
    with pytest.raises(ValueError, match="at least 1"):
        load_instruments(count=0)


def test_rate_can_be_changed_and_zero_is_silent() -> None:
    clock = VirtualClock(START)
    model = MarketModel(load_instruments(count=3), clock, seed=1, rate=100.0)
    model.set_rate(0)
    clock.advance(5000)
    assert model.step().events == []
    with pytest.raises(ValueError, match="rate"):
        model.set_rate(-1)
