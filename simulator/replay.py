"""Replay: play recorded combined-stream frames back through the websocket endpoints.

File format (cryptofeed's recordings, ``tests/fixtures/ws-combined-2021-07-22.txt``): an optional
header line ``<url> <-> <connect time>``, then one frame per line, optionally prefixed by
``<receive time, unix s>: ``::

    1626992741.06217: {"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker",...}}

Frames go out at the recorded pace divided by ``speed`` (``speed <= 0``: as fast as possible),
with their recorded payloads unchanged. Replayed aggTrades are recorded in the ledger, so REST
klines and ``/sim/trades`` are derived from them; replayed bookTickers set the top of book.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from simulator.instruments import parse_units
from simulator.ledger import AggTrade
from simulator.model import MarketModel
from simulator.payloads import Sink

log = logging.getLogger(__name__)

_RAW_STREAM = {"aggTrade": "aggTrade", "trade": "trade", "bookTicker": "bookTicker"}


@dataclass(frozen=True, slots=True)
class Frame:
    offset_s: float  # receive time relative to the first frame
    stream: str
    payload: bytes  # the recorded ``data`` object, serialized compactly
    data: dict[str, Any]


def read_frames(path: Path) -> list[Frame]:
    """Return the frames of a recording; raise ValueError naming the first bad line."""
    frames: list[Frame] = []
    first_ts: float | None = None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or (lineno == 1 and " <-> " in line):
            continue
        ts: float | None = None
        head, sep, rest = line.partition(": ")
        if sep and not head.startswith("{"):
            try:
                ts = float(head)
                line = rest
            except ValueError:
                raise ValueError(f"{path}:{lineno}: bad time prefix {head!r}") from None
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
        if isinstance(obj, dict) and "stream" in obj and "data" in obj:
            stream, data = obj["stream"], obj["data"]
        elif isinstance(obj, dict) and obj.get("e") in _RAW_STREAM and "s" in obj:
            stream, data = f"{obj['s'].lower()}@{_RAW_STREAM[obj['e']]}", obj
        else:
            continue  # control replies and unknown shapes are not market data
        if ts is None:
            ts = (frames[-1].offset_s + (first_ts or 0.0)) if frames else 0.0
        if first_ts is None:
            first_ts = ts
        frames.append(Frame(ts - first_ts, stream, orjson.dumps(data), data))
    return frames


class Replayer:
    """Publish ``frames`` on ``sink`` and feed them to ``model``'s ledgers and books."""

    def __init__(
        self,
        frames: list[Frame],
        model: MarketModel,
        sink: Sink,
        *,
        speed: float = 1.0,
        flush: Callable[[], None] = lambda: None,
        on_book: Callable[[str], None] | None = None,
    ) -> None:
        self.frames = frames
        self.model = model
        self.sink = sink
        self.speed = speed
        self.flush = flush
        self.on_book = on_book  # the trading engine, told after each replayed book change
        self.sent = 0
        self.recorded_trades = 0
        self.unknown_symbols: set[str] = set()
        self.running = False

    async def run(self) -> None:
        """Play every frame once, at the recorded pace / speed."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.running = True
        log.info("replay started: %d frames at speed %s", len(self.frames), self.speed)
        try:
            for n, frame in enumerate(self.frames):
                if self.speed > 0:
                    delay = start + frame.offset_s / self.speed - loop.time()
                    if delay > 0:
                        self.flush()
                        await asyncio.sleep(delay)
                elif n % 200 == 0:
                    self.flush()
                    await asyncio.sleep(0)
                self.sink.publish(frame.stream, frame.payload)
                self.feed(frame.data)
                self.sent += 1
            self.flush()
        finally:
            self.running = False
        log.info("replay finished: %d frames, %d aggTrades", self.sent, self.recorded_trades)

    def feed(self, data: dict[str, Any]) -> None:
        """Record what a frame tells about the market (aggTrades, best bid/ask)."""
        event = data.get("e")
        symbol = data.get("s")
        if event not in ("aggTrade", "bookTicker") or not isinstance(symbol, str):
            return
        i = self.model.index.get(symbol)
        if i is None:
            self.unknown_symbols.add(symbol)
            return
        inst = self.model.instruments[i]
        if event == "aggTrade":
            agg = AggTrade(
                a=data["a"],
                p=parse_units(data["p"], inst.price_dp),
                q=parse_units(data["q"], inst.qty_dp),
                f=data["f"],
                l=data["l"],
                T=data["T"],
                m=bool(data["m"]),
            )
            self.model.ledgers[i].record(agg)
            self.recorded_trades += 1
        else:
            m = self.model
            m.bid[i] = parse_units(data["b"], inst.price_dp)
            m.bid_qty[i] = parse_units(data["B"], inst.qty_dp)
            m.ask[i] = parse_units(data["a"], inst.price_dp)
            m.ask_qty[i] = parse_units(data["A"], inst.qty_dp)
            m.u[i] = data["u"]
            if self.on_book is not None:
                self.on_book(symbol)
