"""``python -m ops``: the page's retry and delete from a terminal, run as an operator would.

The command runs as a real process against the suite's Redis; failed messages come from a real
Dramatiq worker (the probe of tests/e2e/test_ops.py), and the results, what Redis holds after and
the audit entries are compared with what the page's API does with the same input.
"""

# ruff: noqa: F811  # the fixtures of tests/e2e/test_ops.py, imported and used by name

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dramatiq
import orjson
import pytest
import redis

from core.config import Settings
from core.keys import Keys
from tests.e2e.test_ops import (  # noqa: F401
    QUEUE,
    Ops,
    Probe,
    app,
    audit,
    client,
    operator,
    ops,
    origin,
    probe,
    r,
    settings,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
WHO = f"cli:{getpass.getuser()}"


@pytest.fixture
def cli(redis_url: str, namespace: str) -> Any:
    env = {**os.environ, "REDIS_URL": redis_url, "TP_NAMESPACE": namespace, "TP_DEMO": "1",
           "TP_STREAM_SHARDS": "4", "TP_LOG_LEVEL": "WARNING"}  # fmt: skip

    def run(*args: str, status: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "ops", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == status, (args, done.stdout, done.stderr)
        return done.stdout

    return run


def rows(output: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_cli_lists_retries_and_deletes_failed_messages_like_the_page(
    cli: Any, ops: Ops, probe: Probe, r: redis.Redis, keys: Keys
) -> None:
    rid = probe.fail_one("a")
    listed = rows(cli("list", "failed", "--queue", QUEUE, "--json"))
    assert listed == ops.get("failed", queue=QUEUE)["failed"]  # the page's rows, the same
    assert "ValueError: probe a failed on purpose (attempt 2)" in cli("list", "failed")

    r.set(probe.mode, "ok")
    out = cli("retry", "failed", "--queue", QUEUE, rid)
    assert out.strip().endswith("failed retry: retried 1")
    assert wait_for("the probe to run", lambda: r.lrange(probe.ran, 0, -1)) == [b"a"]
    assert cli("retry", "failed", "--queue", QUEUE, rid, status=1).strip().endswith("missing 1")

    r.set(probe.mode, "fail")
    rid = probe.fail_one("b")
    cli("delete", "failed", "--queue", QUEUE, rid, status=2)  # no terminal, no --yes: refused
    assert rid in probe.failures()
    cli("delete", "failed", "--queue", QUEUE, rid, "--yes")
    assert probe.failures() == {}

    # The same audit records as the page's, by the unix user.
    entries = audit(r, keys)
    assert [(e["who"], e["action"], e["target"], e["results"]) for e in entries] == [
        (WHO, "failed.retry", QUEUE, '{"retried":1}'),
        (WHO, "failed.retry", QUEUE, '{"missing":1}'),
        (WHO, "failed.delete", QUEUE, '{"deleted":1}'),
    ]
    assert ops.get("audit")["audit"][0]["action"] == "failed.delete"  # newest first


def test_retry_all_matching_goes_past_one_batch_and_keeps_to_the_filter(
    cli: Any, ops: Ops, probe: Probe, r: redis.Redis, keys: Keys
) -> None:
    # A second actor on the probe's queue: its failures must stay where they are.
    def other_probe(tag: str) -> None:
        raise ValueError(tag)

    other = dramatiq.actor(other_probe, queue_name=QUEUE, broker=probe.broker, max_retries=0)
    for n in range(130):
        probe.actor.send_with_options(args=(f"m{n}",), max_retries=0)
    other.send("keep")
    wait_for("131 failures", lambda: len(probe.failures()) == 131, timeout_s=60)
    assert len(ops.get("failed", queue=QUEUE, limit="500")["failed"]) == 131

    r.set(probe.mode, "ok")
    out = cli("retry", "failed", "--all", "--queue", QUEUE, "--actor", "ops_probe", "--yes")
    assert out.strip().endswith("failed retry: retried 130")
    wait_for("every probe to run", lambda: r.llen(probe.ran) == 130, timeout_s=60)
    (left,) = ops.get("failed", queue=QUEUE)["failed"]
    assert (left["actor"], left["args"]) == ("other_probe", ["keep"])
    assert [orjson.loads(e["results"]) for e in audit(r, keys)] == [{"retried": 100},
                                                                    {"retried": 30}]  # fmt: skip
    cli("delete", "failed", "--all", "--yes")  # every queue, every actor
    assert probe.failures() == {}


def test_the_page_sweeps_every_matching_failure_in_batches(
    ops: Ops, probe: Probe, r: redis.Redis
) -> None:
    for n in range(120):
        probe.actor.send_with_options(args=(f"p{n}",), max_retries=0)
    wait_for("120 failures", lambda: len(probe.failures()) == 120, timeout_s=60)
    probe.stop()  # retried messages stay in the queue, where they can be counted
    before, cursor, tally = max(probe.failures().values()), None, 0
    calls = 0
    while True:
        body = {"queue": QUEUE, "actor": "ops_probe", "before": int(before), "cursor": cursor}
        reply = ops.post("failed/retry-matching", body)
        tally += reply["counts"].get("retried", 0)
        calls += 1
        cursor = reply["next"]
        if cursor is None:
            break
    assert (tally, calls) == (120, 2)  # 100 and a cursor, then 20 and the end
    assert r.llen(probe.queue) == 120
    assert probe.failures() == {}


def test_cli_puts_back_and_deletes_dead_stream_entries_like_the_page(
    cli: Any, ops: Ops, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    trade = orjson.dumps(["trade", 1, "BTCUSDT", 7])
    gap = orjson.dumps(["gap", 1, "ETHUSDT"])
    first = r.xadd(keys.dead(0), {"stream": keys.trades(0), "id": "9-0", "error": "SchemaError",
                                  "d": trade}).decode()  # fmt: skip
    gaps = [r.xadd(keys.dead(1), {"stream": keys.gaps(1), "id": f"{n}-0", "error": "e",
                                  "d": gap}).decode() for n in range(105)]  # fmt: skip
    kept = r.xadd(keys.dead(1), {"stream": keys.trades(1), "id": "1-0", "error": "e",
                                 "d": trade}).decode()  # fmt: skip

    listed = rows(cli("list", "dead", "--shard", "0", "--json"))
    assert listed == ops.get("dead", shard="0")["dead"]
    assert "SchemaError" in cli("list", "dead", "--shard", "0")

    assert cli("retry", "dead", "--shard", "0", first).strip().endswith("retried 1")
    assert [fields for _, fields in r.xrange(keys.trades(0))] == [{b"d": trade}]
    assert r.xlen(keys.dead(0)) == 0

    out = cli("retry", "dead", "--all", "--shard", "1", "--stream", "gaps", "--yes")
    assert out.strip().endswith("dead retry: retried 105")
    assert r.xlen(keys.gaps(1)) == 105
    assert [eid.decode() for eid, _ in r.xrange(keys.dead(1))] == [kept]
    assert len(gaps) == 105
    cli("delete", "dead", "--all", "--yes")
    assert r.xlen(keys.dead(1)) == 0
    actions = [(e["who"], e["action"], e["target"], orjson.loads(e["results"]))
               for e in audit(r, keys)]  # fmt: skip
    assert actions == [
        (WHO, "dead.retry", "shard 0", {"retried": 1}),
        (WHO, "dead.retry", "shard 1", {"retried": 100}),
        (WHO, "dead.retry", "shard 1", {"retried": 5}),
        (WHO, "dead.delete", "shard 1", {"deleted": 1}),
    ]


def test_cli_refuses_bad_input(cli: Any, r: redis.Redis, keys: Keys) -> None:
    for args in (["retry", "failed", "--queue", QUEUE],  # neither ids nor --all
                 ["retry", "failed", "--queue", f"{QUEUE}.XQ", "x"],
                 ["retry", "failed", "x"],  # ids need their queue
                 ["retry", "dead", "--shard", "9", "1-0"],
                 ["retry", "dead", "--shard", "0", "not-an-id"],
                 ["list", "failed", "--limit", "0"]):  # fmt: skip
        cli(*args, status=2)
    assert not r.exists(keys.ops_audit())
