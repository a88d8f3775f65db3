"""Keys and account settings over real HTTP: Ed25519 keys, canTrade, marginType, leverage events.

Same harness as test_trading_api.py: a served TradingEngine on a settable FakeMarket.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from simulator.trading import sign_ed25519
from tests.e2e.test_trading_api import Exchange, drain, e2e, error_of


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def ed25519_request(
    ex: Exchange,
    api_key: str,
    key: Ed25519PrivateKey,
    method: str,
    path: str,
    params: Mapping[str, str],
    *,
    encode: bool = True,
) -> httpx.Response:
    """Sign like a Binance connector with an Ed25519 key: base64, then percent-encoded."""
    payload = urlencode({**params, "timestamp": str(ex.market.now_ms())})
    signature = sign_ed25519(key, payload)
    sent = quote(signature, safe="") if encode else signature
    return await ex.http.request(
        method, f"{ex.base}{path}?{payload}&signature={sent}", headers={"X-MBX-APIKEY": api_key}
    )


@e2e()
async def test_an_ed25519_key_places_orders_with_percent_encoded_signatures(ex: Exchange) -> None:
    key = Ed25519PrivateKey.generate()
    created = await ex.http.post(
        f"{ex.base}/sim/accounts", json={"balance": "2000", "publicKey": public_pem(key)}
    )
    body = created.json()
    assert list(body) == ["apiKey", "keyType", "balance"]  # no secretKey
    assert body["keyType"] == "ED25519"
    assert body["balance"] == "2000.00000000"
    api_key = body["apiKey"]
    assert len(api_key) == 64
    assert api_key.isalnum()
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010"}
    placed = await ed25519_request(ex, api_key, key, "POST", "/fapi/v1/order", order)
    assert placed.status_code == 200, placed.text
    assert placed.headers["X-MBX-ORDER-COUNT-10S"] == "1"
    balance = await ed25519_request(ex, api_key, key, "GET", "/fapi/v2/balance", {})
    assert balance.json()[0]["balance"] != "2000.00000000"  # the fee was paid
    other = Ed25519PrivateKey.generate()
    forged = await ed25519_request(ex, api_key, other, "GET", "/fapi/v2/balance", {})
    assert error_of(forged) == (400, -1022, "Signature for this request is not valid.")
    hmac_style = await ex.http.get(
        f"{ex.base}/fapi/v2/balance?timestamp={ex.market.now_ms()}&signature={'0' * 64}",
        headers={"X-MBX-APIKEY": api_key},
    )
    assert error_of(hmac_style)[:2] == (400, -1022)


@e2e()
async def test_an_unencoded_signature_with_a_plus_is_refused(ex: Exchange) -> None:
    key = Ed25519PrivateKey.generate()
    created = await ex.http.post(f"{ex.base}/sim/accounts", json={"publicKey": public_pem(key)})
    api_key = created.json()["apiKey"]
    ex.market.frozen_ms = ex.market.now_ms()  # the timestamp tried here is the one sent
    for n in range(300):  # find parameters whose signature holds a '+'
        params = {"recvWindow": str(5000 + n)}
        payload = urlencode({**params, "timestamp": str(ex.market.frozen_ms)})
        if "+" in sign_ed25519(key, payload):
            break
    else:
        raise AssertionError("no signature with '+'")
    plain = await ed25519_request(ex, api_key, key, "GET", "/fapi/v2/balance", params, encode=False)
    encoded = await ed25519_request(ex, api_key, key, "GET", "/fapi/v2/balance", params)
    assert (plain.status_code, encoded.status_code) == (400, 200)


@e2e()
async def test_sim_accounts_refuses_bad_public_keys(ex: Exchange) -> None:
    url = f"{ex.base}/sim/accounts"
    assert error_of(await ex.http.post(url, json={"publicKey": "nope"}))[1:] == (
        -1130,
        "Data sent for parameter 'publicKey' is not valid.",
    )
    pem = public_pem(Ed25519PrivateKey.generate())
    both = await ex.http.post(url, json={"publicKey": pem, "secretKey": "a" * 64})
    assert error_of(both)[1] == -1130
    assert error_of(await ex.http.post(url, json={"canTrade": "no"}))[1] == -1130


@e2e()
async def test_a_key_without_futures_trading_reads_but_cannot_trade(ex: Exchange) -> None:
    created = (await ex.http.post(f"{ex.base}/sim/accounts", json={"canTrade": False})).json()
    ex.api_key, ex.secret = created["apiKey"], created["secretKey"]
    account = (await ex.signed("GET", "/fapi/v2/account", {})).json()
    assert account["canTrade"] is False
    refused = await ex.order(side="BUY", type="MARKET", quantity="0.010")
    assert error_of(refused) == (401, -2015, "Invalid API-key, IP, or permissions for action.")
    leverage = await ex.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "5"})
    assert error_of(leverage)[:2] == (401, -2015)
    assert (await ex.signed("GET", "/fapi/v2/positionRisk", {})).status_code == 200


@e2e()
async def test_can_trade_is_true_by_default(ex: Exchange) -> None:
    assert (await ex.signed("GET", "/fapi/v2/account", {})).json()["canTrade"] is True


@e2e()
async def test_margin_type_endpoint_and_its_refusals(ex: Exchange) -> None:
    def change(margin_type: str) -> dict[str, str]:
        return {"symbol": "BTCUSDT", "marginType": margin_type}

    ok = await ex.signed("POST", "/fapi/v1/marginType", change("ISOLATED"))
    assert ok.json() == {"code": 200, "msg": "success"}
    again = await ex.signed("POST", "/fapi/v1/marginType", change("ISOLATED"))
    assert error_of(again) == (400, -4046, "No need to change margin type.")
    risk = (await ex.signed("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})).json()[0]
    assert (risk["marginType"], risk["leverage"]) == ("isolated", "20")
    resting = {"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "8000"}
    await ex.order(**resting, quantity="0.010")
    locked = await ex.signed("POST", "/fapi/v1/marginType", change("CROSSED"))
    assert error_of(locked)[:2] == (400, -4047)
    await ex.signed("DELETE", "/fapi/v1/allOpenOrders", {"symbol": "BTCUSDT"})
    await ex.order(side="BUY", type="MARKET", quantity="0.010")
    held = await ex.signed("POST", "/fapi/v1/marginType", change("CROSSED"))
    assert error_of(held)[:2] == (400, -4048)
    bad = await ex.signed("POST", "/fapi/v1/marginType", change("CROSS"))
    assert error_of(bad) == (
        400,
        -1102,
        "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.",
    )
    eth = (await ex.signed("GET", "/fapi/v2/positionRisk", {"symbol": "ETHUSDT"})).json()[0]
    assert eth["marginType"] == "cross"


@e2e()
async def test_a_leverage_change_emits_account_config_update(ex: Exchange) -> None:
    key = (await ex.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    stream = ex.engine.open_user_stream(key, None)
    assert stream is not None
    for leverage in ("25", "30"):
        answer = await ex.signed(
            "POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": leverage}
        )
        assert answer.status_code == 200
    refused = await ex.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "0"})
    assert refused.status_code == 400
    events = await drain(stream)
    assert [e["ac"] for e in events] == [{"s": "BTCUSDT", "l": 25}, {"s": "BTCUSDT", "l": 30}]
    assert all(set(e) == {"e", "E", "T", "ac"} for e in events)
    assert {e["e"] for e in events} == {"ACCOUNT_CONFIG_UPDATE"}
    assert events[0]["E"] < events[1]["E"]
    assert events[0]["T"] < events[1]["T"]
    payload = orjson.dumps(events[0])
    assert payload.startswith(b'{"e":"ACCOUNT_CONFIG_UPDATE","E":')
