// The trader's page: one (symbol, timeframe) at a time, fed by Socket.IO, and the user's trading.
// The contract (REST, SIWE, events and JSON shapes) is docs/architecture.md, "Web", and
// docs/execution.md for trading.
//
// Rooms: c:SYM:tf (candles), s:SYM:tf (signals), b:SYM (book). `snapshot` fills a room once per
// subscribe, `md` then carries what changed; both merge as "latest value per key wins" (candles
// by open_time, signals by name). Older candles come from GET /api/candles?before= as the user
// scrolls back; the page keeps at most MAX_CANDLES per series. A resubscription (a reconnect, or
// a room the server lists in `md.resync`) sends `since`, so that the snapshot also brings the
// repairs of held candles made meanwhile (docs/architecture.md, "Socket.IO").

import { Session } from "./auth.js";
import { CandleChart } from "./chart.js";
import { formatPercent, formatPrice, formatQty, formatTime, formatValue, decimals } from "./format.js";
import { request } from "./http.js";
import { Trading } from "./trading.js";

const MAX_CANDLES = 5000; // per series, live and scrolled-back history together
const HISTORY_PAGE = 500;
const MAX_SIGNALS = 200;
const TABLE_CANDLES = 20;
const ACK_TIMEOUT_MS = 10_000;
const KICK_RECONNECT_MS = 3000; // after `kicked`: the server sends whole rooms on the way back
const SUBSCRIBE_RETRY_MS = 2000; // after `unavailable` (Redis or the server's pump not ready)
const UNIVERSE_RETRY_MS = 2000;
const AGE_TICK_MS = 500;
const STATS_EVERY_MS = 30_000;
const ANONYMOUS_REFUSED = new Set(["invalid_token", "unauthorized"]);
const SIGN_IN_PLEASE = "sign in to see market data";
const KINDS = ["candles", "signals", "book", "mark", "trades"];
const AGE_KINDS = ["candles", "signals", "book", "trades"]; // the panels that show their data's age
const TAPE_TRADES = 50;
const DEFAULT_SYMBOLS = ["BTCUSDT", "ETHUSDT"]; // the busiest markets, when served
const FAVOURITES_KEY = "tp.favourites";
const PREFS_KEY = "tp.prefs";

const $ = (id) => document.getElementById(id);
const ui = {
  symbol: $("symbol"),
  search: $("symbol-search"),
  symbolList: $("symbol-list"),
  favourite: $("favourite"),
  favourites: $("favourites"),
  timeframe: $("timeframe"),
  status: $("status"),
  address: $("address"),
  signin: $("signin"),
  logout: $("logout"),
  reconnect: $("reconnect"),
  candles: $("candles"),
  signals: $("signals"),
  markerSignal: $("marker-signal"),
  chartNote: $("chart-note"),
  chartTitle: $("chart-title"),
  utc: $("utc"),
  bid: $("bid"),
  bidQty: $("bid-qty"),
  ask: $("ask"),
  askQty: $("ask-qty"),
  bookTime: $("book-time"),
  last: $("last"),
  mark: $("mark"),
  funding: $("funding"),
  change24h: $("change-24h"),
  high24h: $("high-24h"),
  low24h: $("low-24h"),
  volume24h: $("volume-24h"),
  tape: $("tape"),
  age: {
    candles: $("age-candles"),
    signals: $("age-signals"),
    book: $("age-book"),
    trades: $("age-trades"),
  },
};

const session = new Session();
const prefs = loadJson(PREFS_KEY, { utc: false, marker: null });

// What the page shows: the selected series, latest value per key.
const market = {
  universe: null, // {symbols, timeframes, signals}
  selection: null, // {symbol, timeframe}
  candles: new Map(), // open_time -> candle
  signals: new Map(), // signal name -> signal
  needs: {}, // signal name -> closed candles still missing (GET /api/signals/history)
  changes: {}, // signal name -> [closed values where the state changed]
  book: null,
  mark: null, // {mark, index, funding_rate, next_funding_time, time}
  trades: new Map(), // trade id -> {id, price, qty, side, time}: the tape, newest TAPE_TRADES
  instrument: null, // the selected symbol's filters (GET /api/instruments)
  fresh: { candles: null, signals: null, book: null, mark: null, trades: null }, // {at, t, receivedAt}
  olderBefore: undefined, // cursor of the next older page; null: none left
  loadingOlder: false,
  generation: 0, // bumped on every selection change: late answers for an old one are dropped
};

function loadJson(key, fallback) {
  try {
    return { ...fallback, ...JSON.parse(localStorage.getItem(key) ?? "null") };
  } catch {
    return fallback;
  }
}

function saveJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // private mode or full: preferences are a convenience
  }
}

// ---- status line ---------------------------------------------------------------------------

function setStatus(text, state) {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

// An ApiError already reads "code: message"; anything else is shown as it is.
function errorText(err) {
  return err?.message ?? String(err);
}

function describe(kind, data) {
  const reason = data?.reason ?? data?.error;
  const parts = [kind];
  if (reason) parts.push(reason);
  if (data?.message && data.message !== reason) parts.push(data.message);
  return parts.join(": ");
}

// ---- chart ---------------------------------------------------------------------------------

const chart = new CandleChart($("chart"), $("legend"), { onNeedOlder: loadOlder, utc: prefs.utc });
ui.utc.checked = prefs.utc;
ui.utc.addEventListener("change", () => {
  prefs.utc = ui.utc.checked;
  saveJson(PREFS_KEY, prefs);
  chart.setUtc(prefs.utc);
  scheduleRender();
});
let chartDirty = true; // the whole series must be handed to the chart again
let chartFit = true; // scroll to the newest bar on the next full draw

async function loadOlder() {
  const sel = market.selection;
  if (!sel || market.loadingOlder || market.olderBefore === null || market.candles.size === 0) return;
  if (market.candles.size >= MAX_CANDLES) return;
  const generation = market.generation;
  const oldest = Math.min(...market.candles.keys());
  const before = market.olderBefore ?? oldest;
  market.loadingOlder = true;
  try {
    const page = await request(
      `/api/candles?symbol=${sel.symbol}&timeframe=${sel.timeframe}&limit=${HISTORY_PAGE}&before=${before}`,
      { token: session.token },
    );
    if (generation !== market.generation) return;
    for (const candle of page.candles ?? []) {
      if (!market.candles.has(candle.open_time)) market.candles.set(candle.open_time, candle);
    }
    market.olderBefore = page.next_before ?? null;
    chartDirty = true;
    scheduleRender();
  } catch (err) {
    setStatus(`history: ${errorText(err)}`, "error");
  } finally {
    market.loadingOlder = false;
  }
}

// ---- socket --------------------------------------------------------------------------------

let connectedWith = null; // the token the current connection authenticated with, null if none
let notice = null; // what the server said just before disconnecting us
let afterServerDisconnect = null; // what to do once it has

const socket = io({
  transports: ["websocket"],
  autoConnect: false,
  // A function, so every (re)connection presents the token of the moment.
  auth: (cb) => {
    connectedWith = session.token;
    cb(session.token ? { token: session.token } : {});
  },
});

const trading = new Trading({ session, socket, market, onChange: scheduleRender, setStatus });

function reconnect() {
  ui.reconnect.hidden = true;
  socket.disconnect();
  socket.connect();
}

socket.on("connect", () => {
  connectedAt = Date.now();
  notice = null;
  afterServerDisconnect = null;
  ui.reconnect.hidden = true;
  setStatus("connected", "connected");
  subscribe(market.selection, null);
  trading.onConnect();
});

socket.on("disconnect", (reason) => {
  setStatus(`disconnected: ${notice ?? reason}`, "disconnected");
  // The client retries by itself after a lost transport, never after the server said goodbye.
  if (reason === "io server disconnect") {
    const next = afterServerDisconnect;
    afterServerDisconnect = null;
    if (next) next();
    else ui.reconnect.hidden = false;
  }
});

let originChecked = false;

socket.on("connect_error", (err) => {
  if (socket.active) {
    // The transport failed (server down, proxy, or an origin the server refuses: a browser
    // shows only "websocket error" for that, so ask the server once which it is).
    setStatus(`disconnected: ${err.message}`, "disconnected");
    if (!originChecked) {
      originChecked = true;
      explainRefusal();
    }
    return;
  }
  // Refused by the server: data is {"error", "message"}.
  const code = err.data?.error ?? err.message;
  const message = err.data?.message ?? err.message;
  if (!connectedWith && ANONYMOUS_REFUSED.has(code)) {
    setStatus(SIGN_IN_PLEASE, "signin");
    return;
  }
  if (connectedWith && code === "token_expired") {
    refreshThenConnect();
    return;
  }
  if (connectedWith) session.clear(); // revoked, or not a token this server takes
  setStatus(code === message ? code : `${code}: ${message}`, "error");
  ui.reconnect.hidden = false;
});

async function explainRefusal() {
  try {
    const site = await request("/api/site");
    if (site && !site.allowed) {
      socket.disconnect(); // retrying cannot help
      setStatus(
        `refused: this page's address ${site.here} is not one the server accepts; ` +
          `open ${site.origin} or add it to TP_WEB_ORIGINS`,
        "error",
      );
    }
  } catch {
    // the server is down: the socket's own retries say so
  }
}

socket.on("auth_expired", (data) => {
  notice = describe("auth_expired", data);
  setStatus(notice, "error");
  afterServerDisconnect = refreshThenConnect;
});

socket.on("auth_revoked", (data) => {
  notice = describe("auth_revoked", data);
  setStatus(notice, "error");
  session.clear();
  afterServerDisconnect = null; // stays down, reason shown: sign in again or reconnect
});

socket.on("kicked", (data) => {
  notice = describe("kicked", data);
  setStatus(notice, "error");
  afterServerDisconnect = () => setTimeout(() => socket.connect(), KICK_RECONNECT_MS);
});

socket.on("snapshot", (msg) => {
  const kind = kindOf(msg?.room);
  if (!kind) return; // a room left behind by a selection change
  if (kind === "candles" && msg.truncated && msg.candles?.length) {
    // It did not reach back to `since`: what is held before it is unchecked; scrolling back
    // reads it again.
    const first = Number(msg.candles[0].open_time);
    for (const t of [...market.candles.keys()]) if (t < first) market.candles.delete(t);
    market.olderBefore = undefined;
  }
  apply(kind, msg[kind], true);
  if (Number.isFinite(msg.at)) market.fresh[kind] = { at: msg.at, t: null, receivedAt: Date.now() };
  scheduleRender();
});

socket.on("md", (msg) => {
  const receivedAt = Date.now();
  for (const [room, update] of Object.entries(msg?.rooms ?? {})) {
    const kind = kindOf(room);
    if (!kind) continue;
    apply(kind, update?.data, false);
    if (Number.isFinite(update?.at)) market.fresh[kind] = { at: update.at, t: msg.t, receivedAt };
  }
  // Rooms whose repairs this connection may have missed: their snapshot since brings them.
  for (const room of msg?.resync ?? []) {
    const entry = payloadsOf(market.selection).find((p) => p.room === room);
    if (entry) sendSubscribe(entry.payload);
  }
  scheduleRender();
});

async function refreshThenConnect() {
  try {
    await session.refresh();
  } catch (err) {
    session.clear();
    setStatus(`session ended: ${errorText(err)}`, "error");
    ui.reconnect.hidden = false;
    return;
  }
  socket.connect();
}

// A refreshed token goes to the live connection; a new login reconnects instead (see signIn).
session.addEventListener("token", async ({ detail }) => {
  if (!socket.connected || !connectedWith) return;
  try {
    const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("reauth", { token: detail.token });
    if (ack?.ok) connectedWith = detail.token;
    else setStatus(`${ack?.error}: ${ack?.message}`, "error");
  } catch (err) {
    if (socket.connected) setStatus(`reauth: ${errorText(err)}`, "error");
  }
});

session.addEventListener("ended", ({ detail }) => {
  socket.disconnect(); // its token is about to be refused anyway; say why now
  setStatus(`session ended: ${detail.reason}`, "error");
  ui.reconnect.hidden = false;
});

session.addEventListener("change", () => {
  renderIdentity();
  trading.onIdentity();
});

// ---- subscriptions -------------------------------------------------------------------------

function roomsOf(sel) {
  if (!sel) return {};
  const { symbol, timeframe } = sel;
  return {
    candles: `c:${symbol}:${timeframe}`,
    signals: `s:${symbol}:${timeframe}`,
    book: `b:${symbol}`,
    mark: `m:${symbol}`,
    trades: `t:${symbol}`,
  };
}

function kindOf(room) {
  const rooms = roomsOf(market.selection);
  return KINDS.find((kind) => rooms[kind] === room) ?? null;
}

function payloadsOf(sel) {
  if (!sel) return [];
  const { symbol, timeframe } = sel;
  const rooms = roomsOf(sel);
  return [
    { room: rooms.candles, payload: { channel: "candles", symbol, timeframe } },
    { room: rooms.signals, payload: { channel: "signals", symbol, timeframe } },
    { room: rooms.book, payload: { channel: "book", symbol } },
    { room: rooms.mark, payload: { channel: "mark", symbol } },
    { room: rooms.trades, payload: { channel: "trades", symbol } },
  ];
}

// Send `event` for every room of `sel` that `other` does not share.
function sendEach(event, sel, other) {
  const keep = new Set(Object.values(roomsOf(other)));
  for (const { room, payload } of payloadsOf(sel)) {
    if (keep.has(room)) continue;
    if (event === "subscribe") sendSubscribe(payload);
    else send(event, payload);
  }
}

function send(event, payload) {
  socket
    .timeout(ACK_TIMEOUT_MS)
    .emitWithAck(event, payload)
    .then((ack) => {
      if (ack?.ok) return;
      if (event === "subscribe" && ack?.error === "unavailable") retrySubscribe(payload);
      else setStatus(`${ack?.error}: ${ack?.message}`, "error");
    })
    .catch((err) => {
      if (socket.connected) setStatus(`${event} ${payload.channel}: ${errorText(err)}`, "error");
    });
}

// A candles subscription while candles are held asks for the snapshot `since` the oldest held
// candle that may still change (the exchange's closed candles are final), else the newest held.
function sendSubscribe(payload) {
  if (payload.channel !== "candles" || market.candles.size === 0) return send("subscribe", payload);
  let since = null;
  let newest = null;
  for (const c of market.candles.values()) {
    if (newest === null || c.open_time > newest) newest = c.open_time;
    const final = c.closed && c.source === "exchange";
    if (!final && (since === null || c.open_time < since)) since = c.open_time;
  }
  send("subscribe", { ...payload, since: since ?? newest });
}

// The server asks to try again: do, if the room is still selected and the socket still up.
function retrySubscribe(payload) {
  const same = (p) =>
    p.channel === payload.channel && p.symbol === payload.symbol && p.timeframe === payload.timeframe;
  setTimeout(() => {
    const entry = payloadsOf(market.selection).find((p) => same(p.payload));
    if (entry && socket.connected) sendSubscribe(entry.payload);
  }, SUBSCRIBE_RETRY_MS);
}

function subscribe(sel, previous) {
  sendEach("subscribe", sel, previous);
}

function select(sel) {
  const previous = market.selection;
  if (previous?.symbol === sel.symbol && previous?.timeframe === sel.timeframe) return;
  market.selection = sel;
  market.generation += 1;
  const before = roomsOf(previous);
  const after = roomsOf(sel);
  if (before.candles !== after.candles) {
    market.candles.clear();
    market.olderBefore = undefined;
    chartDirty = true;
    chartFit = true;
  }
  if (before.signals !== after.signals) {
    market.signals.clear();
    market.needs = {};
    market.changes = {};
  }
  if (before.book !== after.book) market.book = null;
  if (before.mark !== after.mark) market.mark = null;
  if (before.trades !== after.trades) market.trades.clear();
  for (const kind of KINDS) if (before[kind] !== after[kind]) market.fresh[kind] = null;
  ui.symbol.value = sel.symbol;
  ui.search.value = sel.symbol;
  ui.timeframe.value = sel.timeframe;
  ui.chartTitle.textContent = `${sel.symbol} · ${sel.timeframe}`;
  document.title = `${sel.symbol} ${sel.timeframe} · tradepipe`;
  history.replaceState(null, "", `#${sel.symbol}/${sel.timeframe}`);
  if (socket.connected) {
    if (previous) sendEach("unsubscribe", previous, sel);
    subscribe(sel, previous);
  }
  if (previous?.symbol !== sel.symbol) {
    loadInstrument(sel.symbol);
    loadStats();
  }
  loadSignalHistory();
  renderFavourites();
  trading.onSelect(sel.symbol);
  scheduleRender();
}

// ---- merging -------------------------------------------------------------------------------

// A list of records from [...], a single record, or a {name: record} object.
function listOf(data, keyField) {
  if (Array.isArray(data)) return data;
  if (!data || typeof data !== "object") return [];
  if (keyField in data) return [data];
  return Object.entries(data).map(([key, value]) => ({ [keyField]: key, ...value }));
}

let tailUpdates = []; // candles to hand to the chart one by one (the live tail)

function apply(kind, data, snapshot) {
  if (kind === "candles") {
    let list = listOf(data, "open_time").map((c) => ({ ...c, open_time: Number(c.open_time) }));
    if (!snapshot) {
      // A repair older than every held candle is of a range not held (scrolling back reads it).
      const oldest = oldestHeld();
      list = list.filter((c) => c.open_time >= oldest);
    }
    for (const candle of list) market.candles.set(candle.open_time, candle);
    if (snapshot) chartDirty = true;
    else tailUpdates.push(...list);
    trimOldest(market.candles, MAX_CANDLES);
  } else if (kind === "signals") {
    // The room keys signals by (name, open_time): a late closed value for an older candle must not
    // hide the newer candle's provisional one.
    for (const signal of listOf(data, "signal")) {
      const shown = market.signals.get(signal.signal);
      if (!shown || !(Number(signal.open_time) < Number(shown.open_time))) {
        market.signals.set(signal.signal, signal);
      }
      if (!signal.provisional) noteClosedSignal(signal);
    }
    trimOldest(market.signals, MAX_SIGNALS);
  } else if (kind === "book" && data && typeof data === "object") {
    market.book = data;
  } else if (kind === "mark" && data && typeof data === "object") {
    market.mark = data;
  } else if (kind === "trades") {
    for (const trade of listOf(data, "id")) market.trades.set(Number(trade.id), trade);
    trimOldest(market.trades, TAPE_TRADES);
  }
}

// A closed value whose state differs from the last change known is a new marker.
function noteClosedSignal(signal) {
  const changes = (market.changes[signal.signal] ??= []);
  const last = changes[changes.length - 1];
  if (last && Number(last.open_time) >= Number(signal.open_time)) return;
  if (!last || last.state !== signal.state) {
    changes.push(signal);
    if (signal.signal === ui.markerSignal.value) markersDirty = true;
  }
  delete market.needs[signal.signal];
}

function oldestHeld() {
  let oldest = -Infinity;
  for (const t of market.candles.keys()) if (oldest === -Infinity || t < oldest) oldest = t;
  return oldest;
}

function trimOldest(map, bound) {
  if (map.size <= bound) return;
  const keys = [...map.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const key of keys.slice(0, map.size - bound)) map.delete(key);
  if (map === market.candles) chartDirty = true;
}

// ---- reference data for the selection ------------------------------------------------------

async function loadInstrument(symbol) {
  market.instrument = null;
  try {
    const { instruments } = await request(`/api/instruments?symbol=${symbol}`, { token: session.token });
    if (market.selection?.symbol !== symbol) return;
    market.instrument = instruments?.[symbol] ?? null;
    if (market.instrument) chart.setTickSize(market.instrument.tick_size);
    trading.onInstrument();
  } catch {
    // not tradable (or execution not running): the ticket says so
  }
}

let markersDirty = true;

async function loadSignalHistory() {
  const sel = market.selection;
  const generation = market.generation;
  try {
    const answer = await request(
      `/api/signals/history?symbol=${sel.symbol}&timeframe=${sel.timeframe}`,
      { token: session.token },
    );
    if (generation !== market.generation) return;
    market.needs = answer.needs ?? {};
    for (const [name, list] of Object.entries(answer.changes ?? {})) {
      // Live changes that arrived meanwhile are newer than the history: keep them after it.
      const live = (market.changes[name] ?? []).filter(
        (s) => !list.length || Number(s.open_time) > Number(list[list.length - 1].open_time),
      );
      market.changes[name] = [...list, ...live];
    }
    markersDirty = true;
    scheduleRender();
  } catch {
    // markers are extra: the table still shows the latest values
  }
}

// 24-hour figures from the hourly candles (the exchange's 24h ticker is a rolling window of the
// same trades; ours moves by the hour, and the label says "24h").
async function loadStats() {
  const sel = market.selection;
  if (!sel || !market.universe?.timeframes.includes("1h")) return;
  try {
    const page = await request(`/api/candles?symbol=${sel.symbol}&timeframe=1h&limit=25`, { token: session.token });
    if (market.selection?.symbol !== sel.symbol) return;
    const since = Date.now() - 24 * 3600_000;
    const day = (page.candles ?? []).filter((c) => Number(c.close_time) >= since);
    if (!day.length) return;
    const open = Number(day[0].open);
    const close = Number(day[day.length - 1].close);
    market.stats = {
      change: open ? (close / open - 1) * 100 : 0,
      high: Math.max(...day.map((c) => Number(c.high))),
      low: Math.min(...day.map((c) => Number(c.low))),
      volume: day.reduce((sum, c) => sum + Number(c.quote_volume), 0),
    };
    scheduleRender();
  } catch {
    market.stats = null;
  }
}

// ---- rendering -----------------------------------------------------------------------------

let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderChart();
    renderCandles();
    renderSignals();
    renderBook();
    renderTape();
    renderStats();
    trading.render();
  });
}

function sortedCandles() {
  return [...market.candles.values()].sort((a, b) => a.open_time - b.open_time);
}

function renderChart() {
  const updates = tailUpdates;
  tailUpdates = [];
  if (!chartDirty) {
    updates.sort((a, b) => a.open_time - b.open_time);
    for (const candle of updates) {
      if (!chart.update(candle)) {
        chartDirty = true;
        break;
      }
    }
  }
  if (chartDirty) {
    chartDirty = false;
    chart.setCandles(sortedCandles(), { fit: chartFit });
    chartFit = market.candles.size === 0;
  }
  if (markersDirty) {
    markersDirty = false;
    const name = ui.markerSignal.value;
    chart.setSignalMarkers(
      (market.changes[name] ?? []).map((s) => ({
        open_time: Number(s.open_time),
        state: s.state,
        text: `${name} ${s.state}`,
      })),
    );
  }
}

function row(cells, data) {
  const tr = document.createElement("tr");
  Object.assign(tr.dataset, data);
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text ?? "";
    tr.append(td);
  }
  return tr;
}

function renderCandles() {
  const p = decimals(market.instrument?.tick_size ?? "0.01");
  const rows = sortedCandles()
    .slice(-TABLE_CANDLES)
    .reverse()
    .map((c) => {
      const tr = row(
        [formatTime(c.open_time), c.open, c.high, c.low, c.close, c.volume, c.closed ? "yes" : "no", c.source],
        {
          openTime: String(c.open_time),
          close: String(c.close),
          closed: String(Boolean(c.closed)),
          source: String(c.source ?? ""),
        },
      );
      tr.title = `${formatPrice(c.close, p)}`;
      tr.className = Number(c.close) >= Number(c.open) ? "up" : "down";
      return tr;
    });
  ui.candles.replaceChildren(...rows);
}

const STATE_CLASS = { long: "up", short: "down" };

function renderSignals() {
  const names = market.universe?.signals ?? [];
  const rows = [];
  for (const name of names) {
    const s = market.signals.get(name);
    if (!s) {
      const needs = market.needs[name];
      const tf = market.selection?.timeframe ?? "";
      const text =
        needs > 0
          ? `needs ${needs} more ${tf} candles`
          : needs === 0
            ? "computing…"
            : needs === null
              ? `not computed on ${tf}`
              : "no value yet";
      const tr = row(["–", name, text, ""], { signal: name, state: "", waiting: "true" });
      tr.cells[2].colSpan = 2;
      tr.cells[3].remove();
      tr.className = "waiting";
      rows.push(tr);
      continue;
    }
    const state = String(s.state);
    const tr = row(
      [state, name, formatValue(s.value), s.provisional ? "open candle" : formatTime(s.open_time, prefs.utc).slice(5, 16)],
      { signal: name, state, provisional: String(Boolean(s.provisional)) },
    );
    tr.cells[0].className = `state ${STATE_CLASS[state] ?? "flat"}`;
    tr.cells[0].title = s.provisional ? "provisional: the candle is still open" : "closed candle";
    if (s.provisional) tr.cells[0].textContent = `${state}*`;
    tr.cells[2].title = String(s.value);
    tr.cells[3].title = `computed ${formatTime(s.computed_at, prefs.utc)}`;
    rows.push(tr);
  }
  ui.signals.replaceChildren(...rows);
}

function renderBook() {
  const book = market.book;
  const p = decimals(market.instrument?.tick_size ?? book?.bid ?? "0.01");
  ui.bid.textContent = book ? formatPrice(book.bid, p) : "–";
  ui.bidQty.textContent = book ? formatQty(book.bid_qty) : "";
  ui.ask.textContent = book ? formatPrice(book.ask, p) : "–";
  ui.askQty.textContent = book ? formatQty(book.ask_qty) : "";
  ui.bid.dataset.value = book?.bid ?? "";
  ui.ask.dataset.value = book?.ask ?? "";
  ui.bookTime.textContent = formatTime(book?.time, prefs.utc);
}

function renderTape() {
  const p = decimals(market.instrument?.tick_size ?? "0.01");
  const trades = [...market.trades.values()].sort((a, b) => b.id - a.id);
  ui.tape.replaceChildren(
    ...trades.map((t) => {
      const tr = row([formatTime(t.time, prefs.utc).slice(11), formatPrice(t.price, p), formatQty(t.qty)], {
        id: String(t.id),
        side: t.side,
      });
      tr.className = t.side === "buy" ? "up" : "down";
      return tr;
    }),
  );
}

function renderStats() {
  const p = decimals(market.instrument?.tick_size ?? "0.01");
  const last = lastCandle();
  ui.last.textContent = last ? formatPrice(last.close, p) : "–";
  const s = market.stats;
  ui.change24h.textContent = s ? formatPercent(s.change) : "–";
  ui.change24h.className = s ? (s.change >= 0 ? "up" : "down") : "";
  ui.high24h.textContent = s ? formatPrice(s.high, p) : "–";
  ui.low24h.textContent = s ? formatPrice(s.low, p) : "–";
  ui.volume24h.textContent = s ? `${formatQty(s.volume)} USDT` : "–";
}

// Mark price, the coming funding rate and the time left until it is paid (the exchange's
// next funding time; the countdown runs on the browser's clock between updates).
function renderFunding(now) {
  const m = market.mark;
  const p = decimals(market.instrument?.tick_size ?? "0.01");
  ui.mark.textContent = m ? formatPrice(m.mark, p) : "–";
  ui.mark.dataset.value = m?.mark ?? "";
  if (!m) {
    ui.funding.textContent = "–";
    return;
  }
  const left = Math.max(0, Number(m.next_funding_time) - now);
  const s = Math.floor(left / 1000);
  const clock = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
  const rate = Number(m.funding_rate) * 100;
  ui.funding.textContent = `${rate >= 0 ? "+" : ""}${rate.toFixed(4)}% / ${clock}`;
  ui.funding.className = rate >= 0 ? "up" : "down";
  ui.funding.dataset.nextFunding = String(m.next_funding_time);
}

function lastCandle() {
  let last = null;
  for (const c of market.candles.values()) if (!last || c.open_time > last.open_time) last = c;
  return last;
}

function renderIdentity() {
  const address = session.address;
  ui.address.textContent = address ?? "";
  ui.signin.hidden = Boolean(address);
  ui.logout.hidden = !address;
}

// Age of the newest update shown, on the server's clock: its age when sent (t - at) plus the time
// since it arrived, so a browser clock that is off does not matter.
function ageOf(fresh, now) {
  const sentAge = Number.isFinite(fresh.t) ? fresh.t - fresh.at : fresh.receivedAt - fresh.at;
  return Math.max(0, sentAge + now - fresh.receivedAt);
}

function renderAges() {
  const now = Date.now();
  renderFunding(now);
  renderFeedState(now);
  for (const kind of AGE_KINDS) {
    const fresh = market.fresh[kind];
    const el = ui.age[kind];
    if (!fresh) {
      el.textContent = "–";
      el.dataset.ageMs = "";
      continue;
    }
    const ageMs = ageOf(fresh, now);
    el.dataset.ageMs = String(ageMs);
    el.textContent =
      ageMs < 10_000
        ? `${(ageMs / 1000).toFixed(1)} s`
        : ageMs < 120_000
          ? `${Math.round(ageMs / 1000)} s`
          : `${Math.round(ageMs / 60_000)} min`;
  }
}

// A connected socket says nothing about the exchange: with the feed down (the exchange
// unreachable, the feeder stopped) the page would look live while nothing moves. The mark price
// comes every second for every symbol, so its silence means no market data; the status line says
// so, and why, from an /api/health read every 10 s while it lasts.
const STALLED_MS = 10_000;
let connectedAt = null;
const STALL_ASK_MS = 10_000; // while stalled, ask why again this often (it may change)
let stallCause = "";
let stallAskedAt = null; // null: not stalled

function renderFeedState(now) {
  if (!socket.connected || connectedAt === null) return;
  const fresh = market.fresh.mark;
  const silentMs = fresh ? ageOf(fresh, now) : now - connectedAt;
  const state = ui.status.dataset.state;
  if (silentMs <= STALLED_MS) {
    stallAskedAt = null;
    stallCause = "";
    if (state === "stalled") setStatus("connected", "connected");
    return;
  }
  if (state !== "connected" && state !== "stalled") return; // an error or sign-in notice wins
  if (stallAskedAt === null || now - stallAskedAt > STALL_ASK_MS) {
    stallAskedAt = now;
    feedTrouble().then((cause) => {
      if (stallAskedAt !== null) stallCause = cause;
    });
  }
  const why = stallCause ? `: ${stallCause}` : "";
  setStatus(`connected · no market data for ${Math.round(silentMs / 1000)} s${why}`, "stalled");
}

async function feedTrouble() {
  try {
    const res = await fetch("/api/health", { cache: "no-store" });
    const feeders = Object.values((await res.json())?.feeders ?? {}).filter((f) => !f.stale);
    if (feeders.length === 0) return "no feed process is running";
    const live = feeders.some((f) => (f.connections ?? []).some((c) => c.state === "live"));
    return live ? "the exchange sends nothing for this symbol" : "the feed cannot reach the exchange";
  } catch {
    return "";
  }
}

// ---- the universe, the pickers and favourites ----------------------------------------------

function fillSelect(select, values) {
  select.replaceChildren(
    ...values.map((value) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = value;
      return option;
    }),
  );
  select.disabled = values.length === 0;
}

function favourites() {
  const list = loadJson(FAVOURITES_KEY, { symbols: [] }).symbols;
  return Array.isArray(list) ? list.filter((s) => typeof s === "string") : [];
}

function renderFavourites() {
  const favs = favourites().filter((s) => market.universe?.symbols.includes(s));
  const current = market.selection?.symbol;
  ui.favourite.textContent = favs.includes(current) ? "★" : "☆";
  ui.favourite.setAttribute("aria-pressed", String(favs.includes(current)));
  ui.favourite.title = favs.includes(current) ? "remove from favourites" : "add to favourites";
  ui.favourites.replaceChildren(
    ...favs.map((symbol) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = symbol;
      b.dataset.symbol = symbol;
      if (symbol === current) b.setAttribute("aria-current", "true");
      b.addEventListener("click", () => select({ symbol, timeframe: market.selection.timeframe }));
      return b;
    }),
  );
  ui.favourites.hidden = favs.length === 0;
}

ui.favourite.addEventListener("click", () => {
  const symbol = market.selection?.symbol;
  if (!symbol) return;
  const favs = favourites();
  const next = favs.includes(symbol) ? favs.filter((s) => s !== symbol) : [...favs, symbol];
  saveJson(FAVOURITES_KEY, { symbols: next });
  renderFavourites();
});

function initialSelection({ symbols, timeframes }) {
  const [symbol, timeframe] = decodeURIComponent(location.hash.slice(1)).split("/");
  if (symbols.includes(symbol) && timeframes.includes(timeframe)) return { symbol, timeframe };
  const preferred = [...favourites(), ...DEFAULT_SYMBOLS].find((s) => symbols.includes(s));
  return {
    symbol: preferred ?? symbols[0],
    timeframe: timeframes.includes("1m") ? "1m" : timeframes[0],
  };
}

let universeLoading = false;

async function loadUniverse() {
  if (universeLoading || market.universe) return;
  universeLoading = true;
  try {
    const universe = await request("/api/symbols", { token: session.token });
    const symbols = universe?.symbols ?? [];
    const timeframes = universe?.timeframes ?? [];
    if (symbols.length === 0 || timeframes.length === 0) {
      // The consumer has not published the universe yet.
      fillSelect(ui.symbol, []);
      ui.symbol.append(new Option("waiting for symbols…"));
      setTimeout(loadUniverse, UNIVERSE_RETRY_MS);
      return;
    }
    market.universe = universe;
    fillSelect(ui.symbol, symbols);
    fillSelect(ui.timeframe, timeframes);
    fillSelect(ui.markerSignal, universe.signals ?? []);
    ui.markerSignal.value = (universe.signals ?? []).includes(prefs.marker) ? prefs.marker : (universe.signals?.[0] ?? "");
    ui.symbolList.replaceChildren(...symbols.map((s) => new Option(s)));
    ui.search.disabled = false;
    select(initialSelection(universe));
  } catch (err) {
    if (err.status === 401 && !session.token) {
      setStatus(SIGN_IN_PLEASE, "signin"); // signing in loads it
    } else {
      setStatus(`symbols: ${errorText(err)}`, "error");
      setTimeout(loadUniverse, UNIVERSE_RETRY_MS);
    }
  } finally {
    universeLoading = false;
  }
}

ui.symbol.addEventListener("change", () => {
  select({ symbol: ui.symbol.value, timeframe: market.selection.timeframe });
});

function searchPick() {
  const wanted = ui.search.value.trim().toUpperCase();
  const symbols = market.universe?.symbols ?? [];
  const symbol = symbols.includes(wanted) ? wanted : symbols.find((s) => s.startsWith(wanted));
  if (symbol) select({ symbol, timeframe: market.selection.timeframe });
  else ui.search.setCustomValidity(`no symbol ${wanted}`);
}

ui.search.addEventListener("input", () => {
  ui.search.setCustomValidity("");
  if (market.universe?.symbols.includes(ui.search.value.trim().toUpperCase())) searchPick();
});
ui.search.addEventListener("keydown", (e) => {
  if (e.key === "Enter") searchPick();
});

ui.timeframe.addEventListener("change", () => {
  select({ symbol: market.selection.symbol, timeframe: ui.timeframe.value });
});

ui.markerSignal.addEventListener("change", () => {
  prefs.marker = ui.markerSignal.value;
  saveJson(PREFS_KEY, prefs);
  markersDirty = true;
  scheduleRender();
});

window.addEventListener("hashchange", () => {
  if (market.universe) select(initialSelection(market.universe));
});

// ---- sign-in -------------------------------------------------------------------------------

ui.signin.addEventListener("click", async () => {
  ui.signin.disabled = true;
  try {
    await session.signIn(window.ethereum);
  } catch (err) {
    // EIP-1193 errors carry {code, message}: 4001 is the user saying no.
    setStatus(`sign-in failed: ${errorText(err)}`, "error");
    return;
  } finally {
    ui.signin.disabled = false;
  }
  reconnect(); // the server reads the token at connect
  loadUniverse();
});

ui.logout.addEventListener("click", async () => {
  ui.logout.disabled = true;
  // Leave first: the server tells this login's sockets `auth_revoked`, and this one need not hear.
  socket.disconnect();
  try {
    await session.logout();
  } catch (err) {
    setStatus(`logout: ${errorText(err)}`, "error");
    ui.reconnect.hidden = false;
    return;
  } finally {
    ui.logout.disabled = false;
  }
  socket.connect();
});

ui.reconnect.addEventListener("click", () => {
  originChecked = false;
  reconnect();
  loadUniverse();
});

// ---- start ---------------------------------------------------------------------------------

setInterval(renderAges, AGE_TICK_MS);
setInterval(loadStats, STATS_EVERY_MS);
renderIdentity();
setStatus("connecting", "connecting");
await session.resume(); // a reload keeps the login: the refresh cookie outlives the page
socket.connect();
loadUniverse();
window.tpPage = { chart, market, trading }; // for the page tests and the console
