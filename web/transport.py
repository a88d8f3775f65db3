"""Whole websocket frames, or none: a fix around simple-websocket 1.1.0 under gevent.

simple-websocket writes each frame with one ``sock.send()`` and ignores how much was sent
(miguelgrinberg/simple-websocket#45). A gevent socket's ``send`` sends what fits, so to a client
that reads slowly the frames go out truncated: the client sees a corrupt stream, and the server
never notices the client is behind, because nothing ever waits. Here every upgraded connection's
socket sends whole frames (``sendall``, one sender at a time), so a writer facing a full TCP
window *waits*: its Engine.IO queue grows, which the fan-out pump sees and bounds (web/rooms.py).
A write that waits longer than ``timeout_s`` fails, which ends that connection.

The kernel's send buffer of each upgraded socket is fixed at ``send_buffer_bytes``: left to
autotuning it grows to ``tcp_wmem``'s maximum (4 MiB on Linux) per slow client, kernel memory
that no Python bound would see.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WholeFrameSocket:
    """A socket proxy whose ``send`` writes all of ``data`` within ``timeout_s`` or raises."""

    def __init__(self, sock: Any, timeout_s: float) -> None:
        self._sock = sock
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # gevent's, once patched: frames never interleave

    def send(self, data: bytes, flags: int = 0) -> int:
        import gevent

        timeout = gevent.Timeout(self._timeout_s, TimeoutError("the client stopped reading"))
        with timeout, self._lock:
            self._sock.sendall(data, flags)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def whole_frames(app: WSGIApp, *, timeout_s: float, send_buffer_bytes: int) -> WSGIApp:
    """Wrap a WSGI app so websocket upgrades get a :class:`WholeFrameSocket` (gunicorn)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is not None and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
            environ["gunicorn.socket"] = WholeFrameSocket(sock, timeout_s)
        return app(environ, start_response)

    return wrapped
