"""How the fan-out pump reaches one client: Engine.IO's queue, or straight to its socket.

The glue between the pump (web/fanout.py), python-socketio's server and the whole-frame sockets
of web/transport.py: how many packets wait in a client's Engine.IO queue, sending one message,
and dropping a client with a reason (docs/architecture.md, "Fan-out and its bounds").
"""

from __future__ import annotations

from typing import Any

import orjson
from flask_socketio import SocketIO

from web.rooms import Client, Registry
from web.transport import text_frame


class Delivery:
    """Send to the clients of one Socket.IO server (bound after ``socketio.init_app``)."""

    def __init__(self, socketio: SocketIO, registry: Registry) -> None:
        server = socketio.server
        if server is None:  # init_app always builds it; for the type checker
            raise RuntimeError("Socket.IO server missing after init_app")
        self.socketio = socketio
        self.server: Any = server
        self.sockets: dict[str, Any] = server.eio.sockets
        self.registry = registry

    def queued(self, eio_sid: str) -> int:
        """Return how many packets wait in the client's Engine.IO queue."""
        sock = self.sockets.get(eio_sid)
        return 0 if sock is None else int(sock.queue.qsize())

    def send(self, client: Client, message: bytes) -> bool:
        """Send one Socket.IO packet, straight to the socket when nothing is queued for it
        (return True then), else through Engine.IO's queue."""
        sock = self.sockets.get(client.eio_sid)
        if sock is None:  # gone between the tick's decision and now
            self.registry.disconnect(client.sid)
            return False
        if (
            client.socket is not None
            and sock.upgraded
            and not sock.closed
            and not sock.queue.qsize()  # anything queued goes first: order is kept
            and client.socket.try_send(text_frame(b"4" + message))  # an Engine.IO message
        ):
            return True
        self.server.eio.send(client.eio_sid, message.decode())
        return False

    def emit(self, event: str, data: Any, *, to: str, ignore_queue: bool = True) -> None:
        """Send a Socket.IO event to this process's sockets in room ``to`` as :meth:`send`
        does, straight to a socket when nothing waits in its queue (order events: one wake-up
        of a writer greenlet less on the way to the user). Like ``socketio.emit(...,
        ignore_queue=True)``: other processes' sockets hear it from their own reader."""
        if not ignore_queue:
            raise ValueError("Delivery.emit sends to this process's sockets only")
        message = b"2" + orjson.dumps([event, data])  # a Socket.IO EVENT on the main namespace
        clients = self.registry.clients
        for sid, eio_sid in list(self.server.manager.get_participants("/", to)):
            client = clients.get(sid)
            if client is None:  # connected, not yet registered: the queue
                self.server.eio.send(eio_sid, message.decode())
            else:
                self.send(client, message)

    def notify(self, client: Client, event: str, reason: str) -> None:
        """Tell the client why (``event``, ``reason``) and disconnect it."""
        self.registry.disconnect(client.sid)
        self.socketio.emit(event, {"reason": reason}, to=client.sid, ignore_queue=True)  # ours
        self.server.disconnect(client.sid, ignore_queue=True)
        sock = self.server.eio.sockets.get(client.eio_sid)
        if sock is not None:  # a client that never reads would keep its transport until ping
            sock.close(wait=False)  # timeout: drop it now (what is queued is still written)
