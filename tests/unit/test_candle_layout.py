"""The candle's wire layout, which the Lua scripts, the signals actor and the web tier rely on.

A final candle is recognised by the last bytes of its member (``"exchange"]``), an open one by
``false,"<source>"]``: ``closed`` and ``source`` must stay the candle's last two fields.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import orjson
import pytest

from core.schemas import (
    CANDLE_AT,
    CANDLE_OPEN_ENDINGS,
    CANDLE_SOURCES,
    Candle,
    candle_ending,
    encode,
    wire_length,
)
from tasks.candle_store import _ENDINGS
from web.market import candle_json

D = Decimal


def _candle(*, closed: bool, source: str) -> Candle:
    return Candle("BTCUSDT", "1m", 1_700_000_040_000, 1_700_000_099_999, D("1.5"), D("2"),
                  D("1"), D("1.75"), D("3"), D("4.5"), 7, D("1"), D("1.5"), 10, 16, closed,
                  source)  # fmt: skip


def test_closed_and_source_are_the_last_two_fields() -> None:
    names = [f.name for f in dataclasses.fields(Candle)]
    assert names[-2:] == ["closed", "source"]
    assert wire_length(Candle) == len(names) + 2 == 19
    assert CANDLE_AT["closed"] == 17
    assert CANDLE_AT["source"] == 18
    assert CANDLE_AT["symbol"] == 2  # after kind and version


@pytest.mark.parametrize("source", CANDLE_SOURCES)
@pytest.mark.parametrize("closed", [True, False])
def test_a_member_ends_with_its_source_and_only_its_own(closed: bool, source: str) -> None:
    member = encode(_candle(closed=closed, source=source))
    assert member.endswith(candle_ending(source, closed=closed))
    assert member.endswith(candle_ending(source))
    others = [s for s in CANDLE_SOURCES if s != source]
    assert not any(member.endswith(candle_ending(s)) for s in others)
    assert member.endswith(CANDLE_OPEN_ENDINGS) is not closed


def test_every_position_reads_the_field_of_that_name() -> None:
    c = _candle(closed=True, source="partial")
    wire = orjson.loads(encode(c))
    for name, at in CANDLE_AT.items():
        value = getattr(c, name)
        assert wire[at] == (format(value, "f") if isinstance(value, Decimal) else value), name


def test_the_scripts_and_the_web_read_the_layout_from_the_schema() -> None:
    for source in CANDLE_SOURCES:
        assert f"'{candle_ending(source).decode()}'" in _ENDINGS
    got = candle_json(orjson.loads(encode(_candle(closed=False, source="exchange"))))
    assert got is not None
    assert (got["closed"], got["source"], got["open_time"]) == (
        False,
        "exchange",
        1_700_000_040_000,
    )
