// The signed-in user's trading: account linking, the order ticket, positions, orders, fills and
// balances, live from the user's private `order_event`s (docs/execution.md).
//
// Once only: every command carries a request id chosen here, one per user intent (a confirmed
// ticket, a cancel click). A command whose answer was lost (timeout, reconnect) is sent again
// with the SAME id, which the server answers with the first one's outcome and never turns into a
// second order. Buttons are disabled while their command is in flight, so a double click is one
// intent.

import { formatPercent, formatPrice, formatQty, formatTime, decimals } from "./format.js";
import { request } from "./http.js";
import { checkTicket, newRequestId } from "./ticket.js";

const ACK_TIMEOUT_MS = 15_000; // longer than the server's own wait (TP_TRADE_REPLY_TIMEOUT_MS)
const MAX_HISTORY = 200;
const MAX_FILLS = 200;
const FINAL = new Set(["FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"]);

const $ = (id) => document.getElementById(id);

export class Trading {
  constructor({ session, socket, market, onChange, setStatus }) {
    this.session = session;
    this.socket = socket;
    this.market = market;
    this.onChange = onChange;
    this.setStatus = setStatus;
    this.account = null; // GET /api/account
    this.open = new Map(); // client_order_id -> order
    this.history = []; // final orders, newest first
    this.fills = []; // newest first
    this.inflight = new Map(); // request_id -> {payload, resolve} awaiting an outcome
    this.side = "BUY";
    this.pendingTicket = null; // {body, request_id}: confirmed once, retried with the same id
    this.dirty = true; // the tables must be rebuilt (else only live prices are refreshed)
    this.events = 0; // order events received (a reload that overlapped one reads again)
    this.reloading = false;
    this.reloadAgain = false;
    this.el = {
      panel: $("account-panel"),
      open: $("account-open"),
      dialog: $("account-dialog"),
      state: $("account-state"),
      flows: $("link-flows"),
      publicKey: $("public-key"),
      copyKey: $("copy-key"),
      linkOutcome: $("link-outcome"),
      unlink: $("unlink"),
      gate: $("ticket-gate"),
      ticket: $("ticket"),
      ticketSymbol: $("ticket-symbol"),
      price: $("ticket-price"),
      qty: $("ticket-qty"),
      unit: $("ticket-unit"),
      tif: $("ticket-tif"),
      tifRow: $("tif-row"),
      priceField: $("price-field"),
      reduce: $("ticket-reduce"),
      leverage: $("ticket-leverage"),
      check: $("ticket-check"),
      submit: $("ticket-submit"),
      confirm: $("ticket-confirm"),
      confirmText: $("ticket-confirm-text"),
      outcome: $("ticket-outcome"),
      positions: $("positions"),
      openOrders: $("open-orders"),
      historyRows: $("history"),
      fillRows: $("fills"),
      balances: $("balances"),
      cancelAll: $("cancel-all"),
      positionsCount: $("positions-count"),
      openCount: $("open-count"),
      confirmDialog: $("confirm-dialog"),
    };
    socket.on("order_event", (event) => this.#onEvent(event));
    this.#wire();
  }

  get signedIn() {
    return Boolean(this.session.address);
  }

  get linked() {
    return Boolean(this.account?.linked);
  }

  // ---- lifecycle (called by app.js) --------------------------------------------------------

  onIdentity() {
    this.account = null;
    this.open.clear();
    this.history = [];
    this.fills = [];
    this.el.open.hidden = !this.signedIn;
    this.dirty = true;
    if (this.signedIn) this.reload();
    this.onChange();
  }

  onConnect() {
    // Events sent while this socket was away are gone: read the state again, then retry any
    // command whose answer was lost (same request id: never a second order).
    if (!this.signedIn) return;
    this.reload();
    for (const [rid, entry] of this.inflight) if (entry.lost) this.#send(rid, entry);
  }

  onSelect(symbol) {
    this.dirty = true;
    this.el.ticketSymbol.textContent = symbol;
    this.el.price.value = "";
    this.#validate();
  }

  onInstrument() {
    const inst = this.market.instrument;
    if (inst) {
      this.el.price.placeholder = `tick ${inst.tick_size}`;
      this.el.qty.placeholder = `step ${inst.step_size}, min ${inst.min_qty}`;
    }
    this.#validate();
  }

  /** Read the account, orders and fills again. A read that overlapped an event may hold state
   *  older than the event's (the server stores, then emits): it is read once more. */
  async reload() {
    if (this.reloading) {
      this.reloadAgain = true;
      return;
    }
    this.reloading = true;
    try {
      for (let round = 0; round < 3; round += 1) {
        this.reloadAgain = false;
        const seen = this.events;
        await this.#load();
        if (!this.reloadAgain && seen === this.events) break;
      }
    } finally {
      this.reloading = false;
    }
  }

  async #load() {
    const token = this.session.token;
    if (!token) return;
    try {
      const [account, open, history, fills] = await Promise.all([
        request("/api/account", { token }),
        request("/api/orders/open", { token }),
        request("/api/orders/history?limit=100", { token }),
        request("/api/fills?limit=100", { token }),
      ]);
      this.account = account;
      this.open = new Map(open.orders.map((o) => [o.client_order_id, o]));
      this.history = history.orders.filter((o) => FINAL.has(o.status));
      this.fills = fills.fills;
    } catch (err) {
      this.setStatus(`account: ${err.message}`, "error");
    }
    this.dirty = true;
    this.onChange();
  }

  // ---- events ------------------------------------------------------------------------------

  #onEvent(event) {
    this.dirty = true;
    this.events += 1;
    const data = event?.data ?? {};
    if (event?.kind === "order") this.#applyOrder(data);
    else if (event?.kind === "fill") this.#applyFill(data);
    else if (event?.kind === "account") {
      if (this.account) Object.assign(this.account, { balances: data.balances, positions: data.positions });
    } else if (event?.kind === "result") this.#applyResult(event.request_id, data);
    this.onChange();
  }

  #applyOrder(order) {
    if (!order?.client_order_id) return;
    if (FINAL.has(order.status)) {
      this.open.delete(order.client_order_id);
      this.history = [order, ...this.history.filter((o) => o.client_order_id !== order.client_order_id)]
        .slice(0, MAX_HISTORY);
    } else {
      this.open.set(order.client_order_id, order);
    }
  }

  #applyFill(fill) {
    const key = `${fill.symbol}:${fill.trade_id}`;
    if (this.fills.some((f) => `${f.symbol}:${f.trade_id}` === key)) return;
    this.fills = [fill, ...this.fills].slice(0, MAX_FILLS);
  }

  #applyResult(rid, data) {
    if (data.order) this.#applyOrder(data.order);
    const entry = rid ? this.inflight.get(rid) : null;
    if (entry && data.ok !== null && data.ok !== undefined) {
      this.inflight.delete(rid);
      entry.done(data);
    }
    if (data.action === "link" || data.action === "unlink") this.reload();
  }

  // ---- commands ----------------------------------------------------------------------------

  /** Send a `trade` command once per request id; resolve with its outcome (ok true/false), or
   *  with {ok: null} when it is still unknown (the socket will bring it). */
  command(payload, rid = newRequestId()) {
    return new Promise((resolve) => {
      const entry = { payload: { ...payload, request_id: rid }, done: resolve, lost: false };
      this.inflight.set(rid, entry);
      this.#send(rid, entry);
    });
  }

  #send(rid, entry) {
    entry.lost = false;
    this.socket
      .timeout(ACK_TIMEOUT_MS)
      .emitWithAck("trade", entry.payload)
      .then((ack) => {
        if (ack?.ok === null || ack?.ok === undefined) {
          // Queued: the outcome arrives as a `result` event. Show where it stands meanwhile.
          if (ack?.order) this.#applyOrder(ack.order);
          this.dirty = true;
          entry.pending?.(ack);
          this.onChange();
          return;
        }
        if (ack.order) this.#applyOrder(ack.order);
        this.dirty = true;
        this.inflight.delete(rid);
        entry.done(ack);
        this.onChange();
      })
      .catch(() => {
        // No answer (disconnected, or slow): sent again with the same id on reconnect.
        entry.lost = true;
        entry.pending?.({ ok: null, message: "no answer yet: will ask again when reconnected" });
        if (this.socket.connected) setTimeout(() => entry.lost && this.#send(rid, entry), 1000);
      });
  }

  async confirm(text) {
    const d = this.el.confirmDialog;
    $("confirm-text").textContent = text;
    d.showModal();
    return new Promise((resolve) => {
      const done = (yes) => {
        $("confirm-yes").onclick = null;
        $("confirm-no").onclick = null;
        d.close();
        resolve(yes);
      };
      $("confirm-yes").onclick = () => done(true);
      $("confirm-no").onclick = () => done(false);
      d.oncancel = () => done(false);
    });
  }

  // ---- the ticket --------------------------------------------------------------------------

  #form() {
    return {
      side: this.side,
      type: this.#type(),
      quantity: this.el.qty.value,
      unit: this.el.unit.value,
      price: this.el.price.value,
      tif: this.el.tif.value,
      reduceOnly: this.el.reduce.checked,
    };
  }

  #type() {
    return this.el.ticket.querySelector("input[name=type]:checked").value;
  }

  #refPrice() {
    const book = this.market.book;
    if (book?.bid && book?.ask) {
      const mid = (Number(book.bid) + Number(book.ask)) / 2;
      return String(mid);
    }
    let last = null;
    for (const c of this.market.candles.values()) if (!last || c.open_time > last.open_time) last = c;
    return last?.close ?? null;
  }

  #validate() {
    const market = this.#type() === "MARKET";
    this.el.priceField.hidden = market;
    this.el.tifRow.hidden = market;
    if (!this.el.qty.value && !this.el.price.value) {
      this.el.check.textContent = "";
      this.el.check.dataset.ok = "";
      return null;
    }
    const result = checkTicket(this.#form(), this.market.instrument, this.#refPrice());
    this.el.check.textContent = result.ok ? this.#summary(result.body) : result.problem;
    this.el.check.dataset.ok = String(result.ok);
    return result;
  }

  #summary(body) {
    const symbol = this.market.selection?.symbol ?? "";
    const price = body.price ?? this.#refPrice();
    const value = price ? Number(price) * Number(body.quantity) : null;
    const what = `${body.side === "BUY" ? "Buy" : "Sell"} ${body.quantity} ${symbol}`;
    const at = body.type === "MARKET" ? "at market" : `at ${body.price} (${body.time_in_force})`;
    const worth = value ? ` ≈ ${formatQty(value)} USDT` : "";
    return `${what} ${at}${worth}${body.reduce_only ? ", reduce only" : ""}`;
  }

  #wire() {
    const e = this.el;
    for (const b of e.ticket.querySelectorAll(".sides button")) {
      b.addEventListener("click", () => {
        this.side = b.dataset.side;
        for (const o of e.ticket.querySelectorAll(".sides button")) {
          o.setAttribute("aria-pressed", String(o === b));
        }
        e.submit.textContent = this.side === "BUY" ? "Buy / Long" : "Sell / Short";
        e.submit.className = `submit ${this.side === "BUY" ? "buy" : "sell"}`;
        this.#validate();
      });
    }
    for (const input of [e.price, e.qty, e.unit, e.tif, e.reduce, ...e.ticket.querySelectorAll("input[name=type]")]) {
      input.addEventListener("input", () => {
        e.confirm.hidden = true;
        this.pendingTicket = null;
        this.#validate();
      });
    }
    e.ticket.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const result = this.#validate();
      if (!result?.ok) {
        e.check.textContent = result?.problem ?? "enter a quantity";
        e.check.dataset.ok = "false";
        return;
      }
      const symbol = this.market.selection.symbol;
      // One intent, one id: confirming twice, or retrying after a lost answer, reuses it.
      this.pendingTicket = { body: { ...result.body, symbol }, request_id: newRequestId() };
      e.confirmText.textContent = `${this.#summary(result.body)}?`;
      e.confirm.hidden = false;
      e.submit.hidden = true;
      $("ticket-confirm-yes").focus();
    });
    $("ticket-confirm-no").addEventListener("click", () => {
      e.confirm.hidden = true;
      e.submit.hidden = false;
      this.pendingTicket = null;
    });
    $("ticket-confirm-yes").addEventListener("click", async () => {
      const pending = this.pendingTicket;
      if (!pending) return;
      const yes = $("ticket-confirm-yes");
      yes.disabled = true;
      e.outcome.textContent = "sending…";
      e.outcome.dataset.state = "pending";
      const entry = this.command(pending.body, pending.request_id);
      const current = this.inflight.get(pending.request_id);
      if (current) current.pending = (ack) => this.#showOutcome(ack, true);
      const outcome = await entry;
      yes.disabled = false;
      e.confirm.hidden = true;
      e.submit.hidden = false;
      this.pendingTicket = null;
      this.#showOutcome(outcome, false);
    });
    $("ticket-leverage-set").addEventListener("click", async (ev) => {
      const symbol = this.market.selection?.symbol;
      const value = Number(e.leverage.value);
      if (!symbol || !Number.isInteger(value) || value < 1 || value > 125) {
        e.outcome.textContent = "leverage must be a whole number from 1 to 125";
        e.outcome.dataset.state = "error";
        return;
      }
      ev.target.disabled = true;
      const outcome = await this.command({ action: "leverage", symbol, leverage: value });
      ev.target.disabled = false;
      this.#showOutcome(outcome, false, `leverage ${value}×`);
    });
    e.cancelAll.addEventListener("click", async () => {
      const symbol = this.market.selection?.symbol;
      if (!symbol || !(await this.confirm(`Cancel every open ${symbol} order?`))) return;
      e.cancelAll.disabled = true;
      const outcome = await this.command({ action: "cancel_all", symbol });
      e.cancelAll.disabled = false;
      this.#showOutcome(outcome, false, `cancel all ${symbol}`);
    });
    for (const tab of e.panel.querySelectorAll("[role=tab]")) {
      tab.addEventListener("click", () => {
        for (const t of e.panel.querySelectorAll("[role=tab]")) t.setAttribute("aria-selected", String(t === tab));
        for (const pane of e.panel.querySelectorAll(".tab")) pane.hidden = pane.dataset.tab !== tab.dataset.tab;
      });
    }
    this.#wireAccountDialog();
  }

  #showOutcome(outcome, interim, what = null) {
    const e = this.el;
    const order = outcome?.order;
    let text;
    if (outcome?.ok === false) {
      text = `refused: ${outcome.message ?? outcome.error}`;
    } else if (order) {
      const filled = Number(order.executed_qty) ? `, filled ${order.executed_qty} at ${order.avg_price}` : "";
      text = `${order.side} ${order.quantity} ${order.symbol}: ${order.status.toLowerCase()}${filled}`;
    } else if (outcome?.ok) {
      text = `${what ?? "done"}: done`;
    } else {
      text = outcome?.message ?? "sent: waiting for the exchange";
    }
    e.outcome.textContent = text;
    e.outcome.dataset.state = outcome?.ok === false ? "error" : outcome?.ok ? "ok" : "pending";
    if (!interim && outcome?.ok !== null) this.reload();
  }

  // ---- account linking ---------------------------------------------------------------------

  #wireAccountDialog() {
    const e = this.el;
    e.open.addEventListener("click", () => {
      this.#renderAccount();
      e.dialog.showModal();
    });
    for (const tab of e.flows.querySelectorAll("[role=tab]")) {
      tab.addEventListener("click", () => {
        for (const t of e.flows.querySelectorAll("[role=tab]")) t.setAttribute("aria-selected", String(t === tab));
        for (const f of e.flows.querySelectorAll(".flow")) f.hidden = f.dataset.flow !== tab.dataset.flow;
      });
    }
    $("keypair").addEventListener("click", async (ev) => {
      ev.target.disabled = true;
      try {
        const answer = await request("/api/account/keypair", { method: "POST", body: {}, token: this.session.token });
        this.account = { ...(this.account ?? {}), public_key: answer.public_key, status: answer.status, kind: "ed25519" };
        this.#say("key pair generated: register the public key on Binance, then link it");
      } catch (err) {
        this.#say(err.message, "error");
      } finally {
        ev.target.disabled = false;
      }
      this.#renderAccount();
    });
    e.copyKey.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(e.publicKey.textContent);
        this.#say("public key copied");
      } catch {
        // no clipboard permission: select it for a manual copy
        getSelection().selectAllChildren(e.publicKey);
        this.#say("press Ctrl+C to copy the selected key");
      }
    });
    $("link-ed").addEventListener("click", (ev) =>
      this.#link(ev.target, { kind: "ed25519", api_key: $("ed-api-key").value.trim() }),
    );
    $("link-hmac").addEventListener("click", (ev) => {
      const secret = $("hmac-secret");
      this.#link(ev.target, { kind: "hmac", api_key: $("hmac-api-key").value.trim(), secret: secret.value.trim() });
      secret.value = ""; // sent once; not kept in the page
    });
    e.unlink.addEventListener("click", async () => {
      if (!(await this.confirm("Unlink this Binance account? Its key is deleted from the server."))) return;
      e.unlink.disabled = true;
      try {
        await request("/api/account", { method: "DELETE", body: { request_id: newRequestId() }, token: this.session.token });
        this.#say("unlinked: the key was deleted");
      } catch (err) {
        this.#say(err.message, "error");
      } finally {
        e.unlink.disabled = false;
      }
      await this.reload();
      this.#renderAccount();
    });
  }

  async #link(button, body) {
    button.disabled = true;
    this.#say("checking the key with the exchange…", "pending");
    const rid = newRequestId();
    let answer;
    try {
      answer = await request("/api/account/link", { method: "POST", body: { ...body, request_id: rid }, token: this.session.token });
    } catch (err) {
      answer = { ok: false, message: err.detail ?? err.message };
    }
    if (answer.ok === null) {
      // Still checking (the exchange is slow or our request budget is spent): the outcome
      // arrives on the socket as a `result` event.
      answer = await new Promise((resolve) => {
        this.inflight.set(rid, { done: resolve, payload: null });
        setTimeout(() => {
          if (this.inflight.delete(rid)) resolve({ ok: false, message: "no outcome within a minute: see the account's status" });
        }, 60_000);
      });
    }
    button.disabled = false;
    if (answer.ok) this.#say("linked: you can trade", "ok");
    else this.#say(`not linked: ${answer.message ?? answer.error}`, "error");
    await this.reload();
    this.#renderAccount();
  }

  #say(text, state = "ok") {
    this.el.linkOutcome.textContent = text;
    this.el.linkOutcome.dataset.state = state;
  }

  #renderAccount() {
    const e = this.el;
    const a = this.account;
    const linked = Boolean(a?.linked);
    e.state.textContent = linked
      ? `Linked: ${a.kind === "ed25519" ? "server-held Ed25519 key" : "HMAC key"} ${a.fingerprint}`
      : a?.status === "verifying"
        ? "Checking the key with the exchange…"
        : "No account linked.";
    e.state.dataset.linked = String(linked);
    e.flows.hidden = linked;
    e.unlink.hidden = !linked && !a?.public_key;
    const pem = a?.public_key ?? "";
    e.publicKey.textContent = pem;
    e.publicKey.hidden = !pem;
    e.copyKey.hidden = !pem;
  }

  // ---- rendering ---------------------------------------------------------------------------

  render() {
    const e = this.el;
    const linked = this.linked;
    e.panel.hidden = !this.signedIn;
    e.ticket.hidden = !linked;
    e.gate.hidden = linked;
    e.gate.textContent = !this.signedIn
      ? "Sign in and link a Binance account to trade."
      : this.account === null
        ? "Loading your account…"
        : "Link a Binance account to trade: Account, at the top.";
    if (!this.signedIn) return;
    if (!this.dirty) {
      this.#refreshPrices(); // a market tick: only the PnL moves; buttons stay put under the mouse
      return;
    }
    this.dirty = false;
    if (e.dialog.open) this.#renderAccount();
    this.#renderPositions();
    this.#renderOpenOrders();
    this.#renderHistory();
    this.#renderFills();
    this.#renderBalances();
  }

  #precision(symbol) {
    return symbol === this.market.selection?.symbol && this.market.instrument
      ? decimals(this.market.instrument.tick_size)
      : 2;
  }

  /** The price the PnL is valued at: the mark price, as the exchange values it (live from the
   *  mark stream for the selected symbol, else from the last account read), the last trade
   *  price while the selected symbol has no mark yet. */
  #livePrice(symbol, position) {
    if (symbol === this.market.selection?.symbol) {
      if (this.market.mark?.mark) return { price: Number(this.market.mark.mark), source: "mark" };
      let last = null;
      for (const c of this.market.candles.values()) if (!last || c.open_time > last.open_time) last = c;
      if (last) return { price: Number(last.close), source: "last" };
    }
    const mark = Number(position.mark_price);
    return mark ? { price: mark, source: "mark" } : null;
  }

  #renderPositions() {
    const rows = [];
    for (const [symbol, p] of Object.entries(this.account?.positions ?? {})) {
      const amount = Number(p.amount);
      if (!amount) continue;
      const f = this.#positionFigures(symbol, p);
      const prec = this.#precision(symbol);
      const tr = cells([
        symbol,
        `${amount > 0 ? "Long" : "Short"} ${formatQty(Math.abs(amount))}`,
        formatPrice(p.entry_price, prec),
        f.mark,
        f.pnlText,
        Number(p.liquidation_price) ? formatPrice(p.liquidation_price, prec) : "–",
        "",
      ]);
      tr.dataset.symbol = symbol;
      tr.dataset.amount = p.amount;
      tr.cells[1].className = amount > 0 ? "up" : "down";
      tr.cells[4].className = f.pnl >= 0 ? "up" : "down";
      tr.cells[4].dataset.pnl = String(f.pnl);
      const close = button("Close", async (b) => {
        if (!(await this.confirm(`Close the ${symbol} position (${p.amount}) at market?`))) return;
        b.disabled = true;
        const outcome = await this.command({ action: "close", symbol });
        b.disabled = false;
        this.#showOutcome(outcome, false, `close ${symbol}`);
      });
      close.className = "danger";
      tr.cells[6].append(close);
      rows.push(tr);
    }
    this.el.positions.replaceChildren(...(rows.length ? rows : [emptyRow(7, "No open positions")]));
    this.el.positionsCount.textContent = rows.length ? `(${rows.length})` : "";
  }

  #positionFigures(symbol, p) {
    const amount = Number(p.amount);
    const entry = Number(p.entry_price);
    const live = this.#livePrice(symbol, p);
    const pnl = live ? amount * (live.price - entry) : Number(p.unrealized_pnl);
    const margin = Math.abs(amount * entry) / (Number(p.leverage) || 1);
    const prec = this.#precision(symbol);
    return {
      mark: live ? `${formatPrice(live.price, prec)}${live.source === "last" ? " (last)" : ""}` : "–",
      pnl,
      pnlText: `${pnl >= 0 ? "+" : ""}${pnl.toFixed(2)} USDT (${formatPercent(margin ? (pnl / margin) * 100 : 0)})`,
    };
  }

  #refreshPrices() {
    for (const tr of this.el.positions.querySelectorAll("tr[data-symbol]")) {
      const p = this.account?.positions?.[tr.dataset.symbol];
      if (!p) continue;
      const f = this.#positionFigures(tr.dataset.symbol, p);
      tr.cells[3].textContent = f.mark;
      tr.cells[4].textContent = f.pnlText;
      tr.cells[4].className = f.pnl >= 0 ? "up" : "down";
      tr.cells[4].dataset.pnl = String(f.pnl);
    }
  }

  #renderOpenOrders() {
    const orders = [...this.open.values()].sort((a, b) => (b.created_ms || b.update_ms) - (a.created_ms || a.update_ms));
    const rows = orders.map((o) => {
      const tr = cells([
        formatTime(o.created_ms || o.update_ms, false).slice(5),
        o.symbol + (o.external ? " (external)" : ""),
        o.side,
        o.order_type + (o.reduce_only ? " RO" : ""),
        o.order_type === "MARKET" ? "market" : formatPrice(o.price, this.#precision(o.symbol)),
        `${o.executed_qty} / ${o.quantity}`,
        o.status,
        "",
      ]);
      tr.dataset.clientOrderId = o.client_order_id;
      tr.dataset.status = o.status;
      tr.cells[2].className = o.side === "BUY" ? "up" : "down";
      if (!["PENDING", "SENDING", "UNKNOWN"].includes(o.status)) {
        tr.cells[7].append(
          button("Cancel", async (b) => {
            b.disabled = true;
            const outcome = await this.command({ action: "cancel", symbol: o.symbol, client_order_id: o.client_order_id });
            b.disabled = false;
            this.#showOutcome(outcome, false, "cancel");
          }),
        );
      }
      return tr;
    });
    this.el.openOrders.replaceChildren(...(rows.length ? rows : [emptyRow(8, "No open orders")]));
    this.el.openCount.textContent = rows.length ? `(${rows.length})` : "";
    this.el.cancelAll.hidden = !orders.some((o) => o.symbol === this.market.selection?.symbol);
  }

  #renderHistory() {
    const rows = this.history.slice(0, 100).map((o) => {
      const tr = cells([
        formatTime(o.update_ms || o.created_ms, false).slice(5),
        o.symbol,
        o.side,
        o.order_type,
        o.order_type === "MARKET" ? "market" : o.price,
        Number(o.avg_price) ? o.avg_price : "–",
        `${o.executed_qty} / ${o.quantity}`,
        o.status + (o.error ? `: ${o.error}` : ""),
      ]);
      tr.dataset.clientOrderId = o.client_order_id;
      tr.dataset.status = o.status;
      tr.cells[2].className = o.side === "BUY" ? "up" : "down";
      return tr;
    });
    this.el.historyRows.replaceChildren(...(rows.length ? rows : [emptyRow(8, "No orders yet")]));
  }

  #renderFills() {
    const rows = this.fills.slice(0, 100).map((f) => {
      const tr = cells([
        formatTime(f.time, false).slice(5),
        f.symbol,
        f.side,
        f.price,
        f.qty,
        `${f.commission} ${f.commission_asset}`,
        f.realized_pnl,
      ]);
      tr.cells[2].className = f.side === "BUY" ? "up" : "down";
      return tr;
    });
    this.el.fillRows.replaceChildren(...(rows.length ? rows : [emptyRow(7, "No fills yet")]));
  }

  #renderBalances() {
    const rows = Object.entries(this.account?.balances ?? {}).map(([asset, b]) => {
      const tr = cells([asset, b.wallet, b.available, b.unrealized_pnl, b.margin_balance]);
      tr.dataset.asset = asset;
      return tr;
    });
    this.el.balances.replaceChildren(...(rows.length ? rows : [emptyRow(5, "No balances yet")]));
  }
}

function cells(texts) {
  const tr = document.createElement("tr");
  for (const text of texts) {
    const td = document.createElement("td");
    td.textContent = text ?? "";
    tr.append(td);
  }
  return tr;
}

function emptyRow(span, text) {
  const tr = document.createElement("tr");
  const td = document.createElement("td");
  td.colSpan = span;
  td.className = "empty";
  td.textContent = text;
  tr.append(td);
  return tr;
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", () => onClick(b));
  return b;
}
