"""The fan-out's coalescing and per-client bounds (web/rooms.py), without sockets."""

from __future__ import annotations

from typing import Any

import orjson

from web.rooms import ROOM_KEYS, Client, Registry


def registry(**kw: int) -> Registry:
    return Registry(**{"max_subscriptions": 5, "backlog": 2, "slow_ms": 1000, **kw})


class Wire:
    """Collects what a tick sends; ``queued`` says how many packets each client has waiting."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.queued: dict[str, int] = {}

    def send(self, client: Client, message: bytes) -> bool:
        assert message.startswith(b'2["md",')
        event, payload = orjson.loads(message[1:])
        assert event == "md"
        self.sent.append((client.sid, payload))
        return False

    def tick(self, reg: Registry, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        self.sent = []
        reg.tick(now_ms, lambda eio: self.queued.get(eio, 0), self.send)
        return self.sent


def join(reg: Registry, sid: str, *rooms: str) -> None:
    reg.connect(Client(sid, "e" + sid))
    for name in rooms:
        assert reg.hold(sid, name) is not None
        reg.release(sid, name)


def test_a_tick_sends_each_client_one_message_with_the_latest_value_per_key() -> None:
    reg, wire = registry(), Wire()
    join(reg, "a", "c:BTC:1m", "b:BTC")
    join(reg, "b", "c:BTC:1m")
    for trades in range(1, 51):  # 50 updates of the open candle within one tick
        reg.update("c:BTC:1m", 60_000, {"open_time": 60_000, "trades": trades}, at_ms=trades)
    reg.update("b:BTC", 0, {"bid": "1"}, at_ms=7)
    reg.update("c:ETH:1m", 60_000, {"x": 1}, at_ms=8)  # nobody's room: ignored
    sent = dict(wire.tick(reg, 1000))
    assert sent["a"] == {"t": 1000, "rooms": {
        "c:BTC:1m": {"at": 50, "data": [{"open_time": 60_000, "trades": 50}]},
        "b:BTC": {"at": 7, "data": {"bid": "1"}}}}  # fmt: skip
    assert sent["b"]["rooms"] == {"c:BTC:1m": sent["a"]["rooms"]["c:BTC:1m"]}
    assert "c:ETH:1m" not in reg.rooms
    assert wire.tick(reg, 1100) == []  # nothing changed: nothing sent


def test_a_room_keeps_only_its_newest_keys_however_many_updates_arrive() -> None:
    reg, wire = registry(), Wire()
    join(reg, "a", "c:BTC:1s", "s:BTC:1s")
    for t in range(100_000):
        reg.update("c:BTC:1s", t * 1000, {"open_time": t * 1000}, at_ms=t)
        reg.update("s:BTC:1s", (t, "rsi"), {"open_time": t}, at_ms=t)
    assert len(reg.rooms["c:BTC:1s"].state) == ROOM_KEYS["c"]
    assert len(reg.rooms["s:BTC:1s"].state) == ROOM_KEYS["s"]
    reg.update("c:BTC:1s", 5, {"open_time": 5}, at_ms=1)  # older than every kept candle: dropped
    rooms = dict(wire.tick(reg, 1))["a"]["rooms"]
    opens = [c["open_time"] for c in rooms["c:BTC:1s"]["data"]]
    assert opens == [t * 1000 for t in range(100_000 - ROOM_KEYS["c"], 100_000)]


def test_a_client_over_its_backlog_is_skipped_then_gets_all_that_changed_meanwhile() -> None:
    reg, wire = registry(backlog=2, slow_ms=1000), Wire()
    join(reg, "slow", "c:BTC:1m")
    join(reg, "fast", "c:BTC:1m")
    reg.update("c:BTC:1m", 0, {"open_time": 0, "v": 1}, at_ms=1)
    wire.tick(reg, 0)
    wire.queued["eslow"] = 3  # its transport queue is over the bound
    for i, t in enumerate((100, 200, 300)):
        reg.update("c:BTC:1m", 60_000 * (i + 1), {"open_time": 60_000 * (i + 1)}, at_ms=t)
        assert [sid for sid, _ in wire.tick(reg, t)] == ["fast"]  # skipped, never queued more
    wire.queued["eslow"] = 0
    sent = dict(wire.tick(reg, 400))  # nothing new this tick, but it is owed the changes
    data = sent["slow"]["rooms"]["c:BTC:1m"]["data"]
    assert [c["open_time"] for c in data] == [60_000, 120_000, 180_000]  # it had candle 0
    assert "fast" not in sent  # the up-to-date client is not sent anything twice


def test_a_client_behind_for_longer_than_the_limit_is_reported_slow() -> None:
    reg, wire = registry(backlog=1, slow_ms=1000), Wire()
    join(reg, "a", "b:BTC")
    wire.queued["ea"] = 5
    slow_at = []
    for t in range(0, 3000, 100):
        reg.update("b:BTC", 0, {"bid": str(t)}, at_ms=t)
        stats = reg.tick(t, lambda eio: wire.queued.get(eio, 0), wire.send)
        if stats.slow:
            slow_at.append(t)
    assert slow_at[0] == 1000  # first skipped at 0, reported once behind for 1 s
    assert wire.sent == []


def test_a_subscription_is_held_until_its_snapshot_is_sent() -> None:
    reg, wire = registry(), Wire()
    reg.connect(Client("a", "ea"))
    assert reg.hold("a", "c:BTC:1m") is not None
    reg.update("c:BTC:1m", 0, {"open_time": 0}, at_ms=1)
    assert wire.tick(reg, 100) == []  # the snapshot is still being read
    reg.release("a", "c:BTC:1m")
    sent = wire.tick(reg, 200)  # no new update, but the room moved on since the hold
    assert sent == [("a", {"t": 200, "rooms": {"c:BTC:1m": {"at": 1, "data": [{"open_time": 0}]}}})]


def test_subscriptions_are_limited_and_rooms_die_with_their_last_member() -> None:
    reg = registry(max_subscriptions=2)
    reg.connect(Client("a", "ea"))
    assert reg.hold("a", "b:A") is not None
    assert reg.hold("a", "b:B") is not None
    assert reg.hold("a", "b:C") is None  # over the limit
    assert reg.hold("a", "b:A") is not None  # the same room again is not a new subscription
    assert reg.leave("a", "b:A")
    assert not reg.leave("a", "b:A")
    assert set(reg.rooms) == {"b:B"}
    reg.disconnect("a")
    assert reg.rooms == {}
    assert reg.clients == {}


def test_a_tick_pauses_between_clients_and_takes_in_what_changed_meanwhile() -> None:
    reg, wire = registry(), Wire()
    for sid in ("a", "b", "c"):
        join(reg, sid, "c:BTC:1m")
    reg.update("c:BTC:1m", 0, {"open_time": 0}, at_ms=1)
    pauses: list[int] = []

    def pause() -> None:  # other greenlets run here: one client leaves, another subscribes
        pauses.append(len(wire.sent))
        if len(pauses) == 1:
            gone = next(sid for sid in ("a", "b", "c") if sid != wire.sent[0][0])
            reg.disconnect(gone)
            reg.connect(Client("new", "enew"))
            assert reg.hold("new", "c:BTC:1m") is not None
            reg.release("new", "c:BTC:1m")  # its snapshot was queued: live data may follow

    wire.sent = []
    reg.tick(100, lambda eio: 0, wire.send, pause)
    assert pauses == [1, 2]  # after each client sent
    assert len(wire.sent) == 2  # the one that left is not sent to
    assert "new" not in dict(wire.sent)  # not a target when the tick began
    sent = dict(wire.tick(reg, 200))  # nothing changed since, but it is owed the room
    assert sent == {"new": {"t": 200, "rooms": {"c:BTC:1m": {"at": 1, "data": [{"open_time": 0}]}}}}


def test_clients_are_spread_over_phases_each_sent_once_per_cycle_all_it_lacks() -> None:
    """With 2 phases, round r sends to the clients of phase r % 2: each client at most once per 2
    rounds, with everything that changed since its last message."""
    reg, wire = registry(phases=2), Wire()
    for sid in ("a", "b", "c"):  # phases 0, 1, 0
        join(reg, sid, "c:BTC:1m")
    assert [reg.clients[s].phase for s in ("a", "b", "c")] == [0, 1, 0]
    assert wire.tick(reg, 0) == []
    assert wire.tick(reg, 5) == []
    reg.update("c:BTC:1m", 0, {"open_time": 0, "v": 1}, at_ms=1)
    assert sorted(sid for sid, _ in wire.tick(reg, 10)) == ["a", "c"]  # round 2: phase 0
    reg.update("c:BTC:1m", 60_000, {"open_time": 60_000, "v": 1}, at_ms=11)
    sent = dict(wire.tick(reg, 20))  # round 3: phase 1 has seen nothing: both candles
    assert list(sent) == ["b"]
    assert [c["open_time"] for c in sent["b"]["rooms"]["c:BTC:1m"]["data"]] == [0, 60_000]
    reg.update("c:BTC:1m", 60_000, {"open_time": 60_000, "v": 2}, at_ms=21)
    sent = dict(wire.tick(reg, 30))  # round 4: phase 0 saw version 1: the changed candle only
    assert sorted(sent) == ["a", "c"]
    assert sent["a"]["rooms"]["c:BTC:1m"] == {"at": 21, "data": [{"open_time": 60_000, "v": 2}]}
    sent = dict(wire.tick(reg, 40))  # round 5: phase 1 saw version 2: the candle's last value
    assert sent == {"b": {"t": 40, "rooms": {"c:BTC:1m": {
        "at": 21, "data": [{"open_time": 60_000, "v": 2}]}}}}  # fmt: skip
    assert wire.tick(reg, 50) == []
    assert wire.tick(reg, 60) == []


def test_each_message_is_stamped_when_it_is_built() -> None:
    reg, wire = registry(), Wire()
    join(reg, "a", "b:BTC")
    join(reg, "b", "b:BTC")
    reg.update("b:BTC", 0, {"bid": "1"}, at_ms=5)
    stamps = iter((101, 102))
    reg.tick(100, lambda eio: 0, wire.send, clock=lambda: next(stamps))
    assert sorted(payload["t"] for _, payload in wire.sent) == [101, 102]
