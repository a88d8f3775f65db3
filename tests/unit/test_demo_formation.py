"""What ``make demo`` runs: the deployment's formation on one machine (demo/__main__.py)."""

from __future__ import annotations

import json
from pathlib import Path

from honcho.environ import parse_procfile

from demo.__main__ import ROOT, formation, replicas, single_machine

PROCESSES = dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def test_the_demo_runs_as_many_consumers_as_the_deployment_and_one_of_each_sharded_type() -> None:
    deployed = formation()
    assert deployed["consumer"] == 2  # app.json: two consumers split the candle shards
    commands = single_machine(PROCESSES, 8000)
    consumers = [name for name in commands if name.startswith("consumer")]
    assert consumers == ["consumer-1", "consumer-2"]
    assert {commands[n][0] for n in consumers} == {PROCESSES["consumer"]}
    # One feeder, execution and web process: several need shards or a balancer (--cluster).
    for name in ("feeder", "execution", "web"):
        assert commands[name] == (PROCESSES[name], {})


def test_replicas_give_each_copy_its_shard_and_port(tmp_path: Path) -> None:
    procs = {"feeder": "python -m feeds", "execution": "python -m execution --name execution-1",
             "web": "gunicorn app", "simulator": "python -m simulator"}  # fmt: skip
    out = replicas(procs, 5000, {"feeder": 3, "execution": 2, "web": 2})
    assert out["feeder-3"] == ("python -m feeds --shard 3/3", {})
    assert out["execution-2"] == ("python -m execution --name execution-2 --shard 2/2", {})
    assert out["web-1"] == ("gunicorn app", {"PORT": "5001"})
    assert out["simulator"] == ("python -m simulator", {})
    app = tmp_path / "app.json"
    app.write_text(json.dumps({"formation": {"web": {"quantity": 3}, "worker": {}}}))
    assert formation(app) == {"web": 3, "worker": 1}
