"""Run the whole system in one terminal: ``python -m demo`` (what ``make demo`` does).

1. Read the settings in demo mode: missing secrets are generated for this run.
2. Without ``REDIS_URL``, start an embedded redis-server on a free loopback port, its data in
   ``.demo/redis`` with the append-only file on: linked accounts and orders are user data and
   survive a restart of the demo. Market data is not kept: a demo run starts it afresh (the
   simulator's market starts afresh too), so every other key of the namespace is deleted.
   The generated secrets are kept in ``.demo/secrets.json`` (mode 0600) for the same reason: a
   new key-encryption key would leave the stored credentials unreadable.
3. Start every process type of the Procfile with honcho (prefixed, coloured logs), giving each
   the same REDIS_URL and secrets; the ``simulator`` type runs only when the market is ``sim``.
4. Ctrl-C or SIGTERM: honcho sends SIGTERM to every child's process group (SIGKILL after 30 s,
   Heroku's grace period), then the embedded Redis is stopped. Nothing is left running.

``python -m demo --cluster`` (``make demo-cluster``) runs the scaled-out layout instead
(docs/architecture.md, "Scaling out"): market data on a local Redis Cluster of 3 primaries and 3
replicas in ``.demo/cluster`` (started afresh; unless ``TP_MARKET_REDIS_URL`` is set), two
processes of every role but the simulator (feeders ``--shard K/2``, execution shards
``TP_EXECUTION_SHARDS=2``), and HAProxy on ``PORT`` in front of the two web processes (on
``PORT+1`` and ``PORT+2``), round robin without affinity.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path

import honcho.manager
import redis
from honcho.environ import parse_procfile

from binance.exchange_info import resolve_universe
from core.config import Settings, load_settings
from core.keys import Keys
from core.redis_clients import redacted
from demo.haproxy import HAProxy, HAProxyError
from demo.processes import DemoManager
from demo.redis_cluster import RedisCluster
from demo.redis_server import RedisServer, RedisServerError
from release.checks import CheckFailed, check_exchange
from simulator.instruments import load_exchange_info

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".demo"
KEPT = ("accounts", "orders")  # user data: the key families a demo restart keeps
# honcho SIGKILLs what has not stopped 5 s after its SIGTERM; give every process Heroku's 30 s,
# so that a worker finishes its tasks (--worker-shutdown-timeout 25000) on Ctrl-C too.
honcho.manager.KILL_WAIT = 30


def persisted_secrets(env: dict[str, str], path: Path = DATA / "secrets.json") -> dict[str, str]:
    """Return the demo's secrets: from ``env`` if set, else from ``path``, else new (saved)."""
    names = ("TP_JWT_KEYS", "TP_KEY_ENCRYPTION_KEY")
    if all(env.get(n) for n in names):
        return {}
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if not all(saved.get(n) for n in names):
        import base64

        saved = {
            "TP_JWT_KEYS": f"demo-{secrets.token_hex(4)}:{secrets.token_urlsafe(48)}",
            "TP_KEY_ENCRYPTION_KEY": "demo:"
            + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(saved, f)
    return {n: saved[n] for n in names if not env.get(n)}


def forget_market_data(redis_url: str, keys: Keys) -> int:
    """Delete every key of the namespace but the user data; return how many."""
    r = redis.Redis.from_url(redis_url)
    kept = tuple(f"{keys.namespace}:{family}:".encode() for family in KEPT)
    doomed = [k for k in r.scan_iter(match=keys.all_keys_pattern(), count=1000)
              if not k.startswith(kept)]  # fmt: skip
    for i in range(0, len(doomed), 500):
        r.delete(*doomed[i : i + 500])
    r.close()
    return len(doomed)


def process_types(procfile: Path, settings: Settings) -> dict[str, str]:
    """Return the Procfile's process types (name -> command) that this demo should run."""
    processes = dict(parse_procfile(procfile.read_text()).processes)
    processes.pop("release", None)  # Heroku's release phase is a one-off, not a service
    if settings.market.source != "sim":
        processes.pop("simulator", None)
    return processes


def formation(app_json: Path = ROOT / "app.json") -> dict[str, int]:
    """Return how many processes of each type the deployment runs (``app.json``'s formation)."""
    spec = json.loads(app_json.read_text()).get("formation", {})
    return {name: int(f.get("quantity", 1)) for name, f in spec.items()}


def replicas(processes: dict[str, str], port: int, counts: dict[str, int]
             ) -> dict[str, tuple[str, dict[str, str]]]:  # fmt: skip
    """Return the processes to run, ``counts[type]`` of a type (default 1): name -> (command, the
    environment it adds). One of a type keeps the type's name; several are ``type-K``, feeders
    and execution processes with their ``--shard K/N``, web processes with their own ``PORT``
    (``port + K``, behind the balancer on ``port``)."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for name, cmd in processes.items():
        n = counts.get(name, 1)
        if n <= 1:
            out[name] = (cmd, {})
            continue
        for k in range(1, n + 1):
            extra: dict[str, str] = {}
            if name == "feeder":
                line = f"{cmd} --shard {k}/{n}"
            elif name == "execution":
                line = cmd.replace("--name execution-1", f"--name execution-{k}")
                line += f" --shard {k}/{n}"
            else:
                line = cmd
                if name == "web":
                    extra["PORT"] = str(port + k)
            out[f"{name}-{k}"] = (line, extra)
    return out


def single_machine(processes: dict[str, str], port: int) -> dict[str, tuple[str, dict[str, str]]]:
    """The demo's processes: as many consumers and workers as the deployment's formation runs
    (their leases and queues share the work on one Redis), one of each type needing a shard
    layout or a balancer (feeder, execution, web: ``--cluster`` runs two)."""
    counts = {name: n for name, n in formation().items()
              if name not in ("feeder", "execution", "web", "simulator")}  # fmt: skip
    return replicas(processes, port, counts)


def _scale_out(
    settings: Settings, env: dict[str, str], child_env: dict[str, str], processes: dict[str, str]
) -> tuple[RedisCluster | None, HAProxy, dict[str, tuple[str, dict[str, str]]]]:
    """Start the cluster (unless TP_MARKET_REDIS_URL names one) and HAProxy; set the children's
    environment for them; return both and the processes to run."""
    cluster = None
    if not env.get("TP_MARKET_REDIS_URL"):
        folder = DATA / "cluster"
        shutil.rmtree(folder, ignore_errors=True)  # market data starts afresh; new ports too
        cluster = RedisCluster(folder)
        cluster.start()
        child_env["TP_MARKET_REDIS_URL"] = ",".join(f"redis://{s}" for s in cluster.seeds)
        child_env["TP_MARKET_REDIS_CLUSTER"] = "1"
    child_env["TP_EXECUTION_SHARDS"] = "2"
    # Every web process serves the balancer's origin (they listen on ports of their own).
    child_env.setdefault("TP_WEB_ORIGIN", settings.web.origin)
    child_env.setdefault("TP_WEB_ORIGINS", ",".join(settings.web.origins[1:]))
    commands = replicas(
        processes, settings.port, {name: 2 for name in processes if name != "simulator"}
    )
    balancer = HAProxy(DATA / "haproxy", [settings.port + 1, settings.port + 2],
                       port=settings.port)  # fmt: skip
    balancer.start()
    return cluster, balancer, commands


def banner(settings: Settings, redis_url: str, processes: dict[str, str], embedded: bool) -> str:
    """Return the few lines telling the user where to look first."""
    where = redacted(redis_url)  # a REDIS_URL's password stays out of the terminal
    lines = [f"Redis      {where}" + ("  (embedded, stops on exit)" if embedded else "")]
    if "simulator" in processes:
        lines.append(f"Market     the simulator: REST {settings.market.rest_url}")
    else:
        lines.append(f"Market     {settings.market.source}: REST {settings.market.rest_url}")
    if "web" in processes:
        origin = settings.web.origin
        lines.append(f"Web        {origin}/   the trader's page: chart, signals, trading")
        if settings.web.ops_addresses:
            lines.append(f"Ops        {origin}/ops   (sign in with an address of TP_OPS_ADDRESSES)")
        else:
            lines.append(f"Ops        {origin}/ops   needs TP_OPS_ADDRESSES=<your wallet address>")
        lines.append(f"Health     {origin}/api/health   (every process type, feeds, lag)")
    lines.append("Logs       JSON lines below; TP_LOG_LEVEL=DEBUG for routine ones")
    lines.append(f"Processes  {', '.join(processes) or '(none yet)'}   Ctrl-C stops everything")
    return "\n".join(lines)


def preflight(settings: Settings) -> str | None:
    """Return why the demo cannot start with these settings (checked before anything starts)."""
    if settings.market.source == "sim":  # the simulator serves the recorded exchangeInfo
        try:
            resolve_universe(settings.symbols, load_exchange_info())
        except ValueError as exc:
            return f"configuration error: TP_SYMBOLS: {exc}"
        return None
    try:
        check_exchange(settings)
    except CheckFailed as exc:
        return f"demo: cannot start: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cluster", action="store_true",
        help="the scaled-out layout: Redis Cluster, two of each process, HAProxy",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # Own Ctrl-C and SIGTERM from the first line: a signal before honcho takes over must stop
    # the demo cleanly (and stop Redis), not kill it half-started.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    env = dict(os.environ, TP_DEMO="1")
    env.update(persisted_secrets(env))
    settings = load_settings(env)
    problem = preflight(settings)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    processes = process_types(ROOT / "Procfile", settings)
    server: RedisServer | None = None
    cluster: RedisCluster | None = None
    balancer: HAProxy | None = None
    try:
        if settings.redis_url is None:
            server = RedisServer(DATA / "redis", appendonly=True)
            server.start()
            forget_market_data(server.url, Keys.of(settings))
        redis_url = server.url if server else settings.require_redis_url()
        # `python` in the Procfile must be this interpreter (the venv's), as on Heroku.
        path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        child_env = {**env, **settings.secret_env(), "REDIS_URL": redis_url, "PATH": path,
                     "PORT": str(settings.port), "TP_WEB_BIND": settings.web.bind,
                     "PYTHONUNBUFFERED": "1"}  # fmt: skip
        commands = single_machine(processes, settings.port)
        extra_lines: list[str] = []
        if args.cluster:
            cluster, balancer, commands = _scale_out(settings, env, child_env, processes)
            extra_lines = [
                f"Scaled     {', '.join(commands)}",
                f"Balancer   HAProxy on {balancer.url} -> web-1, web-2 (round robin)",
            ]
            if cluster is not None:
                extra_lines.insert(0, f"Market     Redis Cluster {', '.join(cluster.seeds)}")
        print(banner(settings, redis_url, processes, embedded=server is not None), flush=True)
        if extra_lines:
            print("\n".join(extra_lines), flush=True)
        manager = DemoManager()
        for name, (cmd, extra) in commands.items():
            manager.add_process(name, cmd, env={**child_env, **extra}, cwd=str(ROOT))
        if not processes:
            while not stop.wait(0.5):
                pass
        if stop.is_set():
            return 0
        manager.loop()  # its own handlers first, then the children; returns when all stopped
        # Stopped by Ctrl-C or SIGTERM (honcho's 130/143): a clean exit. Else a child failed.
        return 0 if manager.returncode in (None, 130, 143) else int(manager.returncode)
    except RedisServerError as exc:
        print(f"demo: cannot start the embedded Redis: {exc}", file=sys.stderr)
        return 1
    except HAProxyError as exc:
        print(f"demo: cannot start HAProxy: {exc}", file=sys.stderr)
        return 1
    finally:
        if balancer is not None:
            balancer.stop()
        if cluster is not None:
            cluster.stop()
        if server is not None:
            server.stop(save=True)


if __name__ == "__main__":
    sys.exit(main())
