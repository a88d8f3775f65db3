"""REST under /api from a served web process: candle history pages, signals, health."""

from __future__ import annotations

import time

import httpx
import pytest

from core.schemas import Candle, decode
from tests.e2e.webstack import WebStack


@pytest.mark.timeout(120)
def test_candle_history_pages_backwards_without_gaps_or_overlaps(web_stack: WebStack) -> None:
    stack = web_stack
    http = httpx.Client(base_url=stack.base_url, timeout=10)
    listing = http.get("/api/symbols").json()
    assert listing["timeframes"] == ["1s", "1m"]
    assert sorted(listing["signals"]) == ["ema_1s", "rsi_1s"]
    sym = listing["symbols"][0]
    key = stack.keys.candles(sym, "1s")
    stack.pipeline.wait_for("12 candles", lambda: stack.redis.zcard(key) >= 12, timeout_s=60)
    stack.sim.admin("POST", "/sim/rate", {"rate": 0})  # hold the history still while paging
    time.sleep(2)  # the last builds land
    stored = [decode(m, Candle).open_time_ms for m in stack.redis.zrange(key, 0, -1)]

    pages, before = [], None
    while True:
        params = {"symbol": sym, "timeframe": "1s", "limit": 5}
        if before is not None:
            params["before"] = before
        page = http.get("/api/candles", params=params).json()
        opens = [c["open_time"] for c in page["candles"]]
        assert opens == sorted(opens)
        assert len(opens) <= 5
        pages.append(opens)
        before = page["next_before"]
        if before is None:
            break
        assert before == opens[0]
    assert [t for p in reversed(pages) for t in p] == stored  # every candle once, in order

    signals = http.get("/api/signals", params={"symbol": sym, "timeframe": "1s"}).json()
    assert set(signals["signals"]) <= {"ema_1s", "rsi_1s"}
    for value in signals["signals"].values():
        assert value["state"] in ("long", "short", "flat")

    refusals = {
        ("NOPE", "1s", "5"): (404, "unknown_symbol"),
        (sym, "3m", "5"): (404, "unknown_timeframe"),
        (sym, "1s", "0"): (400, "bad_request"),
        (sym, "1s", "x"): (400, "bad_request"),
        (sym, "1s", "5000"): (400, "bad_request"),
    }
    for (s, tf, limit), expected in refusals.items():
        r = http.get("/api/candles", params={"symbol": s, "timeframe": tf, "limit": limit})
        assert (r.status_code, r.json()["error"]) == expected, (s, tf, limit)

    health = http.get("/api/health")
    body = health.json()
    assert (health.status_code, body["status"]) == (200, "ok"), body
    assert {"web", "feeders", "consumers"} <= body.keys()
    assert all(not r["stale"] for r in body["web"].values())
