"""HAProxy in front of several web processes: round robin, no session affinity (issue 17).

As Heroku's router does, each new connection goes to the next web process, whatever process
the same browser reached before; so a user's order events and every client's market data must
reach them whichever process holds their socket. Used by the scale-out tests and ``make
demo-cluster``. The binary is Debian's ``haproxy`` package (the Makefile installs it).

The generated configuration, for backends on ports 8001 and 8002 behind port 8000::

    frontend web            bind 127.0.0.1:8000
    backend webs            balance roundrobin (no cookie, no stick table)
                            option httpchk GET /livez (web/probes.py)
                            server web-8001 127.0.0.1:8001 check
                            server web-8002 127.0.0.1:8002 check

Each response carries ``X-Served-By: web-<port>``, the server that answered (the websocket
handshake's ``101`` too), so a client can tell which process holds its socket.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from demo.redis_server import _die_with_parent, free_port

BINARY = Path("/usr/sbin/haproxy")
SERVED_BY = "X-Served-By"  # the response header naming the server that answered


class HAProxyError(RuntimeError):
    """HAProxy could not be found, configured or started."""


def find_binary() -> Path:
    """Return the haproxy binary: Debian's, else the one on PATH; raise HAProxyError if none."""
    if BINARY.exists():
        return BINARY
    found = shutil.which("haproxy")
    if found:
        return Path(found)
    raise HAProxyError(
        f"no haproxy at {BINARY} or on PATH: install Debian's package "
        "(`apt-get install haproxy`, or `make /usr/sbin/haproxy`)"
    )


def server_name(port: int) -> str:
    """Return the name HAProxy gives the backend on ``port`` (and sends in ``X-Served-By``)."""
    return f"web-{port}"


def config(port: int, backends: list[int], *, check_interval_ms: int = 1_000) -> str:
    """Return the configuration: HTTP mode, round robin over ``backends``, no stickiness.

    Websockets: once a connection is upgraded, ``timeout tunnel`` replaces the client and
    server timeouts, so an idle socket lives an hour. A connection refused by a dead backend is
    retried on another one (``option redispatch``) before the health check marks it down.
    """
    servers = "\n".join(
        f"    server {server_name(p)} 127.0.0.1:{p} check inter {check_interval_ms}ms"
        for p in backends
    )
    return f"""\
global
    log stdout format raw local0 info
    # No maxconn: haproxy derives it from the open-file limit (two descriptors a connection).

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout tunnel 1h
    timeout client-fin 5s
    retries 3
    option redispatch 1

frontend web
    bind 127.0.0.1:{port}
    default_backend webs

backend webs
    balance roundrobin
    option httpchk GET /livez
    http-check expect status 200
    default-server fall 2 rise 1
    http-response set-header {SERVED_BY} %[srv_name]
{servers}
"""


class HAProxy:
    """One haproxy process balancing ``backends`` (local ports) from ``port``; files in work_dir.

    Raises HAProxyError from the constructor when the binary is missing, and from start() when
    haproxy refuses its configuration or does not listen in time.
    """

    def __init__(self, work_dir: Path, backends: list[int], port: int | None = None, *,
                 check_interval_ms: int = 1_000, binary: Path | None = None) -> None:  # fmt: skip
        if not backends:
            raise HAProxyError("HAProxy needs at least one backend port")
        self.work_dir = work_dir
        self.backends = list(backends)
        self.port = port or free_port()
        self.check_interval_ms = check_interval_ms
        self.binary = binary or find_binary()
        self.config_path = work_dir / "haproxy.cfg"
        self.log_path = work_dir / "haproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def tail(self, chars: int = 2_000) -> str:
        """Return the end of haproxy's log (its request log and its health check changes)."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Write the configuration, start haproxy and return once its port accepts connections."""
        if self.running:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            config(self.port, self.backends, check_interval_ms=self.check_interval_ms)
        )
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own binary and arguments
                [str(self.binary), "-f", str(self.config_path), "-db"],  # -db: foreground
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C goes to the demo, which stops haproxy itself
                preexec_fn=_die_with_parent,  # no orphan if the parent is killed
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise HAProxyError(f"haproxy exited at start: {self.tail(1_000)}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise HAProxyError(f"haproxy did not listen within {timeout_s} s: {self.tail()}")
            time.sleep(0.02)

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop haproxy at once (SIGTERM: open connections, websockets too, are closed)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = None
            return
        self._proc.send_signal(signal.SIGTERM)  # SIGUSR1 would wait for every open websocket
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def kill(self) -> None:
        """Kill haproxy with SIGKILL."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
