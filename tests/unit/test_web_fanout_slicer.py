"""The web process's pauses (web/fanout.py): the tick's slices, frozen survivors of collections."""

from __future__ import annotations

from web.fanout import Slicer


def test_the_tick_pauses_once_a_slice_of_work_has_passed() -> None:
    now = [0.0]
    waits: list[float] = []

    def wait() -> None:  # other greenlets run for 3 ms: not the tick's work
        waits.append(now[0])
        now[0] += 0.003

    slicer = Slicer(2.0, wait, clock=lambda: now[0])
    now[0] = 10.0  # what passed before the tick is not its work either
    slicer.start()
    for _ in range(10):  # clients taking 0.5 ms each: a pause after every 4th
        now[0] += 0.0005
        slicer()
    assert [round(t - 10.0, 4) for t in waits] == [0.002, 0.0070]
    assert slicer.pauses == 2
    assert round(slicer.paused_s, 4) == 0.006


def test_survivors_of_full_collections_are_frozen_except_every_so_often() -> None:
    from web.fanout import FreezeSurvivors

    now = [0.0]
    calls: list[str] = []
    freezer = FreezeSurvivors(
        600, freeze=lambda: calls.append("freeze"), unfreeze=lambda: calls.append("unfreeze"),
        clock=lambda: now[0],
    )  # fmt: skip
    freezer("start", {"generation": 2})
    freezer("stop", {"generation": 0})  # young collections change nothing
    freezer("stop", {"generation": 1})
    assert calls == []
    for t in (10.0, 300.0, 610.0, 700.0, 1200.0, 1220.0):
        now[0] = t
        freezer("stop", {"generation": 2})
    assert calls == ["freeze", "freeze", "unfreeze", "freeze", "freeze", "unfreeze"]
