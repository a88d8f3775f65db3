// The order ticket's checks, as the user types: the same rules, in the same order, as the
// server's web/trade_checks.py (docs/execution.md "The order lifecycle"), so the reason shown
// here is the one the server would give. The server still checks everything: this only saves
// the user a round trip. Pure: no DOM, exact decimals (format.js Dec).

import { Dec } from "./format.js";

function fmt(dec) {
  return dec.toString();
}

/**
 * Check a ticket against a symbol's filters (`inst`: the strings of GET /api/instruments).
 *
 * form: {side, type, quantity, unit: "contracts"|"quote", price, tif, reduceOnly}
 * refPrice: the latest mid price (a string), or null when none is known.
 * Return {ok, problem, body}: `problem` names the first rule broken (null when none), `body` is
 * the command to send (quantity in contracts, decimal strings) when ok.
 */
export function checkTicket(form, inst, refPrice) {
  const no = (problem) => ({ ok: false, problem, body: null });
  if (!inst) return no("no trading filters for this symbol yet");
  if (form.side !== "BUY" && form.side !== "SELL") return no("choose buy or sell");
  const market = form.type === "MARKET";
  const tick = Dec.parse(inst.tick_size);
  const minPrice = Dec.parse(inst.min_price);
  const maxPrice = Dec.parse(inst.max_price);
  let price = null;
  if (!market) {
    price = Dec.parse(form.price);
    if (!price || price.units <= 0n) return no("enter a price greater than zero");
    if (!minPrice.isZero() && price.cmp(minPrice) < 0) return no(`price must be at least ${fmt(minPrice)}`);
    if (!maxPrice.isZero() && price.cmp(maxPrice) > 0) return no(`price must be at most ${fmt(maxPrice)}`);
    if (!price.sub(minPrice).multipleOf(tick)) {
      return no(`price must be a multiple of the tick size ${fmt(tick)}`);
    }
  }
  const step = Dec.parse(market ? inst.market_step_size : inst.step_size);
  const lo = Dec.parse(market ? inst.market_min_qty : inst.min_qty);
  const hi = Dec.parse(market ? inst.market_max_qty : inst.max_qty);
  let quantity = Dec.parse(form.quantity);
  if (!quantity || quantity.units <= 0n) return no("enter a quantity greater than zero");
  if (form.unit === "quote") {
    // USDT -> contracts at the order's price (the market's for a market order), rounded down
    // to the step: never more than the user asked to spend.
    const at = price ?? (refPrice ? Dec.parse(refPrice) : null);
    if (!at || at.isZero()) return no("no market price yet to convert USDT into contracts");
    const raw = quantity.div(at, 12);
    if (raw.cmp(lo) < 0 || raw.isZero()) {
      return no(`${form.quantity} USDT buys less than the minimum quantity ${fmt(lo)}`);
    }
    quantity = raw.sub(lo).floorTo(step).add(lo);
  }
  if (!lo.isZero() && quantity.cmp(lo) < 0) return no(`quantity must be at least ${fmt(lo)}`);
  if (!hi.isZero() && quantity.cmp(hi) > 0) return no(`quantity must be at most ${fmt(hi)}`);
  if (!quantity.sub(lo).multipleOf(step)) {
    return no(`quantity must be a multiple of the step size ${fmt(step)}`);
  }
  const minNotional = Dec.parse(inst.min_notional);
  const notionalPrice = price ?? (refPrice ? Dec.parse(refPrice) : null);
  if (!form.reduceOnly && !minNotional.isZero() && notionalPrice &&
      notionalPrice.mul(quantity).cmp(minNotional) < 0) {
    return no(`order value (price × quantity) must be at least ${fmt(minNotional)}`);
  }
  const ref = refPrice ? Dec.parse(refPrice) : null;
  if (price && ref) {
    const up = Dec.parse(inst.multiplier_up);
    const down = Dec.parse(inst.multiplier_down);
    if (form.side === "BUY" && !up.isZero() && price.cmp(ref.mul(up)) > 0) {
      return no(`a buy limit must be at most ${fmt(up)} × the market price`);
    }
    if (form.side === "SELL" && !down.isZero() && price.cmp(ref.mul(down)) < 0) {
      return no(`a sell limit must be at least ${fmt(down)} × the market price`);
    }
  }
  const body = { action: "place", side: form.side, type: form.type, quantity: fmt(quantity) };
  if (!market) {
    body.price = fmt(price);
    body.time_in_force = form.tif || "GTC";
  }
  if (form.reduceOnly) body.reduce_only = true;
  return { ok: true, problem: null, body };
}

/** A fresh request id: one per user intent, reused for every retry of that intent. */
export function newRequestId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "w-" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
