"""Health reports: one record, one staleness rule, whichever process type wrote the report."""

from __future__ import annotations

import orjson

from core.schemas import HEALTH_STALE_MS, HealthReport
from ops.health import health_reports

NOW = 1_700_000_000_000


def test_a_report_round_trips_and_carries_its_time() -> None:
    rep = HealthReport("c1", NOW - 500, {"pending": 3, "queues": {"candles": 0}})
    assert orjson.loads(rep.encode()) == {"name": "c1", "at_ms": NOW - 500, "pending": 3,
                                          "queues": {"candles": 0}}  # fmt: skip
    back = HealthReport.decode(b"c1", rep.encode())
    assert (back.name, back.at_ms, back.age_ms(NOW)) == ("c1", NOW - 500, 500)
    assert not back.stale(NOW)


def test_the_feeders_updated_ms_is_its_time_too() -> None:
    rep = HealthReport.decode(b"feeder-1of1", orjson.dumps({"feeder": "f", "updated_ms": NOW}))
    assert rep.at_ms == NOW
    assert rep.fields["updated_ms"] == NOW  # passed on as written


def test_one_rule_makes_a_report_stale() -> None:
    def at(ms: int) -> HealthReport:
        return HealthReport.decode("p", orjson.dumps({"at_ms": ms}))

    assert not at(NOW - HEALTH_STALE_MS).stale(NOW)
    assert at(NOW - HEALTH_STALE_MS - 1).stale(NOW)
    assert at(NOW - 60_000).stale(NOW, stale_after_ms=120_000) is False
    timeless = HealthReport.decode("p", b'{"events": 9}')
    assert timeless.stale(NOW)
    assert timeless.age_ms(NOW) is None


def test_an_unreadable_report_is_kept_as_text_and_stale() -> None:
    for raw in (b"not json", b"[1, 2]"):
        rep = HealthReport.decode(b"x", raw)
        assert rep.fields == {"unreadable": raw.decode()}
        assert rep.stale(NOW)


def test_readers_add_age_and_staleness_to_the_fields() -> None:
    raw = {b"w1": orjson.dumps({"at_ms": NOW - 2_000, "clients": 4}), b"w2": b"{}"}
    assert health_reports(raw, NOW, HEALTH_STALE_MS) == {
        "w1": {"at_ms": NOW - 2_000, "clients": 4, "age_ms": 2_000, "stale": False},
        "w2": {"age_ms": None, "stale": True},
    }
    view = HealthReport.decode("w1", raw[b"w1"]).view(NOW, age=False)
    assert view == {"at_ms": NOW - 2_000, "clients": 4, "stale": False}  # /api/health's shape
