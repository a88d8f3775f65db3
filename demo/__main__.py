"""Run the whole system in one terminal: ``python -m demo`` (what ``make demo`` does).

1. Read the settings in demo mode: missing secrets are generated for this run.
2. Without ``REDIS_URL``, start an embedded redis-server on a free loopback port.
3. Start every process type of the Procfile with honcho (prefixed, coloured logs), giving each
   the same REDIS_URL and secrets; the ``simulator`` type runs only when the market is ``sim``.
4. Ctrl-C or SIGTERM: honcho sends SIGTERM to every child's process group (SIGKILL after 5 s),
   then the embedded Redis is stopped. Nothing is left running.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from honcho.environ import parse_procfile
from honcho.manager import Manager

from core.config import Settings, load_settings
from core.keys import Keys
from demo.redis_server import RedisServer, RedisServerError

ROOT = Path(__file__).resolve().parent.parent


def process_types(procfile: Path, settings: Settings) -> dict[str, str]:
    """Return the Procfile's process types (name -> command) that this demo should run."""
    processes = dict(parse_procfile(procfile.read_text()).processes)
    processes.pop("release", None)  # Heroku's release phase is a one-off, not a service
    if settings.market.source != "sim":
        processes.pop("simulator", None)
    return processes


def banner(settings: Settings, redis_url: str, processes: dict[str, str], embedded: bool) -> str:
    """Return the lines telling the user where to look."""
    lines = [f"Redis      {redis_url}" + ("  (embedded, stops on exit)" if embedded else "")]
    if "simulator" in processes:
        lines.append(
            f"Simulator  REST {settings.market.rest_url}  websocket {settings.market.ws_url}"
        )
    else:
        lines.append(f"Market     {settings.market.source}: REST {settings.market.rest_url}")
    if "feeder" in processes:
        keys = Keys(settings.namespace, settings.stream_shards)
        lines.append(f"Feed       redis-cli -u {redis_url} HGET {keys.feed_health()} feeder-1of1")
        lines.append(f"           redis-cli -u {redis_url} XREVRANGE {keys.trades(0)} + - COUNT 5")
    if "worker" in processes:
        keys = Keys(settings.namespace, settings.stream_shards)
        sym = "BTCUSDT"
        lines.append(f"Candles    redis-cli -u {redis_url} ZRANGE {keys.candles(sym, '1m')} -3 -1")
        lines.append(
            f"           redis-cli -u {redis_url} HGETALL {keys.candle_metrics(keys.shard_of(sym))}"
        )
        lines.append(f"Signals    redis-cli -u {redis_url} HGETALL {keys.signals(sym, '1m')}")
        events = keys.signal_events(keys.shard_of(sym))
        lines.append(f"           redis-cli -u {redis_url} XREVRANGE {events} + - COUNT 5")
    if "web" in processes:
        lines.append(f"Web        {settings.web.origin}/   (ops page: {settings.web.origin}/ops)")
    lines.append(f"Processes  {', '.join(processes) or '(none yet)'}   Ctrl-C stops everything")
    return "\n".join(lines)


def main() -> int:
    # Own Ctrl-C and SIGTERM from the first line: a signal before honcho takes over must stop
    # the demo cleanly (and stop Redis), not kill it half-started.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    env = dict(os.environ, TP_DEMO="1")
    settings = load_settings(env)
    processes = process_types(ROOT / "Procfile", settings)
    server: RedisServer | None = None
    with tempfile.TemporaryDirectory(prefix="tp-demo-redis-") as tmp:
        try:
            if settings.redis_url is None:
                server = RedisServer(Path(tmp))
                server.start()
            redis_url = server.url if server else settings.require_redis_url()
            # `python` in the Procfile must be this interpreter (the venv's), as on Heroku.
            path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
            child_env = {**env, **settings.secret_env(), "REDIS_URL": redis_url, "PATH": path,
                         "PORT": str(settings.port), "PYTHONUNBUFFERED": "1"}  # fmt: skip
            print(banner(settings, redis_url, processes, embedded=server is not None), flush=True)
            manager = Manager()
            for name, cmd in processes.items():
                manager.add_process(name, cmd, env=child_env, cwd=str(ROOT))
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
        finally:
            if server is not None:
                server.stop(save=False)


if __name__ == "__main__":
    sys.exit(main())
