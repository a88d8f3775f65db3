"""`make demo`'s runner: starts Redis and every process, and leaves nothing behind on Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from core.timeframes import SUPPORTED

ROOT = Path(__file__).resolve().parents[2]
HONCHO_LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+)\s+\| (.*)$")
# Every demo here shares fixed things: the simulator's ports (8765, 8766: the Procfile's line) and
# the .demo folder (its Redis data, its secrets). Under xdist this file's tests run one at a time,
# on one worker (tests/conftest.py GROUPS).


def start_demo(
    env: dict[str, str], output: list[str] | None = None, *args: str, last: str = "Processes"
) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the banner ends with the Processes line (Balancer: --cluster)
        lines.append(line)
        if line.startswith(last):
            break
    # Keep reading: a full pipe would block every process writing its log.
    sink = output if output is not None else []
    threading.Thread(target=lambda: sink.extend(proc.stdout or ()), daemon=True).start()
    return proc, lines


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TP_") and k != "REDIS_URL"}
    return {**env, **extra}


def test_ctrl_c_stops_every_child_and_the_embedded_redis() -> None:
    from tests.e2e.webstack import free_port

    port = free_port()
    output: list[str] = []
    proc, banner = start_demo(clean_env(PORT=str(port)), output)
    try:
        assert any(line.startswith(f"Web        http://localhost:{port}/") for line in banner)
        url = re.search(r"redis://\S+", banner[0])
        assert url, banner
        client = redis.Redis.from_url(url.group(0))
        assert client.ping()  # the embedded Redis answers
        children = wait_for_children(
            proc,
            (
                "redis-server",
                "-m simulator",
                "-m feeds",
                "-m workers.consumer",
                "-m tasks worker",
                "-m tasks signals",
                "-m execution",
                "gunicorn",
            ),
        )
        # As many consumers as the deployment's formation (app.json): they split the shards.
        deadline = time.monotonic() + 60
        while not {"consumer-1", "consumer-2"} <= set(
            re.findall(r"\| (\S+) started", "".join(output))
        ):
            assert time.monotonic() < deadline, output[-20:]
            time.sleep(0.5)
        while not any(client.scan_iter(match="tp:{s*}:candles:*:1m", count=1000)):
            assert time.monotonic() < deadline, "the demo built no candle within 60 s"
            time.sleep(0.5)
        # The web page and its API answer, with the universe the pipeline follows.
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        # The symbol list comes from the consumer's exchangeInfo, within seconds of the start.
        deadline = time.monotonic() + 15
        while True:
            symbols = httpx.get(f"http://127.0.0.1:{port}/api/symbols", timeout=10).json()
            if "BTCUSDT" in symbols["symbols"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "BTCUSDT" in symbols["symbols"], symbols
        # Looked at again now that the web answers: honcho starts each command under `sh -c`, so
        # "gunicorn" was seen in the shell's command line, maybe before gunicorn itself started.
        children = psutil.Process(proc.pid).children(recursive=True)
        # Reachable from this machine only: the web port listens on loopback, nowhere else.
        listening = {c.laddr for child in children if "gunicorn" in " ".join(child.cmdline())
                     for c in child.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}  # fmt: skip
        assert {a.ip for a in listening} == {"127.0.0.1"}, listening
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
        # Every line every process logged is one JSON object (honcho prefixes time and name).
        time.sleep(0.5)  # the reader thread drains the pipe
        logged = [m.groups() for m in map(HONCHO_LINE.match, output) if m]
        assert {name for name, _ in logged} >= {"simulator", "feeder", "worker", "web"}, output
        for name, line in logged:
            if name != "system":  # honcho's own lines ("web started (pid=...)")
                assert line.startswith("{"), line
                # One of several of a type is named "<type>-K" (two consumers: consumer-1, -2).
                assert json.loads(line)["process_type"] == re.sub(r"-\d+$", "", name), line
        assert not any("Killing worker process" in line for line in output)
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        kill_tree(proc)


def wait_for_children(proc: subprocess.Popen[str], wanted: tuple[str, ...]) -> list[psutil.Process]:
    """Return the demo's descendants once one running each of ``wanted`` exists."""
    lines: list[str] = []
    for _ in range(100):
        children = psutil.Process(proc.pid).children(recursive=True)
        lines = []
        for child in children:
            with contextlib.suppress(psutil.Error):  # a child may exit while we look
                lines.append(" ".join(child.cmdline()))
        if all(any(w in line for line in lines) for w in wanted):
            return children
        time.sleep(0.2)
    raise AssertionError(f"not every process started: {lines}")


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """Leave nothing behind, even when the test failed half-way."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
    proc.kill()
    proc.wait()


def test_with_redis_url_set_the_demo_uses_that_server(redis_url: str) -> None:
    proc, banner = start_demo(clean_env(REDIS_URL=redis_url))
    try:
        assert banner[0].split()[1] == redis_url
        assert "embedded" not in banner[0]
        children = wait_for_children(proc, ("-m simulator", "-m feeds"))
        assert not any("redis-server" in " ".join(c.cmdline()) for c in children)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        kill_tree(proc)
    assert redis.Redis.from_url(redis_url).ping()  # someone else's server is left running


def test_a_bad_setting_stops_the_demo_with_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "demo"], cwd=ROOT, env=clean_env(TP_TIMEFRAMES="1m,2m"),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "configuration error: TP_TIMEFRAMES: unsupported timeframe '2m' (supported: "
        + ", ".join(SUPPORTED)
        + ")"
    ]


def test_a_symbol_the_exchange_does_not_trade_stops_the_demo_before_anything_starts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "demo"], cwd=ROOT, env=clean_env(TP_SYMBOLS="BTCUSDT,NOPEUSDT"),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stdout == ""  # no banner: nothing was started
    assert out.stderr.strip().splitlines() == [
        "configuration error: TP_SYMBOLS: not trading perpetuals on this exchange: NOPEUSDT"
    ]


def test_the_banner_never_shows_a_redis_password() -> None:
    from core.config import Settings
    from demo.__main__ import banner

    settings = Settings.from_env({"TP_DEMO": "1"})
    text = banner(settings, "rediss://:hunter2-secret@redis.example:6380/0", {"web": ""}, False)
    assert text.splitlines()[0] == "Redis      rediss://redis.example:6380/0"
    assert "hunter2" not in text


def test_demo_cluster_runs_two_of_each_on_a_cluster_behind_haproxy_and_stops_cleanly() -> None:
    """``make demo-cluster``: a Redis Cluster, two processes of every role, HAProxy in front of
    the two web processes; the page's API answers through it from both; Ctrl-C stops it all."""
    from tests.e2e.webstack import free_port

    port = free_port()
    while any(_taken(p) for p in (port + 1, port + 2)):
        port = free_port()
    output: list[str] = []
    proc, banner = start_demo(clean_env(PORT=str(port)), output, "--cluster", last="Balancer")
    try:
        assert any(line.startswith("Market     Redis Cluster") for line in banner), banner
        children = wait_for_children(proc, ("[cluster]", "haproxy", "-m feeds --shard 2/2"))
        assert sum("[cluster]" in " ".join(c.cmdline()) for c in children) == 6
        names = {f"{role}-{k}" for role in ("feeder", "consumer", "worker", "signals", "execution",
                                            "web") for k in (1, 2)}  # fmt: skip
        deadline = time.monotonic() + 30
        while not names <= set(re.findall(r"\| (\S+) started", "".join(output))):
            assert time.monotonic() < deadline, output[-20:]
            time.sleep(0.5)
        # Candles built on the cluster, served through HAProxy by both web processes.
        served: set[str] = set()
        deadline = time.monotonic() + 90
        while len(served) < 2:
            assert time.monotonic() < deadline, ("no candles from both web processes", served)
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://127.0.0.1:{port}/api/candles",
                              params={"symbol": "BTCUSDT", "timeframe": "1m", "limit": 2},
                              timeout=10)  # fmt: skip
                if r.status_code == 200 and r.json()["candles"]:
                    served.add(r.headers["x-served-by"])
            time.sleep(0.3)
        assert served == {f"web-{port + 1}", f"web-{port + 2}"}
        # Live updates too: a socket through HAProxy gets the pump's candle updates, which it
        # reads from the cluster's streams shard by shard.
        import socketio

        updates: list[Any] = []
        origin = {"origin": f"http://localhost:{port}"}  # the site's, as a browser sends
        sio = socketio.Client(reconnection=False, websocket_extra_options=origin)
        sio.on("md", updates.append)
        sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
        try:
            ack = sio.call("subscribe", {"channel": "candles", "symbol": "BTCUSDT",
                                         "timeframe": "1m"}, timeout=20)  # fmt: skip
            assert ack.get("ok"), ack
            deadline = time.monotonic() + 30
            while not any("c:BTCUSDT:1m" in m.get("rooms", {}) for m in updates):
                assert time.monotonic() < deadline, ("no live candle update", ack, updates[-3:])
                time.sleep(0.2)
        finally:
            sio.disconnect()
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=45) == 0
        assert not re.findall(r"\| (\S+) stopped \(rc=[1-9]", "".join(output))  # no failure
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        kill_tree(proc)


def _taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
