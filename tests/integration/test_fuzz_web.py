"""The web tier's REST requests, fuzzed (Hypothesis) against the app on real Redis.

Whatever a client sends (types, sizes, nesting, unicode), a REST call gets a JSON answer with a
4xx status and `{"error", "message"}`, never a 500. The Socket.IO events are fuzzed against a
served web process in tests/e2e/test_fuzz_sockets.py (the in-process test client cannot run with
the Socket.IO message queue).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from web import siwe
from web.app import create_app

RUNS = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from(["BTCUSDT", "1m", "1s", "BUY", "LIMIT", "0.001", "NaN", "-1", "1e9", ""])
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
          "client_order_id", "kind", "api_key", "secret", "message", "signature",
          "scope"]  # fmt: skip
bodies = values | st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)
query = st.text(alphabet=string.printable, max_size=20)


@pytest.fixture
def app(make_settings: Callable[..., Settings]) -> Any:
    return create_app(make_settings(TP_LOGIN_PER_MINUTE_IP="1000000",
                                    TP_LOGIN_PER_MINUTE_ADDRESS="1000000",
                                    TP_TRADE_PER_MINUTE="100000"), start_pump=False)  # fmt: skip


@pytest.fixture
def client(app: Any) -> FlaskClient:
    return app.test_client()  # type: ignore[no-any-return]


@pytest.fixture
def token(client: FlaskClient) -> str:
    account = Account.create()
    grant = client.get("/auth/nonce").json
    assert grant is not None
    issued = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = siwe.format_message(
        domain=grant["domain"], address=account.address, uri=grant["uri"],
        chain_id=grant["chain_id"], nonce=grant["nonce"], issued_at=issued,
    )  # fmt: skip
    signature = account.sign_message(encode_defunct(text=text)).signature.hex()
    body = {"message": text, "signature": "0x" + signature.removeprefix("0x")}
    response = client.post("/auth/login", json=body)
    assert response.status_code == 200, response.text
    return str(response.json["access_token"])  # type: ignore[index]


def refused_plainly(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.mimetype == "application/json", response.text
    if response.status_code >= 400:
        body = response.json
        assert isinstance(body["error"], str)
        assert isinstance(body["message"], str)


@RUNS
@given(bodies)
def test_login_with_any_body_is_a_clear_refusal(client: FlaskClient, body: Any) -> None:
    refused_plainly(client.post("/auth/login", json=body))


@RUNS
@given(query, query, query, query)
def test_candle_queries_with_any_parameters(client: FlaskClient, symbol: str, tf: str, limit: str,
                                            before: str) -> None:  # fmt: skip
    args = {"symbol": symbol, "timeframe": tf, "limit": limit, "before": before}
    for path in ("/api/candles", "/api/signals", "/api/signals/history", "/api/instruments"):
        refused_plainly(client.get(path, query_string=args))


@RUNS
@given(st.sampled_from(["/api/orders", "/api/orders/cancel", "/api/orders/cancel-all",
                        "/api/positions/close", "/api/leverage", "/api/margin-type",
                        "/api/account/link"]), bodies)  # fmt: skip
def test_trade_commands_with_any_body(
    client: FlaskClient, token: str, path: str, body: Any
) -> None:
    response = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    refused_plainly(response)
    assert response.status_code != 200  # no linked account: nothing can have been placed
