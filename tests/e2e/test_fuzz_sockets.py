"""Socket.IO events with any payload (Hypothesis), against a served web process (gunicorn, the
simulator and execution as in tests/e2e/tradestack.py): every event is answered, `ok` true or
false with an error code, and the connection stays up. A handler that raised would answer
nothing (the call would time out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.tradestack import SYMBOLS, Trader, start_trade_stack

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from(["BTCUSDT", "1m", "candles", "book", "trades", "mark", "place", "BUY", ""])
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["channel", "symbol", "timeframe", "token", "action", "request_id", "side", "type",
          "quantity", "price", "time_in_force", "reduce_only", "leverage", "margin_type",
          "client_order_id"]  # fmt: skip
payloads = values | st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)


@pytest.fixture
def trader(sim_factory: Any, redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Trader]:
    sim = sim_factory(rate=5.0, symbols=SYMBOLS)
    stack = start_trade_stack(sim, redis_url, namespace, tmp_path)
    trader = Trader(stack)  # signed in, no linked account: nothing random can trade
    yield trader
    trader.close()
    stack.stop()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.sampled_from(["subscribe", "unsubscribe", "reauth", "trade"]), payloads)
def test_every_event_with_any_payload_is_answered(trader: Trader, event: str, payload: Any) -> None:
    ack = trader.sio.call(event, payload, timeout=10)
    assert isinstance(ack, dict), ack
    assert ack["ok"] in (True, False), ack
    if not ack["ok"]:
        assert isinstance(ack["error"], str), ack
        assert isinstance(ack["message"], str), ack
    assert trader.sio.connected
