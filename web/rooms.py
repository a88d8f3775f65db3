"""Coalescing fan-out state: rooms, clients, and what each client is sent per round (pure).

A *room* (``c:SYM:tf`` candles, ``s:SYM:tf`` signals, ``b:SYM`` book ticker) keeps the latest value
per key (a candle's open time, a signal's (name, open time), the one book ticker), at most
``ROOM_KEYS[kind]`` keys, newest kept. Updates mark keys dirty; at each round a changed room is
*sealed*: its version goes up, each dirty key records it, and the dirty keys are encoded once as
its ``delta`` fragment. Clients are spread over ``phases``; a round sends to one phase's clients,
so each gets at most one message per ``phases`` rounds (a tick) and a round is short. A client
that saw the previous version gets the delta; one that saw an older one (its last turn was
several versions ago, or it was skipped while slow) gets the values changed since
(:meth:`Room.since`), one that saw none the whole current state; each encoded once per round
on demand. A client's message is its fragments joined as bytes, so the per-client cost is a
join, not a JSON encode.

A closed candle older than every candle its room keeps (a repair: backfill writes the exchange's
kline minutes after the candle closed, issue 16) is not kept: it passes through the delta of the
round it arrives in (at most LATE_BYTES of them per room and round) and stays in the room's
late log for ``phases`` versions (at most LATE_BYTES), so that what changed since a version
includes it. A client that gets the whole state instead (its snapshot was being read), that
needs a repair the log no longer holds, or whose room overflowed the bound, is told in the
message's ``resync`` list to subscribe to the room again with ``since`` (web/sockets.py): its
snapshot then carries the repairs from Redis.

A candle pushed out of a room by a newer one takes its change with it the same way: made this
round, it passes through the delta as a late candle; made earlier, a client that had not seen it
is told to resync.

Memory is bounded by rooms x ROOM_KEYS (plus 2 x LATE_BYTES per room: a round's repairs and the
late log) and clients x subscriptions; nothing here grows with the update rate or with how
slowly a client reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

# Values kept per room: the open candle and the last closed ones; a few signals; one book ticker,
# one mark price; the last trades (a tick sends those that came since the last one).
ROOM_KEYS = {"c": 4, "s": 64, "b": 1, "m": 1, "t": 30}
CHANNELS = {"candles": "c", "signals": "s", "book": "b", "mark": "m", "trades": "t"}
SYMBOL_ONLY = frozenset({"b", "m", "t"})  # rooms of a symbol, with no timeframe
ONE_VALUE = frozenset({"b", "m"})  # sent as an object (the others as a list)
# Rooms whose clients see only the newest values (one value; a tape's last trades, at most 30 a
# tick): a stream of these the pump falls behind on is skipped ahead (web/fanout.py).
NEWEST_ONLY = frozenset({"b", "m", "t"})
# Encoded late candles (repairs of candles older than the room keeps) one room passes on in one
# tick: ~190 candles. Past it the rest is dropped and the room's members are told to resync.
LATE_BYTES = 64 * 1024
# What Room.update did with a value.
KEPT, LATE, OVERFLOW, STALE = 0, 1, 2, 3


def room_name(kind: str, symbol: str, timeframe: str | None = None) -> str:
    return f"{kind}:{symbol}" if kind in SYMBOL_ONLY else f"{kind}:{symbol}:{timeframe}"


class Room:
    """The latest values of one room, with the fragments of its current version."""

    __slots__ = (
        "_full",
        "_name_json",
        "_since",
        "at_ms",
        "changed_in",
        "delta",
        "dirty",
        "dirty_at_ms",
        "kind",
        "late",
        "late_bytes",
        "late_log",
        "late_log_bytes",
        "late_version",
        "lost_version",
        "members",
        "name",
        "overflow",
        "phase_members",
        "resync_version",
        "retain",
        "state",
        "version",
    )  # fmt: skip

    def __init__(self, name: str, phases: int = 1) -> None:
        self.name = name
        self.kind = name[0]
        self.phase_members: list[set[str]] = [set() for _ in range(phases)]  # members by phase
        self.state: dict[Any, Any] = {}
        self.dirty: set[Any] = set()
        self.dirty_at_ms = 0
        self.at_ms = 0
        self.version = 0
        self.delta = b""
        self._full: bytes | None = None
        self._since: dict[int, bytes] = {}  # version seen -> the fragment of what changed since
        self._name_json = orjson.dumps(name)
        self.members: set[str] = set()
        self.late: dict[Any, bytes] = {}  # this tick's late candles, encoded, by open time
        self.late_bytes = 0
        self.overflow = False  # late candles were dropped this tick
        self.late_version = 0  # the last version whose delta carried late candles
        self.resync_version = 0  # the last version whose delta lacks some (overflow)
        # The late candles of the last ``retain`` versions (version, their fragments by key),
        # at most LATE_BYTES in all: what changed since a version includes them (:meth:`since`).
        self.retain = phases
        self.late_log: list[tuple[int, dict[Any, bytes]]] = []
        self.late_log_bytes = 0
        self.lost_version = 0  # the last version some of whose changes are in neither
        self.changed_in: dict[Any, int] = {}  # kept key -> the version of its last change

    def update(self, key: Any, value: Any, at_ms: int) -> int:
        """Keep ``value`` as the latest for ``key``; one older than every kept key passes through
        this tick's delta if it is a closed candle (a repair), else it is dropped. Return KEPT,
        LATE, OVERFLOW (a late candle over LATE_BYTES: dropped) or STALE (dropped)."""
        state = self.state
        if key not in state and len(state) >= ROOM_KEYS[self.kind]:
            oldest = min(state)
            if key < oldest:
                return self._late(key, value, at_ms)
            self._evict(oldest, at_ms)
        state[key] = value
        self.dirty.add(key)
        if at_ms > self.dirty_at_ms:
            self.dirty_at_ms = at_ms
        return KEPT

    def _evict(self, key: Any, at_ms: int) -> None:
        """Drop ``key`` from the state (a newer one takes its place) without losing a change of
        a candle: one made this tick passes through this tick's delta, as a late candle does
        (a burst of repairs into a room that held few candles, in a web process just started);
        a client that has not seen an earlier one gets the whole state without it, so it is
        told to resync (``late_version``)."""
        value = self.state.pop(key)
        dirty = key in self.dirty
        self.dirty.discard(key)
        changed_in = self.changed_in.pop(key, 0)
        if self.kind != "c":
            return
        if dirty:
            self._late(key, value, at_ms)
        elif changed_in > self.late_version:
            self.late_version = changed_in
        if not dirty and changed_in > self.lost_version:
            self.lost_version = changed_in

    def _late(self, key: Any, value: Any, at_ms: int) -> int:
        # Only a closed candle is rewritten after its room moved on (backfill, an outage marking
        # it partial); an open one this old is a stale replay.
        if self.kind != "c" or not value.get("closed"):
            return STALE
        data = orjson.dumps(value)
        size = self.late_bytes + len(data) - len(self.late.get(key, b""))
        if size > LATE_BYTES:
            self.overflow = True
            return OVERFLOW
        self.late[key] = data
        self.late_bytes = size
        if at_ms > self.dirty_at_ms:
            self.dirty_at_ms = at_ms
        return LATE

    def seal(self) -> None:
        """Close this tick's changes into a new version and its delta fragment."""
        self.version += 1
        for key in self.dirty:
            self.changed_in[key] = self.version
        self.at_ms = max(self.at_ms, self.dirty_at_ms)
        late: list[bytes] = []
        if self.late or self.overflow:
            self.late_version = self.version
            if self.overflow:
                self.resync_version = self.version
                self.lost_version = self.version
            late = [self.late[k] for k in sorted(self.late)]  # all older than every kept key
            if self.late:
                self.late_log.append((self.version, self.late))
                self.late_log_bytes += self.late_bytes
                self.late = {}
            self.late_bytes = 0
            self.overflow = False
        self._trim_late_log()
        self.delta = self._fragment(sorted(self.dirty), self.dirty_at_ms, late)
        self.dirty.clear()
        self.dirty_at_ms = 0
        self._full = None
        if self._since:
            self._since = {}

    def _trim_late_log(self) -> None:
        """Keep the late candles of the last ``retain`` versions, at most LATE_BYTES of them: a
        client that saw a version before one dropped is told to resync (``lost_version``)."""
        log = self.late_log
        while log and (log[0][0] <= self.version - self.retain or self.late_log_bytes > LATE_BYTES):
            version, frags = log.pop(0)
            self.late_log_bytes -= sum(map(len, frags.values()))
            self.lost_version = max(self.lost_version, version)

    def full(self) -> bytes:
        """Return the fragment of the whole current state (encoded at most once per version)."""
        if self._full is None:
            self._full = self._fragment(sorted(self.state), self.at_ms)
        return self._full

    def since(self, seen: int) -> bytes:
        """Return the fragment of what a client that saw version ``seen`` lacks: the kept values
        changed after it, after the late candles of the versions since that the late log still
        holds (a client that needs one it dropped is told to resync: ``lost_version``).
        Encoded at most once per version and ``seen``."""
        if self.kind in ONE_VALUE:
            return self.full()
        frag = self._since.get(seen)
        if frag is None:
            changed_in = self.changed_in
            keys = [k for k in sorted(self.state) if changed_in.get(k, 0) > seen]
            late: dict[Any, bytes] = {}
            for version, frags in self.late_log:
                if version > seen:
                    late.update(frags)  # a newer repair of the same candle wins
            frag = self._fragment(keys, self.at_ms, [late[k] for k in sorted(late)])
            self._since[seen] = frag
        return frag

    def snapshot(self) -> list[Any]:
        return [self.state[k] for k in sorted(self.state)]

    def _fragment(self, keys: list[Any], at_ms: int, late: list[bytes] | None = None) -> bytes:
        if self.kind in ONE_VALUE:
            data = orjson.dumps(self.state[keys[0]]) if keys else b"null"
        elif late:
            data = b"[%s]" % b",".join([*late, *(orjson.dumps(self.state[k]) for k in keys)])
        else:
            data = orjson.dumps([self.state[k] for k in keys])
        return b'%s:{"at":%d,"data":%s}' % (self._name_json, at_ms, data)


@dataclass(slots=True, eq=False)
class Client:
    """One connection: its subscriptions (room -> version seen; -1: needs the full state)."""

    sid: str
    eio_sid: str
    address: str | None = None  # None: anonymous
    family: str | None = None
    expires_at_s: int | None = None
    rooms: dict[str, int] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # rooms whose snapshot is being sent
    held_at: dict[str, int] = field(default_factory=dict)  # room -> its version when subscribed
    behind_since_ms: int | None = None  # skipped since (None: up to date)
    phase: int = 0  # the rounds it is sent in: those with round % phases == phase (Registry)
    socket: Any = None  # its upgraded socket, for direct writes (web/transport.py), if any


@dataclass(slots=True)
class TickStats:
    sent: int = 0
    direct: int = 0  # of those, written straight to the socket (send returned True)
    skipped: int = 0
    resyncs: int = 0  # rooms clients were told to subscribe to again (``resync``)
    slow: list[Client] = field(default_factory=list)  # behind for too long: to be kicked


class Registry:
    """Clients and rooms of one web process; :meth:`tick` decides what each client is sent."""

    def __init__(self, *, max_subscriptions: int, backlog: int, slow_ms: int,
                 phases: int = 1) -> None:  # fmt: skip
        self.max_subscriptions = max_subscriptions
        self.backlog = backlog
        self.slow_ms = slow_ms
        self.phases = phases
        self.round = 0  # rounds so far (:meth:`tick`)
        self.clients: dict[str, Client] = {}
        self.rooms: dict[str, Room] = {}
        self.changed: set[Room] = set()
        # Per phase, the rooms sealed since that phase's last round (its clients may lack them).
        self.unsent: list[set[Room]] = [set() for _ in range(phases)]
        self._joined = 0  # clients connected so far: the next one's phase
        self.catchup: set[str] = set()  # clients owed a room's state outside the changed rooms
        self.layout = 0  # counts rooms created and deleted (the pump re-reads which exist)
        self.late = 0  # late candles passed on (repairs older than their room keeps)
        self.late_dropped = 0  # late candles over a room's LATE_BYTES in a tick (members resync)

    # --- membership ---
    def connect(self, client: Client) -> None:
        client.phase = self._joined % self.phases  # spread evenly over the rounds
        self._joined += 1
        self.clients[client.sid] = client

    def disconnect(self, sid: str) -> Client | None:
        client = self.clients.pop(sid, None)
        if client is not None:
            for name in list(client.rooms):
                self._leave(client, name)
        self.catchup.discard(sid)
        return client

    def hold(self, sid: str, name: str) -> Room | None:
        """Subscribe ``sid`` to a room, holding its updates until :meth:`release` (the snapshot is
        sent in between). Return the room, or None when the client is at its subscription limit."""
        client = self.clients[sid]
        if name not in client.rooms and len(client.rooms) >= self.max_subscriptions:
            return None
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.phases)
            self.layout += 1
        room.members.add(sid)
        room.phase_members[client.phase].add(sid)
        client.rooms[name] = -1
        client.pending.add(name)
        client.held_at[name] = room.version  # its snapshot is read after this version
        return room

    def release(self, sid: str, name: str) -> None:
        client = self.clients.get(sid)
        if client is not None and name in client.pending:
            client.pending.discard(name)
            self.catchup.add(sid)

    def leave(self, sid: str, name: str) -> bool:
        client = self.clients.get(sid)
        if client is None or name not in client.rooms:
            return False
        self._leave(client, name)
        return True

    def _leave(self, client: Client, name: str) -> None:
        client.rooms.pop(name, None)
        client.pending.discard(name)
        client.held_at.pop(name, None)
        room = self.rooms.get(name)
        if room is not None:
            room.members.discard(client.sid)
            room.phase_members[client.phase].discard(client.sid)
            if not room.members:
                del self.rooms[name]
                self.changed.discard(room)
                for unsent in self.unsent:
                    unsent.discard(room)
                self.layout += 1

    # --- updates ---
    def update(self, name: str, key: Any, value: Any, at_ms: int) -> None:
        room = self.rooms.get(name)
        if room is not None:
            done = room.update(key, value, at_ms)
            if done == LATE:
                self.late += 1
            elif done == OVERFLOW:
                self.late_dropped += 1
            self.changed.add(room)

    def tick(self, now_ms: int, queued: Callable[[str], int], send: Callable[[Client, bytes], bool],
             pause: Callable[[], object] | None = None,
             clock: Callable[[], int] | None = None) -> TickStats:  # fmt: skip
        """Run one round: seal changed rooms and send each concerned client of this round's phase
        (and every client owed a room's state) one message.

        Clients are spread over ``phases`` (at connect): round r sends to those of phase
        r % phases, so each client gets at most one message per ``phases`` rounds (plus
        catch-ups), and a round's work is 1/phases of all clients'. A client gets, per room,
        the delta of the room's newest version if it saw the one before, else what changed
        since the version it saw (:meth:`Room.since`), or the whole state if it saw none.

        ``queued(eio_sid)`` is the number of packets waiting in the client's transport queue; a
        client over the backlog is skipped (and owed the full state); one skipped for longer
        than ``slow_ms`` is returned in ``stats.slow``. ``send`` returns whether it wrote the
        message straight to the socket rather than queueing it. A client that did not get the
        delta through which late candles passed, or got a delta that overflowed, has the room
        in the message's ``resync`` list. ``clock()`` stamps each message's ``t`` when it is
        built (default: ``now_ms``).

        ``pause()`` is called after each client, and may let other work run (the pump yields
        there so that trade commands do not wait for a whole tick). Meanwhile clients may
        connect, disconnect, subscribe and leave: each client is read afresh after a pause, and
        a subscription released during the tick is sent at the next one.
        """
        stats = TickStats()
        targets: set[str] = self.catchup
        self.catchup = set()
        phase = self.round % self.phases
        self.round += 1
        for room in self.changed:
            room.seal()
        for unsent in self.unsent:
            unsent.update(self.changed)
        self.changed.clear()
        due = self.unsent[phase]
        self.unsent[phase] = set()
        for room in due:
            targets.update(room.phase_members[phase])
        head = b'2["md",{"t":%d,"rooms":{' % now_ms
        for sid in targets:
            client = self.clients.get(sid)
            if client is None:
                continue
            frags = self._fragments(client)
            if frags is None:
                continue
            if queued(client.eio_sid) > self.backlog:
                stats.skipped += 1
                self.catchup.add(sid)
                if client.behind_since_ms is None:
                    client.behind_since_ms = now_ms
                elif now_ms - client.behind_since_ms >= self.slow_ms:
                    stats.slow.append(client)
                continue
            client.behind_since_ms = None
            parts = []
            resync = []
            for name, room, seen in frags:
                if seen == room.version - 1:
                    parts.append(room.delta)
                    missed = room.resync_version == room.version
                else:  # late candles of the versions it missed are not in what it gets
                    if seen >= 0:
                        parts.append(room.since(seen))
                        missed = room.lost_version > seen
                    else:  # the whole state: late candles are not in it
                        parts.append(room.full())
                        missed = room.late_version > client.held_at.pop(name, 0)
                client.rooms[name] = room.version
                if missed:
                    resync.append(name)
            tail = b"}}]"
            if resync:
                stats.resyncs += len(resync)
                tail = b'},"resync":%s}]' % orjson.dumps(resync)
            if clock is not None:
                head = b'2["md",{"t":%d,"rooms":{' % clock()
            stats.direct += send(client, head + b",".join(parts) + tail)
            stats.sent += 1
            if pause is not None:
                pause()
        return stats

    def _fragments(self, client: Client) -> list[tuple[str, Room, int]] | None:
        """Return the client's rooms with a version it has not seen (and that version)."""
        rooms = self.rooms
        out = []
        for name, seen in client.rooms.items():
            room = rooms.get(name)
            if room is not None and seen < room.version > 0 and name not in client.pending:
                out.append((name, room, seen))
        return out or None

    def subscriptions(self) -> int:
        return sum(len(c.rooms) for c in self.clients.values())

    def expired(self, now_s: int) -> Iterable[Client]:
        return [c for c in self.clients.values() if c.expires_at_s and c.expires_at_s <= now_s]
