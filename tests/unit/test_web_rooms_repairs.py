"""Repairs of candles older than a room keeps (issue 16) reach its clients (web/rooms.py)."""

from __future__ import annotations

from typing import Any

from tests.unit.test_web_rooms import Wire, join, registry
from web.rooms import LATE_BYTES, ROOM_KEYS, Client

ROOM = "c:BTC:1m"
M = 60_000


def candle(n: int, **kw: Any) -> dict[str, Any]:
    return {"open_time": n * M, "closed": True, "source": "trades", **kw}


def fill(reg: Any, upto: int) -> None:
    """Candles 0..upto, the last one open: the room keeps only the newest few."""
    for n in range(upto + 1):
        reg.update(ROOM, n * M, candle(n, closed=n < upto), at_ms=n)


def test_a_repaired_old_candle_reaches_a_connected_client_without_growing_the_room() -> None:
    reg, wire = registry(), Wire()
    join(reg, "a", ROOM)
    fill(reg, 10)
    wire.tick(reg, 100)
    kept = dict(reg.rooms[ROOM].state)
    reg.update(ROOM, 2 * M, candle(2, source="exchange", close="9"), at_ms=20)
    reg.update(ROOM, 3 * M, candle(3, closed=False), at_ms=21)  # an open one this old: stale
    reg.update(ROOM, 10 * M, candle(10, closed=False, close="5"), at_ms=22)
    ((_, msg),) = wire.tick(reg, 200)
    data = msg["rooms"][ROOM]["data"]
    assert [c["open_time"] for c in data] == [2 * M, 10 * M]  # ascending, the repair first
    assert data[0]["source"] == "exchange"
    assert "resync" not in msg
    assert reg.rooms[ROOM].state.keys() == kept.keys()  # passed on, not kept
    assert len(reg.rooms[ROOM].state) == ROOM_KEYS["c"]
    assert reg.late == 1
    assert wire.tick(reg, 300) == []  # passed once


def test_a_client_that_missed_the_delta_carrying_a_repair_is_told_to_resync() -> None:
    reg, wire = registry(backlog=2, slow_ms=10_000), Wire()
    join(reg, "slow", ROOM)
    join(reg, "fast", ROOM)
    fill(reg, 10)
    wire.tick(reg, 100)
    wire.queued["eslow"] = 3  # skipped this tick: it will get the whole state, not the delta
    reg.update(ROOM, 1 * M, candle(1, source="exchange"), at_ms=30)
    sent = dict(wire.tick(reg, 200))
    assert list(sent) == ["fast"]
    assert "resync" not in sent["fast"]
    reg.update(ROOM, 10 * M, candle(10, closed=False, close="2"), at_ms=35)
    assert [sid for sid, _ in wire.tick(reg, 250)] == ["fast"]  # two versions behind now
    wire.queued["eslow"] = 0
    sent = dict(wire.tick(reg, 300))
    assert sent["slow"]["resync"] == [ROOM]  # its state lacks the repair: subscribe again
    assert 1 * M not in [c["open_time"] for c in sent["slow"]["rooms"][ROOM]["data"]]
    reg.update(ROOM, 10 * M, candle(10, closed=False), at_ms=40)
    assert "resync" not in dict(wire.tick(reg, 400))["slow"]  # told once


def test_a_subscriber_whose_snapshot_was_being_read_when_a_repair_passed_resyncs() -> None:
    reg, wire = registry(), Wire()
    join(reg, "a", ROOM)
    fill(reg, 10)
    wire.tick(reg, 100)
    reg.connect(Client("early", "eearly"))
    assert reg.hold("early", ROOM) is not None  # its snapshot is read from here on
    reg.update(ROOM, 1 * M, candle(1, source="exchange"), at_ms=30)  # maybe after the read
    wire.tick(reg, 200)
    reg.release("early", ROOM)
    reg.connect(Client("late", "elate"))
    assert reg.hold("late", ROOM) is not None  # read after the repair passed: it has it
    reg.release("late", ROOM)
    reg.update(ROOM, 10 * M, candle(10, closed=False), at_ms=40)
    sent = dict(wire.tick(reg, 300))
    assert sent["early"]["resync"] == [ROOM]
    assert "resync" not in sent["late"]
    assert "resync" not in sent["a"]


def test_repairs_over_the_bound_are_dropped_and_every_member_resyncs() -> None:
    reg, wire = registry(), Wire()
    join(reg, "a", ROOM)
    join(reg, "b", ROOM)
    fill(reg, 2000)
    wire.tick(reg, 100)
    pad = "1" * 200
    for n in range(1000):  # one backfill of 1,000 old candles in one tick
        reg.update(ROOM, n * M, candle(n, source="exchange", volume=pad), at_ms=50)
    sent = dict(wire.tick(reg, 200))
    for sid in ("a", "b"):
        data = sent[sid]["rooms"][ROOM]["data"]
        assert 0 < len(data) < 1000
        assert sum(len(str(c)) for c in data) < 1.5 * LATE_BYTES
        assert sent[sid]["resync"] == [ROOM]
    assert reg.late == len(data)
    assert reg.late_dropped == 1000 - len(data)
    assert reg.rooms[ROOM].late == {}  # nothing held past the tick
    reg.update(ROOM, 2000 * M, candle(2000, closed=False), at_ms=60)
    assert all("resync" not in m for _, m in wire.tick(reg, 300))


def test_a_burst_of_repairs_into_a_new_room_reaches_its_clients() -> None:
    """Chaos finding: a web process just restarted has rooms holding fewer than ROOM_KEYS
    candles; a backfill's burst of old candles filled the room, then pushed each other out
    within one tick, and the clients never heard of the first ones (66 held candles stale)."""
    reg, wire = registry(), Wire()
    join(reg, "a", ROOM)
    reg.update(ROOM, 19 * M, candle(19, closed=False), at_ms=1)  # the first live candle
    wire.tick(reg, 50)
    burst = list(range(10))
    for n in burst:
        reg.update(ROOM, n * M, candle(n, source="exchange"), at_ms=n)
    reg.update(ROOM, 20 * M, candle(20, closed=False), at_ms=20)
    ((_, msg),) = wire.tick(reg, 100)
    got = [c["open_time"] for c in msg["rooms"][ROOM]["data"]]
    assert got == [n * M for n in [*burst, 20]], got  # every repair, ascending, then the live one
    assert "resync" not in msg
    assert len(reg.rooms[ROOM].state) == ROOM_KEYS["c"]


def test_a_client_behind_while_a_changed_candle_left_the_room_resyncs() -> None:
    reg, wire = registry(backlog=2, slow_ms=10_000), Wire()
    join(reg, "slow", ROOM)
    join(reg, "fast", ROOM)
    fill(reg, 10)
    wire.tick(reg, 100)
    wire.queued["eslow"] = 3  # skipped from here on
    reg.update(ROOM, 8 * M, candle(8, source="exchange"), at_ms=30)  # kept: still in the room
    wire.tick(reg, 200)
    for n in (11, 12, 13):  # new candles push candle 8 out of the room
        reg.update(ROOM, n * M, candle(n, closed=False), at_ms=40 + n)
        wire.tick(reg, 200 + n)
    assert 8 * M not in reg.rooms[ROOM].state
    wire.queued["eslow"] = 0
    sent = dict(wire.tick(reg, 400))
    assert sent["slow"]["resync"] == [ROOM]  # its whole state lacks candle 8's repair


def test_a_repair_reaches_the_clients_of_every_phase_without_a_resync() -> None:
    """With rounds, most clients get what changed since their last turn, not the delta the
    repair passed through: the room keeps the repairs of its last ``phases`` versions for them."""
    reg, wire = registry(phases=3), Wire()
    for sid in ("a", "b", "c"):  # phases 0, 1, 2
        join(reg, sid, ROOM)
    fill(reg, 10)
    assert len(wire.tick(reg, 0)) == 3  # round 0: each owed its first state (catch-up)
    wire.tick(reg, 10)
    wire.tick(reg, 20)
    reg.update(ROOM, 2 * M, candle(2, source="exchange", close="9"), at_ms=30)
    ((sid, msg),) = wire.tick(reg, 30)  # round 3, phase 0: the delta carrying the repair
    assert sid == "a"
    assert [c["open_time"] for c in msg["rooms"][ROOM]["data"]] == [2 * M]
    reg.update(ROOM, 10 * M, candle(10, closed=False, close="5"), at_ms=40)
    for at, want in ((40, "b"), (50, "c")):  # rounds 4, 5: phases 1 and 2, two versions behind
        ((sid, msg),) = wire.tick(reg, at)
        assert sid == want
        data = msg["rooms"][ROOM]["data"]
        assert [c["open_time"] for c in data] == [2 * M, 10 * M]  # the repair, then the change
        assert data[0]["close"] == "9"
        assert "resync" not in msg
    ((sid, msg),) = wire.tick(reg, 60)  # round 6, phase 0: it had the repair
    assert [c["open_time"] for c in msg["rooms"][ROOM]["data"]] == [10 * M]
    assert "resync" not in msg
    room = reg.rooms[ROOM]
    for n in range(3):  # three more versions: the repair's is dropped from the log
        reg.update(ROOM, 10 * M, candle(10, closed=False, close=str(n)), at_ms=70 + n)
        wire.tick(reg, 70 + n)
    assert room.late_log == []
    assert room.late_log_bytes == 0
