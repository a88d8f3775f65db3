"""Instruments: the symbol universe, its filters, and exact fixed-point formatting.

The default universe is the real exchangeInfo recorded from Binance on 2021-07-22 (122 symbols,
``data/exchange-info-2021-07-22.txt``). More symbols are synthesised by cloning a real symbol's
filters under a made-up name (``SIM0123USDT``) so tests can run "hundreds of symbols".

Prices and quantities are held as integers in units of ``10**-price_dp`` and ``10**-qty_dp``,
where the decimals are the symbol's ``pricePrecision`` and ``quantityPrecision``: that is how many
decimals Binance prints (``"p":"7.6080"`` for SUSHIUSDT, pricePrecision 4). Quote amounts are in
units of ``10**-(price_dp + qty_dp)``, so every sum is exact and no float is ever involved.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

DATA_FILE = Path(__file__).parent / "data" / "exchange-info-2021-07-22.txt"
PERPETUAL_DELIVERY_MS = 4133404800000  # what Binance reports as deliveryDate of every perpetual
MARK_DP = 8  # markPrice payloads print 8 decimals ("p":"11794.15000000")


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable perpetual: its exchangeInfo entry and its grids in integer units."""

    symbol: str
    stream_prefix: str  # lowercase symbol as used in stream names
    price_dp: int
    qty_dp: int
    tick: int  # tickSize in price units
    step: int  # stepSize in qty units
    min_qty: int
    max_qty: int  # MARKET_LOT_SIZE maxQty: no simulated taker order is bigger
    start_price: int  # price units, on the tick grid
    info: dict[str, Any]  # the exchangeInfo symbol dict, as served

    @property
    def quote_dp(self) -> int:
        return self.price_dp + self.qty_dp

    def price_str(self, units: int) -> str:
        return fmt_units(units, self.price_dp)

    def qty_str(self, units: int) -> str:
        return fmt_units(units, self.qty_dp)

    def quote_str(self, units: int) -> str:
        return fmt_units(units, self.price_dp + self.qty_dp)

    def price_decimal(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.price_dp)

    def qty_decimal(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.qty_dp)


def fmt_units(units: int, dp: int) -> str:
    """Return ``units * 10**-dp`` as Binance prints it: ``fmt_units(76080, 4) == "7.6080"``."""
    if dp == 0:
        return str(units)
    if units < 0:
        return "-" + fmt_units(-units, dp)
    s = str(units).rjust(dp + 1, "0")
    return f"{s[:-dp]}.{s[-dp:]}"


def parse_units(text: str, dp: int) -> int:
    """Return the decimal string ``text`` in units of ``10**-dp``; raise ValueError if it is finer.

    >>> parse_units("7.608", 4)
    76080
    """
    value = Decimal(text).scaleb(dp)
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} has more than {dp} decimals")
    return int(value)


def load_exchange_info(path: Path = DATA_FILE) -> dict[str, Any]:
    """Return the recorded exchangeInfo response (line 1 is ``<url> -> <time>: <json>``)."""
    first_line = path.read_text().splitlines()[0]
    info: dict[str, Any] = orjson.loads(first_line.split(": ", 1)[1])
    return info


def _filters(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in info["filters"]}


def _to_units(text: str, dp: int) -> int:
    return int(Decimal(text).scaleb(dp).to_integral_value())


def build_instrument(info: dict[str, Any], rng: random.Random) -> Instrument:
    """Return the Instrument for one exchangeInfo symbol dict (served as TRADING PERPETUAL)."""
    info = copy.deepcopy(info)
    # The product reads every TRADING perpetual; the recording also holds two quarterlies and one
    # PENDING_TRADING symbol, which the simulator serves as ordinary perpetuals.
    info["status"] = "TRADING"
    info["contractType"] = "PERPETUAL"
    info["deliveryDate"] = PERPETUAL_DELIVERY_MS
    f = _filters(info)
    pdp, qdp = int(info["pricePrecision"]), int(info["quantityPrecision"])
    tick = _to_units(f["PRICE_FILTER"]["tickSize"], pdp)
    step = _to_units(f["LOT_SIZE"]["stepSize"], qdp)
    min_qty = max(step, _to_units(f["LOT_SIZE"]["minQty"], qdp))
    lot = f.get("MARKET_LOT_SIZE", f["LOT_SIZE"])
    max_qty = max(min_qty, _to_units(lot["maxQty"], qdp))
    # exchangeInfo has no prices. In the 2021 recording minPrice sits at roughly 1/35..1/75 of the
    # traded price (BTC 556.72 vs ~32,000; SUSHI 0.143 vs 7.6), so start near minPrice * 50.
    min_price = _to_units(f["PRICE_FILTER"]["minPrice"], pdp)
    start = max(min_price * rng.randint(40, 60), tick * 500)
    start -= start % tick
    return Instrument(
        symbol=info["symbol"],
        stream_prefix=info["symbol"].lower(),
        price_dp=pdp,
        qty_dp=qdp,
        tick=tick,
        step=step,
        min_qty=min_qty,
        max_qty=max_qty,
        start_price=start,
        info=info,
    )


def load_instruments(
    *,
    count: int | None = None,
    symbols: Sequence[str] | None = None,
    seed: int = 0,
    path: Path = DATA_FILE,
) -> list[Instrument]:
    """Return the universe: every recorded symbol, the first ``count``, or the named ``symbols``.

    A ``count`` above the recorded 122 adds synthetic perpetuals ``SIM0001USDT``... whose filters
    are cloned from the recorded symbols in turn. A name in ``symbols`` that is not recorded is
    synthesised the same way. Raises ValueError for a non-positive count or a malformed name.
    """
    rng = random.Random(f"instruments:{seed}")  # noqa: S311  (seeded start prices)
    recorded = list(load_exchange_info(path)["symbols"])
    by_name = {s["symbol"]: s for s in recorded}
    if symbols is not None:
        infos = []
        for i, name in enumerate(symbols):
            if not name.isalnum() or not name.isupper():
                raise ValueError(f"{name!r} is not a symbol (uppercase letters and digits)")
            infos.append(by_name.get(name) or _clone(recorded[i % len(recorded)], name))
    elif count is None:
        infos = recorded
    else:
        if count < 1:
            raise ValueError("symbol count must be at least 1")
        infos = recorded[:count]
        infos += [
            _clone(recorded[i % len(recorded)], f"SIM{i + 1:04d}USDT")
            for i in range(count - len(infos))
        ]
    return [build_instrument(info, rng) for info in infos]


def _clone(template: dict[str, Any], name: str) -> dict[str, Any]:
    info = copy.deepcopy(template)
    base = name.removesuffix("USDT") or name
    info.update(symbol=name, pair=name, baseAsset=base, quoteAsset="USDT", marginAsset="USDT")
    return info


def exchange_info_symbols(instruments: Iterable[Instrument]) -> list[dict[str, Any]]:
    """Return the exchangeInfo ``symbols`` array for ``instruments``."""
    return [inst.info for inst in instruments]
