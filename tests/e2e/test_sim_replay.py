"""Replay of the recorded 2021 combined stream through the simulator's endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from websockets.sync.client import connect

from simulator.replay import read_frames
from simulator.ws_server import stream_route
from tests.e2e.conftest import RunningSim, loads
from tests.e2e.test_sim_rest import _as_numbers, _derive

FIXTURE = Path(__file__).parents[1] / "fixtures" / "ws-combined-2021-07-22.txt"


def test_replayed_frames_arrive_unchanged_on_their_routes_and_feed_rest_klines(
    sim_factory: Callable[..., RunningSim],
) -> None:
    sim = sim_factory(replay=FIXTURE, replay_paused=True)
    frames = read_frames(FIXTURE)
    streams = sorted({f.stream for f in frames})
    public = "/".join(s for s in streams if stream_route(s) == "public")
    market = "/".join(s for s in streams if stream_route(s) == "market")
    got: dict[str, list[dict]] = {"public": [], "market": []}
    with (
        connect(f"{sim.ws_url}/public/stream?streams={public}", max_queue=None) as pub,
        connect(f"{sim.ws_url}/market/stream?streams={market}", max_queue=None) as mkt,
    ):
        assert sim.admin("POST", "/sim/replay", {"speed": 25}) == {"started": True}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = sim.admin("GET", "/sim/state")["replay"]
            if state and not state["running"] and state["sent"] == len(frames):
                break
            time.sleep(0.1)
        for name, ws in (("public", pub), ("market", mkt)):
            try:
                while True:
                    got[name].append(loads(ws.recv(timeout=0.5)))
            except TimeoutError:
                pass
    for name in ("public", "market"):
        expected = [
            {"stream": f.stream, "data": f.data} for f in frames if stream_route(f.stream) == name
        ]
        assert got[name] == expected, name  # same frames, same order, same payloads
    assert len(got["public"]) + len(got["market"]) == 1535

    trades = [f.data for f in frames if f.data["e"] == "aggTrade" and f.data["s"] == "SUSHIUSDT"]
    ground = sim.admin("GET", "/sim/trades?symbol=SUSHIUSDT&limit=1000")
    assert [t["a"] for t in ground] == [t["a"] for t in trades]
    rows = sim.http.get("/fapi/v1/klines", params={"symbol": "SUSHIUSDT", "interval": "1m"}).json()
    assert [_as_numbers(r) for r in rows] == [_as_numbers(r) for r in _derive(trades, "1m")]
    assert sum(Decimal(r[5]) for r in rows) == sum(Decimal(t["q"]) for t in trades)


def test_replay_on_a_simulator_without_a_recording_is_refused(sim: RunningSim) -> None:
    resp = sim.http.post("/sim/replay", json={})
    assert resp.status_code == 400
