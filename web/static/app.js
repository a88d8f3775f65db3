// The trader's live view: one (symbol, timeframe) at a time, fed by Socket.IO.
// The contract (REST, SIWE, events and JSON shapes) is docs/architecture.md, "Web (issue 7)".
//
// Rooms: c:SYM:tf (candles), s:SYM:tf (signals), b:SYM (book). `snapshot` fills a room once per
// subscribe, `md` then carries what changed; both merge as "latest value per key wins" (candles
// by open_time, signals by name), and the page keeps at most MAX_CANDLES per series.

import { Session } from "./auth.js";
import { drawCandles } from "./chart.js";
import { request } from "./http.js";

const MAX_CANDLES = 500;
const MAX_SIGNALS = 200;
const CHART_CANDLES = 120;
const TABLE_CANDLES = 20;
const ACK_TIMEOUT_MS = 10_000;
const KICK_RECONNECT_MS = 3000; // after `kicked`: the server sends whole rooms on the way back
const UNIVERSE_RETRY_MS = 2000;
const AGE_TICK_MS = 500;
const ANONYMOUS_REFUSED = new Set(["invalid_token", "unauthorized"]);
const SIGN_IN_PLEASE = "sign in to see market data";
const KINDS = ["candles", "signals", "book"];

const $ = (id) => document.getElementById(id);
const ui = {
  symbol: $("symbol"),
  timeframe: $("timeframe"),
  status: $("status"),
  address: $("address"),
  signin: $("signin"),
  logout: $("logout"),
  reconnect: $("reconnect"),
  chart: $("chart"),
  candles: $("candles"),
  signals: $("signals"),
  bid: $("bid"),
  bidQty: $("bid-qty"),
  ask: $("ask"),
  askQty: $("ask-qty"),
  bookTime: $("book-time"),
  age: { candles: $("age-candles"), signals: $("age-signals"), book: $("age-book") },
};

const session = new Session();

// What the page shows: the selected series, latest value per key.
const market = {
  universe: null, // {symbols, timeframes, signals}
  selection: null, // {symbol, timeframe}
  candles: new Map(), // open_time -> candle
  signals: new Map(), // signal name -> signal
  book: null,
  fresh: { candles: null, signals: null, book: null }, // {at, t, receivedAt} of the last md
};

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

function reconnect() {
  ui.reconnect.hidden = true;
  socket.disconnect();
  socket.connect();
}

socket.on("connect", () => {
  notice = null;
  afterServerDisconnect = null;
  ui.reconnect.hidden = true;
  setStatus("connected", "connected");
  subscribe(market.selection, null);
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

socket.on("connect_error", (err) => {
  if (socket.active) {
    // The transport failed (server down, proxy): the manager retries with backoff.
    setStatus(`disconnected: ${err.message}`, "disconnected");
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
  apply(kind, msg[kind]);
  if (Number.isFinite(msg.at)) market.fresh[kind] = { at: msg.at, t: null, receivedAt: Date.now() };
  scheduleRender();
});

socket.on("md", (msg) => {
  const receivedAt = Date.now();
  for (const [room, update] of Object.entries(msg?.rooms ?? {})) {
    const kind = kindOf(room);
    if (!kind) continue;
    apply(kind, update?.data);
    if (Number.isFinite(update?.at)) market.fresh[kind] = { at: update.at, t: msg.t, receivedAt };
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

session.addEventListener("change", renderIdentity);

// ---- subscriptions -------------------------------------------------------------------------

function roomsOf(sel) {
  if (!sel) return {};
  const { symbol, timeframe } = sel;
  return {
    candles: `c:${symbol}:${timeframe}`,
    signals: `s:${symbol}:${timeframe}`,
    book: `b:${symbol}`,
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
  ];
}

// Send `event` for every room of `sel` that `other` does not share.
function sendEach(event, sel, other) {
  const keep = new Set(Object.values(roomsOf(other)));
  for (const { room, payload } of payloadsOf(sel)) {
    if (keep.has(room)) continue;
    socket
      .timeout(ACK_TIMEOUT_MS)
      .emitWithAck(event, payload)
      .then((ack) => {
        if (!ack?.ok) setStatus(`${ack?.error}: ${ack?.message}`, "error");
      })
      .catch((err) => {
        if (socket.connected) setStatus(`${event} ${payload.channel}: ${errorText(err)}`, "error");
      });
  }
}

function subscribe(sel, previous) {
  sendEach("subscribe", sel, previous);
}

function select(sel) {
  const previous = market.selection;
  if (previous?.symbol === sel.symbol && previous?.timeframe === sel.timeframe) return;
  market.selection = sel;
  const before = roomsOf(previous);
  const after = roomsOf(sel);
  if (before.candles !== after.candles) market.candles.clear();
  if (before.signals !== after.signals) market.signals.clear();
  if (before.book !== after.book) market.book = null;
  for (const kind of KINDS) if (before[kind] !== after[kind]) market.fresh[kind] = null;
  ui.symbol.value = sel.symbol;
  ui.timeframe.value = sel.timeframe;
  history.replaceState(null, "", `#${sel.symbol}/${sel.timeframe}`);
  if (socket.connected) {
    if (previous) sendEach("unsubscribe", previous, sel);
    subscribe(sel, previous);
  }
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

function apply(kind, data) {
  if (kind === "candles") {
    for (const candle of listOf(data, "open_time")) {
      market.candles.set(Number(candle.open_time), candle);
    }
    trimOldest(market.candles, MAX_CANDLES);
  } else if (kind === "signals") {
    // The room keys signals by (name, open_time): a late closed value for an older candle must not
    // hide the newer candle's provisional one.
    for (const signal of listOf(data, "signal")) {
      const shown = market.signals.get(signal.signal);
      if (!shown || !(Number(signal.open_time) < Number(shown.open_time))) {
        market.signals.set(signal.signal, signal);
      }
    }
    trimOldest(market.signals, MAX_SIGNALS);
  } else if (kind === "book" && data && typeof data === "object") {
    market.book = data;
  }
}

function trimOldest(map, bound) {
  if (map.size <= bound) return;
  const keys = [...map.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const key of keys.slice(0, map.size - bound)) map.delete(key);
}

// ---- rendering -----------------------------------------------------------------------------

let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderCandles();
    renderSignals();
    renderBook();
  });
}

function utc(ms) {
  return Number.isFinite(ms) ? new Date(ms).toISOString().slice(0, 19).replace("T", " ") : "–";
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
  const candles = [...market.candles.values()].sort((a, b) => a.open_time - b.open_time);
  drawCandles(ui.chart, candles.slice(-CHART_CANDLES), { slots: CHART_CANDLES });
  const rows = candles
    .slice(-TABLE_CANDLES)
    .reverse()
    .map((c) => {
      const closed = c.closed ? "yes" : "no";
      const tr = row(
        [utc(c.open_time), c.open, c.high, c.low, c.close, c.volume, closed, c.source],
        {
          openTime: String(c.open_time),
          close: String(c.close),
          closed: String(Boolean(c.closed)),
          source: String(c.source ?? ""),
        },
      );
      tr.className = Number(c.close) >= Number(c.open) ? "up" : "down";
      return tr;
    });
  ui.candles.replaceChildren(...rows);
}

function renderSignals() {
  const signals = [...market.signals.values()].sort((a, b) => (a.signal < b.signal ? -1 : 1));
  const rows = signals.map((s) =>
    row(
      [
        s.signal,
        String(s.value),
        s.provisional ? `${s.state} (provisional)` : s.state,
        utc(s.open_time),
        utc(s.computed_at),
      ],
      {
        signal: s.signal,
        state: String(s.state),
        provisional: String(Boolean(s.provisional)),
      },
    ),
  );
  ui.signals.replaceChildren(...rows);
}

function renderBook() {
  const book = market.book;
  ui.bid.textContent = book?.bid ?? "–";
  ui.bidQty.textContent = book?.bid_qty ?? "";
  ui.ask.textContent = book?.ask ?? "–";
  ui.askQty.textContent = book?.ask_qty ?? "";
  ui.bookTime.textContent = utc(book?.time);
}

function renderIdentity() {
  const address = session.address;
  ui.address.textContent = address ?? "";
  ui.signin.hidden = Boolean(address);
  ui.logout.hidden = !address;
}

// Age of the newest update shown, on the server's clock: its age when sent (t - at) plus the time
// since it arrived, so a browser clock that is off does not matter.
function renderAges() {
  const now = Date.now();
  for (const kind of KINDS) {
    const fresh = market.fresh[kind];
    const el = ui.age[kind];
    if (!fresh) {
      el.textContent = "–";
      el.dataset.ageMs = "";
      continue;
    }
    const sentAge = Number.isFinite(fresh.t) ? fresh.t - fresh.at : fresh.receivedAt - fresh.at;
    const ageMs = Math.max(0, sentAge + now - fresh.receivedAt);
    el.dataset.ageMs = String(ageMs);
    el.textContent =
      ageMs < 10_000
        ? `${(ageMs / 1000).toFixed(1)} s`
        : ageMs < 120_000
          ? `${Math.round(ageMs / 1000)} s`
          : `${Math.round(ageMs / 60_000)} min`;
  }
}

// ---- the universe and the pickers ----------------------------------------------------------

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

function initialSelection({ symbols, timeframes }) {
  const [symbol, timeframe] = decodeURIComponent(location.hash.slice(1)).split("/");
  if (symbols.includes(symbol) && timeframes.includes(timeframe)) return { symbol, timeframe };
  return { symbol: symbols[0], timeframe: timeframes.includes("1m") ? "1m" : timeframes[0] };
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

ui.timeframe.addEventListener("change", () => {
  select({ symbol: market.selection.symbol, timeframe: ui.timeframe.value });
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
  reconnect();
  loadUniverse();
});

// ---- start ---------------------------------------------------------------------------------

new ResizeObserver(scheduleRender).observe(ui.chart);
setInterval(renderAges, AGE_TICK_MS);
renderIdentity();
setStatus("connecting", "connecting");
await session.resume(); // a reload keeps the login: the refresh cookie outlives the page
socket.connect();
loadUniverse();
