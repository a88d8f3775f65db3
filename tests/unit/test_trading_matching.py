"""Synthetic-depth matching and position accounting (pure)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from simulator.trading.accounts import Position
from simulator.trading.errors import ApiError
from simulator.trading.matching import Fill, TopOfBook, crossing_qty, is_marketable, take
from simulator.trading.order_limits import OrderCounter
from simulator.trading.userstream import EventClock

BOOK = TopOfBook(bid=D("100.00"), bid_qty=D("2"), ask=D("100.10"), ask_qty=D("3"))
TICK = D("0.01")


def test_market_buy_within_top_quantity_fills_at_the_ask() -> None:
    assert take("BUY", D("2"), BOOK, tick=TICK) == [Fill(D("100.10"), D("2"))]


def test_market_buy_walks_one_tick_per_extra_level_with_the_same_quantity() -> None:
    assert take("BUY", D("7"), BOOK, tick=TICK) == [
        Fill(D("100.10"), D("3")),
        Fill(D("100.11"), D("3")),
        Fill(D("100.12"), D("1")),
    ]


def test_market_sell_walks_down_from_the_bid() -> None:
    assert take("SELL", D("5"), BOOK, tick=TICK) == [
        Fill(D("100.00"), D("2")),
        Fill(D("99.99"), D("2")),
        Fill(D("99.98"), D("1")),
    ]


def test_limit_price_and_bound_and_level_cap_stop_the_walk() -> None:
    assert take("BUY", D("10"), BOOK, tick=TICK, limit_price=D("100.11")) == [
        Fill(D("100.10"), D("3")),
        Fill(D("100.11"), D("3")),
    ]
    assert take("SELL", D("10"), BOOK, tick=TICK, bound=D("99.995")) == [Fill(D("100.00"), D("2"))]
    assert len(take("BUY", D("100"), BOOK, tick=TICK, max_levels=4)) == 4


def test_marketable_and_crossing() -> None:
    assert is_marketable("BUY", D("100.10"), BOOK)
    assert not is_marketable("BUY", D("100.09"), BOOK)
    assert is_marketable("SELL", D("100.00"), BOOK)
    assert crossing_qty("BUY", D("100.10"), BOOK) == D("3")
    assert crossing_qty("BUY", D("100.05"), BOOK) == 0
    assert crossing_qty("SELL", D("99.50"), BOOK) == D("2")


def test_position_average_entry_realized_pnl_and_flip() -> None:
    pos = Position("BTCUSDT")
    assert pos.apply_fill(D("1"), D("100"), D("0.04"), 1) == 0
    assert pos.apply_fill(D("1"), D("110"), D("0.044"), 2) == 0
    assert (pos.amount, pos.entry_price) == (D("2"), D("105"))
    assert pos.unrealized(D("106")) == D("2")
    assert pos.apply_fill(D("-0.5"), D("115"), D("0"), 3) == D("5")  # (115-105)*0.5
    assert (pos.amount, pos.entry_price) == (D("1.5"), D("105"))
    assert pos.apply_fill(D("-2.5"), D("100"), D("0"), 4) == D("-7.5")  # closes 1.5, opens 1 short
    assert (pos.amount, pos.entry_price, pos.realized_pnl) == (D("-1"), D("100"), D("-2.5"))
    assert pos.unrealized(D("90")) == D("10")
    assert pos.apply_fill(D("1"), D("90"), D("0"), 5) == D("10")
    assert (pos.amount, pos.entry_price, pos.break_even_price) == (0, 0, 0)


def test_break_even_includes_opening_fees() -> None:
    pos = Position("BTCUSDT")
    pos.apply_fill(D("2"), D("100"), D("0.08"), 1)
    assert pos.break_even_price == D("100.04")
    short = Position("BTCUSDT")
    short.apply_fill(D("-2"), D("100"), D("0.08"), 1)
    assert short.break_even_price == D("99.96")


def test_order_counter_headers_and_limit() -> None:
    counter = OrderCounter((("10S", 10_000, 2, "10 SECOND"), ("1M", 60_000, 1200, "MINUTE")))
    assert counter.hit(1_000) == {"X-MBX-ORDER-COUNT-10S": "1", "X-MBX-ORDER-COUNT-1M": "1"}
    counter.hit(2_000)
    with pytest.raises(ApiError) as info:
        counter.hit(3_000)
    err = info.value
    assert (err.code, err.status, err.headers["Retry-After"]) == (-1015, 429, "7")
    assert err.msg == "Too many new orders; current limit is 2 orders per 10 SECOND."
    assert counter.hit(10_000) == {"X-MBX-ORDER-COUNT-10S": "1", "X-MBX-ORDER-COUNT-1M": "3"}


def test_event_clock_is_strictly_increasing_per_type() -> None:
    clock = EventClock()
    stamps = [clock.stamp("ORDER_TRADE_UPDATE", 1000) for _ in range(3)]
    assert stamps == [(1000, 1000), (1001, 1001), (1002, 1002)]
    assert clock.stamp("ACCOUNT_UPDATE", 1000) == (1000, 1000)
    assert clock.stamp("ORDER_TRADE_UPDATE", 5000) == (5000, 5000)


def test_an_account_keeps_a_bounded_number_of_closed_orders() -> None:
    from dataclasses import replace

    from simulator.trading.accounts import MAX_ORDERS_KEPT, Account
    from simulator.trading.orders import Order

    account = Account("k", "s", D(1000))
    template = Order(0, "c", "BTCUSDT", "BUY", "LIMIT", "GTC", D(1), D(1), False, 0, 0)
    resting = replace(template, order_id=0)
    account.add_order(resting)  # open: never forgotten
    for i in range(1, 3 * MAX_ORDERS_KEPT):
        account.add_order(replace(template, order_id=i, status="FILLED"))
    assert len(account.orders) == MAX_ORDERS_KEPT
    assert account.find_order(resting.symbol, 0, None) is resting
    assert account.find_order(resting.symbol, 1, None) is None  # the oldest closed went first
    assert account.find_order(resting.symbol, 3 * MAX_ORDERS_KEPT - 1, None) is not None


def test_open_orders_follow_each_order_as_it_closes() -> None:
    from dataclasses import replace

    from simulator.trading.accounts import Account
    from simulator.trading.orders import Order

    account = Account("k", "s", D(1000))
    template = Order(0, "c", "BTCUSDT", "BUY", "LIMIT", "GTC", D(1), D(1), False, 0, 0)
    orders = [replace(template, order_id=i, symbol=("BTCUSDT", "ETHUSDT")[i % 2]) for i in range(6)]
    for order in orders:
        account.add_order(order)
    account.add_order(replace(template, order_id=99, status="FILLED"))  # kept closed: not open
    orders[0].status = "CANCELED"
    orders[3].record_fill(D(1), D(1), 1)  # FILLED
    orders[5].record_fill(D(1), D("0.5"), 1)  # PARTIALLY_FILLED: still open
    assert [o.order_id for o in account.open_orders()] == [1, 2, 4, 5]  # oldest first
    assert [o.order_id for o in account.open_orders("ETHUSDT")] == [1, 5]
    for order in account.open_orders():  # closing while iterating: each is still yielded once
        order.status = "CANCELED"
    assert list(account.open_orders()) == []
