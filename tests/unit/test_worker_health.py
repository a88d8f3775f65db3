"""The worker's health report (tasks/health.py): how long messages waited in the queue and ran,
per actor and report period: the queue's and the build's share of the latency budget."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.broker import MessageProxy

from core.clock import now_ms
from tasks.health import WorkerHealth


def message(actor: str, sent_ms_ago: int, **options: object) -> MessageProxy:
    msg = dramatiq.Message(
        queue_name="candles", actor_name=actor, args=(), kwargs={}, options=dict(options),
        message_timestamp=now_ms() - sent_ms_ago,
    )  # fmt: skip
    return MessageProxy(msg)


def test_a_report_gives_each_actors_queue_wait_and_run_time_then_starts_afresh() -> None:
    health = WorkerHealth("unused")
    broker = dramatiq.get_broker()
    for ago in [*range(1, 100), 400]:  # 99 messages that waited ~1..99 ms, one 400 ms
        m = message("build_candles", ago)
        health.before_process_message(broker, m)
        health.after_process_message(broker, m)
    retry = message("build_candles", 60_000, retries=1)  # waited its back-off: not queue time
    health.before_process_message(broker, retry)
    time.sleep(0.02)
    health.after_process_message(broker, retry)

    actor = health.report()["actors"]["build_candles"]
    assert actor["processed"] == 101
    p50, p99, most = actor["wait_ms"]
    assert 45 <= p50 <= 60
    assert 95 <= p99 <= 110
    assert 395 <= most < 1_000  # not the retry's 60 s
    assert actor["run_ms"][0] < 20 <= actor["run_ms"][2] == actor["ms_max"]  # the retry: 20 ms

    again = health.report()["actors"]["build_candles"]  # a new period: nothing ran in it
    assert again["processed"] == 101
    assert "wait_ms" not in again
    assert "run_ms" not in again
