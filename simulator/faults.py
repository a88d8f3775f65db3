"""Faults: what is currently broken on purpose, set at start (``--fault``) or via ``/sim/faults``.

A fault is a small dict, validated here, e.g. ``{"type": "stall", "symbol": "BTCUSDT",
"seconds": 5}``. Kinds:

=============  ==========================================================================
drop           close matching websocket connections now (``path`` prefix, ``stream``);
               ``abort`` (default true) drops TCP with no close frame, else close 1001
stall          silence a ``stream`` or a ``symbol`` (or everything) without closing
delay          hold every frame ``ms`` milliseconds (``path``/``stream`` filters)
duplicate      send every ``every``-th frame twice (default every frame)
reorder        swap consecutive frames pairwise
down           close every websocket, refuse new TCP connections and take REST down
refuse         reject websocket handshakes with HTTP 503
rest           answer REST with ``status`` (500, 502, 503, 429, 418 ...); optional ``code``,
               ``msg``, ``path`` prefix, ``count`` (answers left) and ``retry_after``
               (seconds in a 429's or 418's ``Retry-After``; default 60 and 120)
order_unknown  execute the next ``count`` (default 1) ``POST /fapi/v1/order`` (``symbol``
               filter) but lose the answer: ``mode`` "503" (default), "408", or "timeout"
               (the answer is held ``ms``, default 30000)
lookup_lag     ``GET /fapi/v1/order`` answers -2013 for ``ms`` after an order's creation
listenkey_expire  expire now the listen key of ``apiKey`` (or every key)
=============  ==========================================================================

``drop`` and ``listenkey_expire`` act once; every other kind lasts ``seconds`` (absent: until
cleared), or ``count`` requests for ``rest`` and ``order_unknown``. This module holds state and
answers questions; the servers act on the answers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simulator.model import Clock

KINDS = (
    "drop", "stall", "delay", "duplicate", "reorder", "down", "refuse", "rest",
    "order_unknown", "lookup_lag", "listenkey_expire",
)  # fmt: skip
ONE_SHOT = frozenset({"drop", "listenkey_expire"})  # act when added, are not kept
UNKNOWN_MODES = ("503", "408", "timeout")
_ALLOWED = {
    "drop": {"path", "stream", "abort"},
    "stall": {"stream", "symbol", "seconds"},
    "delay": {"ms", "path", "stream", "seconds"},
    "duplicate": {"every", "path", "stream", "seconds"},
    "reorder": {"path", "stream", "seconds"},
    "down": {"seconds"},
    "refuse": {"seconds"},
    "rest": {"status", "code", "msg", "path", "count", "seconds", "retry_after"},
    "order_unknown": {"mode", "ms", "symbol", "count", "seconds"},
    "lookup_lag": {"ms", "symbol", "seconds"},
    "listenkey_expire": {"apiKey"},
}
_ids = itertools.count(1)


@dataclass(slots=True)
class Fault:
    """One active fault."""

    kind: str
    params: dict[str, Any]
    until_ms: int | None  # None: until cleared (or ``count`` runs out)
    id: int = field(default_factory=lambda: next(_ids))

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.kind, **self.params, "untilMs": self.until_ms}


def parse_fault_arg(text: str) -> dict[str, Any]:
    """Parse a ``--fault`` value such as ``type=stall,symbol=BTCUSDT,seconds=5`` into a spec."""
    spec: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not key=value")
        spec[key.strip()] = _scalar(value.strip())
    return spec


def _scalar(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def validate(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return ``(kind, params)`` of a fault spec; raise ValueError saying what is wrong."""
    kind = spec.get("type")
    if kind not in KINDS:
        raise ValueError(f"type must be one of {', '.join(KINDS)}")
    params = {k: v for k, v in spec.items() if k != "type"}
    unknown = set(params) - _ALLOWED[kind]
    if unknown:
        raise ValueError(f"unknown field(s) for {kind}: {', '.join(sorted(unknown))}")
    for key in ("seconds", "ms"):
        if key in params and (
            not isinstance(params[key], int | float) or isinstance(params[key], bool)
        ):
            raise ValueError(f"{key} must be a number")
        if key in params and params[key] < 0:
            raise ValueError(f"{key} must be >= 0")
    for key in ("every", "count", "status", "code", "retry_after"):
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool)):
            raise ValueError(f"{key} must be an integer")
    if kind == "delay" and "ms" not in params:
        raise ValueError("delay needs ms")
    if kind == "down" and "seconds" not in params:
        raise ValueError("down needs seconds")
    if kind == "rest" and not 400 <= params.get("status", 0) <= 599:
        raise ValueError("rest needs a status between 400 and 599")
    if kind == "duplicate" and params.get("every", 1) < 1:
        raise ValueError("every must be >= 1")
    for key in ("symbol", "apiKey"):
        if key in params and not isinstance(params[key], str):
            raise ValueError(f"{key} must be a string")
    if kind == "order_unknown":
        params["mode"] = str(params.get("mode", "503"))  # --fault mode=503 parses as a number
        if params["mode"] not in UNKNOWN_MODES:
            raise ValueError(f"mode must be one of {', '.join(UNKNOWN_MODES)}")
        params.setdefault("count", 1)
        if params["count"] < 1:
            raise ValueError("count must be >= 1")
    if kind == "lookup_lag" and "ms" not in params:
        raise ValueError("lookup_lag needs ms")
    return kind, params


class Faults:
    """The active faults, expiring on ``clock``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._faults: list[Fault] = []
        self.frame_faults = False  # fast path for the hub: any stall/delay/duplicate/reorder?

    def add(self, spec: Mapping[str, Any]) -> Fault:
        """Activate a fault (one-shot kinds are returned, not kept); raise ValueError if invalid."""
        kind, params = validate(spec)
        seconds = params.get("seconds")
        until = None if seconds is None else self.clock.now_ms() + int(seconds * 1000)
        fault = Fault(kind, params, until)
        if kind not in ONE_SHOT:
            self._faults.append(fault)
            self._refresh()
        return fault

    def clear(self, fault_id: int | None = None) -> int:
        """Remove one fault (or all); return how many were removed."""
        before = len(self._faults)
        self._faults = [f for f in self._faults if fault_id is not None and f.id != fault_id]
        self._refresh()
        return before - len(self._faults)

    def expire(self) -> bool:
        """Drop faults whose time is up; return True if any did."""
        now = self.clock.now_ms()
        live = [f for f in self._faults if f.until_ms is None or f.until_ms > now]
        changed = len(live) != len(self._faults)
        if changed:
            self._faults = live
            self._refresh()
        return changed

    def _refresh(self) -> None:
        self.frame_faults = any(
            f.kind in ("stall", "delay", "duplicate", "reorder") for f in self._faults
        )

    def active(self, kind: str | None = None) -> list[Fault]:
        now = self.clock.now_ms()
        return [
            f
            for f in self._faults
            if (kind is None or f.kind == kind) and (f.until_ms is None or f.until_ms > now)
        ]

    def as_list(self) -> list[dict[str, Any]]:
        return [f.as_dict() for f in self.active()]

    # --- questions the servers ask ----------------------------------------------------------

    def is_stalled(self, stream: str) -> bool:
        """True if frames of ``stream`` (e.g. ``btcusdt@aggTrade``) must be withheld."""
        symbol = stream.partition("@")[0].upper()
        for f in self.active("stall"):
            s, sym = f.params.get("stream"), f.params.get("symbol")
            if (s is None or s == stream) and (sym is None or sym.upper() == symbol):
                return True
        return False

    def frame_effects(self, path: str, streams: frozenset[str] | set[str]) -> tuple[int, int, bool]:
        """Return (delay ms, duplicate every n or 0, reorder) for a connection."""
        delay, every, reorder = 0, 0, False
        for f in self._faults:
            if f.kind not in ("delay", "duplicate", "reorder") or not _matches(f, path, streams):
                continue
            if f.until_ms is not None and f.until_ms <= self.clock.now_ms():
                continue
            if f.kind == "delay":
                delay = max(delay, int(f.params["ms"]))
            elif f.kind == "duplicate":
                every = int(f.params.get("every", 1))
            else:
                reorder = True
        return delay, every, reorder

    def refusing(self) -> bool:
        return bool(self.active("refuse"))

    def down_until_ms(self) -> int | None:
        ends = [f.until_ms for f in self.active("down") if f.until_ms is not None]
        return max(ends) if ends else None

    def take_rest_fault(self, path: str) -> Fault | None:
        """Return the REST fault that answers a request to ``path`` (consuming one ``count``)."""
        for f in self.active("rest"):
            if path.startswith(f.params.get("path", "")) and self._consume(f):
                return f
        return None

    def take_order_unknown(self, symbol: str | None) -> Fault | None:
        """Return the ``order_unknown`` fault for a new order on ``symbol`` (consuming one)."""
        for f in self.active("order_unknown"):
            wanted = f.params.get("symbol")
            if (wanted is None or wanted == symbol) and self._consume(f):
                return f
        return None

    def lookup_lag_ms(self, symbol: str) -> int:
        """Return how long after its creation an order of ``symbol`` stays unknown to queries."""
        lags = [
            int(f.params["ms"])
            for f in self.active("lookup_lag")
            if f.params.get("symbol") in (None, symbol)
        ]
        return max(lags, default=0)

    def _consume(self, f: Fault) -> bool:
        """Use one of the fault's ``count`` answers; False when none is left."""
        count = f.params.get("count")
        if count is None:
            return True
        if count <= 0:
            return False
        f.params["count"] = count - 1
        if count - 1 == 0:
            self._faults.remove(f)
        return True


def _matches(f: Fault, path: str, streams: frozenset[str] | set[str]) -> bool:
    p, s = f.params.get("path"), f.params.get("stream")
    return (p is None or path.startswith(p)) and (s is None or s in streams)


def drop_matches(params: Mapping[str, Any], path: str, streams: frozenset[str] | set[str]) -> bool:
    """True if a ``drop`` fault with ``params`` selects a connection on ``path``/``streams``."""
    p, s = params.get("path"), params.get("stream")
    return (p is None or path.startswith(p)) and (s is None or s in streams)
