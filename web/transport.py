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

Two more things happen at the upgrade, both for the fan-out's sake:

* The offer of ``permessage-deflate`` is dropped, so every message goes out as written. Browsers
  always offer it and simple-websocket accepts it: a zlib compressor and decompressor per
  connection (hundreds of KiB each with the default window, kept for the connection's life) and a
  compression per message, to save bandwidth on messages of a few hundred bytes.
* :meth:`WholeFrameSocket.try_send` lets the pump write a market-data message straight to the
  socket when nothing else is waiting for it (web/delivery.py), one non-blocking ``send`` of a frame
  built here, instead of Engine.IO's queue, a writer greenlet's wake-up and wsproto's framing
  for each client on each tick. A client whose socket does not take the frame at once goes back
  to the queue, where the backlog bound applies.
"""

from __future__ import annotations

import socket
import struct
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

    def try_send(self, frame: bytes) -> bool:
        """Write ``frame`` now if no other frame is being written and the kernel takes it.

        Return False when nothing was written (another writer holds the socket, its buffer is
        full, or it failed): the caller queues the message instead. A frame the kernel takes only
        in part is finished by a greenlet that holds the socket until then, so it is never
        interleaved; the caller counts it as sent.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            sent = self._sock.send(frame, 0, timeout=0.0)
        except OSError:  # full (EAGAIN) or broken: the queue's writer finds out which
            self._lock.release()
            return False
        if sent == len(frame):
            self._lock.release()
            return True
        import gevent

        gevent.spawn(self._finish, memoryview(frame)[sent:])
        return True

    def _finish(self, rest: memoryview) -> None:
        import gevent

        try:
            with gevent.Timeout(self._timeout_s, TimeoutError("the client stopped reading")):
                self._sock.sendall(rest)
        except (OSError, TimeoutError):
            self._sock.close()  # a torn frame cannot be followed by anything: end it
        finally:
            self._lock.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def text_frame(payload: bytes) -> bytes:
    """Return one unmasked, final websocket text frame (RFC 6455 5.2) holding ``payload``."""
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 65536:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


def whole_frames(app: WSGIApp, *, timeout_s: float, send_buffer_bytes: int) -> WSGIApp:
    """Wrap a WSGI app so websocket upgrades get a :class:`WholeFrameSocket` (gunicorn)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is not None and environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)  # no permessage-deflate
            environ["gunicorn.socket"] = WholeFrameSocket(sock, timeout_s)
        return app(environ, start_response)

    return wrapped
