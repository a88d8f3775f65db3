"""Reading recorded combined-stream files for replay."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from simulator.replay import read_frames

FIXTURE = Path(__file__).parents[1] / "fixtures" / "ws-combined-2021-07-22.txt"


def test_the_recorded_fixture_reads_as_1535_frames_with_relative_times() -> None:
    frames = read_frames(FIXTURE)
    assert len(frames) == 1535  # 1,536 lines: the header and 1,535 frames
    kinds = Counter(f.data["e"] for f in frames)
    assert kinds == {"depthUpdate": 764, "bookTicker": 613, "aggTrade": 91, "kline": 67}
    assert frames[0].offset_s == 0
    assert frames[0].stream == "sushiusdt@bookTicker"
    assert all(b.offset_s >= a.offset_s for a, b in itertools.pairwise(frames))
    assert 25 < frames[-1].offset_s < 40  # about 30 s of traffic


def test_lines_without_time_prefix_and_raw_frames(tmp_path: Path) -> None:
    path = tmp_path / "rec.txt"
    path.write_text(
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1}}\n'
        '1.5: {"e":"aggTrade","s":"BTCUSDT","a":1}\n'
        '{"result":null,"id":1}\n'
    )
    frames = read_frames(path)
    assert [f.stream for f in frames] == ["btcusdt@trade", "btcusdt@aggTrade"]
