"""Ledger ground truth: klines derived from a known trade sequence, as Binance derives them."""

from __future__ import annotations

from simulator.ledger import INTERVALS, AggTrade, Bar, SymbolLedger, close_time_ms, open_time_ms

B = 1_699_999_200_000  # a whole hour (and a whole 5 minutes), UTC
MIN = 60_000


def sequence() -> list[AggTrade]:
    return [
        AggTrade(a=1, p=100, q=2, f=10, l=10, T=B + 1_000, m=False),  # buyer is the taker
        AggTrade(a=2, p=105, q=1, f=11, l=12, T=B + 20_000, m=True),
        AggTrade(a=3, p=98, q=3, f=13, l=13, T=B + 59_999, m=False),
        AggTrade(a=4, p=101, q=5, f=14, l=16, T=B + MIN, m=True),
        AggTrade(a=5, p=110, q=1, f=17, l=17, T=B + 5 * MIN + 1, m=False),
    ]


def test_klines_follow_binance_derivation_for_every_field() -> None:
    ledger = SymbolLedger()
    closed = []
    for agg in sequence():
        closed += ledger.record(agg)

    minute0 = Bar(t=B, o=100, h=105, l=98, c=98, v=6, q=599, n=4, V=5, Q=494, f=10, L=13)
    minute1 = Bar(t=B + MIN, o=101, h=101, l=101, c=101, v=5, q=505, n=3, V=0, Q=0, f=14, L=16)
    five0 = Bar(t=B, o=100, h=105, l=98, c=101, v=11, q=1104, n=7, V=5, Q=494, f=10, L=16)
    # trade 4 closes minute 0; trade 5 closes minute 1 and the 3m and 5m bars both fell in
    assert [(c.interval, c.bar) for c in closed] == [
        ("1m", minute0),
        ("1m", minute1),
        ("3m", five0),
        ("5m", five0),
    ]
    assert ledger.klines("1m") == [
        minute0,
        minute1,
        Bar(t=B + 5 * MIN, o=110, h=110, l=110, c=110, v=1, q=110, n=1, V=1, Q=110, f=17, L=17),
    ]  # no bars for the minutes without trades
    assert ledger.klines("5m")[0] == five0
    hour = ledger.current("1h")
    assert hour == Bar(t=B, o=100, h=110, l=98, c=110, v=12, q=1214, n=8, V=6, Q=604, f=10, L=17)
    assert ledger.klines("1h") == [hour]


def test_a_bar_closes_by_time_without_a_new_trade() -> None:
    ledger = SymbolLedger()
    for agg in sequence():
        ledger.record(agg)
    assert ledger.close_until(B + 6 * MIN - 1) == []
    closed = ledger.close_until(B + 6 * MIN)
    assert [c.interval for c in closed] == ["1m", "3m"]  # the 5m bar [5m, 10m) is still open
    assert ledger.current("1m") is None
    assert ledger.current("5m") == Bar(B + 5 * MIN, 110, 110, 110, 110, 1, 110, 1, 1, 110, 17, 17)
    closed = ledger.close_until(B + 40 * 86_400_000)
    assert [c.interval for c in closed] == list(INTERVALS[2:])
    assert ledger.next_close_ms >= 1 << 62  # nothing open any more


def test_every_interval_aggregates_the_same_trades() -> None:
    ledger = SymbolLedger()
    for agg in sequence():
        ledger.record(agg)
    for iv in INTERVALS:
        bars = ledger.klines(iv, limit=1500)
        assert sum(b.n for b in bars) == 8
        assert sum(b.v for b in bars) == 12
        assert sum(b.q for b in bars) == 1214
        assert bars[0].f == 10
        assert bars[-1].L == 17
        for b in bars:
            assert open_time_ms(iv, b.t) == b.t


def test_interval_alignment() -> None:
    ts = 1_626_992_741_421  # 2021-07-22 22:25:41 UTC, a Thursday
    assert open_time_ms("1m", ts) == 1_626_992_700_000
    assert open_time_ms("1w", ts) == 1_626_652_800_000  # Monday 2021-07-19
    assert open_time_ms("1M", ts) == 1_625_097_600_000  # 2021-07-01
    assert open_time_ms("3d", ts) % (3 * 86_400_000) == 0  # epoch-aligned (an assumption)
    assert close_time_ms("1M", 1_625_097_600_000) == 1_627_775_999_999  # 2021-07-31 23:59:59.999


def test_klines_window_and_limit_semantics() -> None:
    ledger = SymbolLedger()
    for k in range(10):
        ledger.record(AggTrade(k, 100 + k, 1, k, k, B + k * MIN, False))
    assert [b.t for b in ledger.klines("1m", limit=3)] == [B + 7 * MIN, B + 8 * MIN, B + 9 * MIN]
    assert [b.t for b in ledger.klines("1m", start_ms=B + MIN, limit=2)] == [B + MIN, B + 2 * MIN]
    assert [b.t for b in ledger.klines("1m", end_ms=B + 2 * MIN, limit=2)] == [B + MIN, B + 2 * MIN]
    assert ledger.klines("1m", start_ms=B + 3 * MIN, end_ms=B + 3 * MIN)[0].o == 103


def test_retention_bounds_memory_and_lookup_by_id_still_works() -> None:
    ledger = SymbolLedger(trade_retention=3, bar_retention=2)
    for k in range(10):
        ledger.record(AggTrade(100 + k, 50, 1, k, k, B + k * MIN, True))
    assert [t.a for t in ledger.agg_trades(limit=10)] == [107, 108, 109]
    assert [t.a for t in ledger.agg_trades(from_id=108, limit=10)] == [108, 109]
    assert [t.a for t in ledger.agg_trades(from_id=50, limit=1)] == [107]
    assert len(ledger.klines("1m", limit=1500)) == 3  # 2 closed kept + the open one
    assert [t.a for t in ledger.agg_trades(start_ms=B + 8 * MIN, end_ms=B + 8 * MIN)] == [108]
