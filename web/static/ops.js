// The operators' page (docs/architecture.md, "Web (issue 7)", Ops page).
//
// Sign in with the wallet for an `ops` token (SIWE, like the main page, scope "ops"), then read
// and act through /ops/api/.... The token lives in memory only. Every value from the server is
// put in the page with textContent, never as HTML: errors, arguments and records come from
// exchange data and from actors, so they are untrusted text.
//
// Destructive actions: one row's retry goes at once; a delete, and any action on a selection,
// asks for confirmation first. A selection is sent in batches of at most BATCH ids (the server's
// limit), one batch after another, and the page reports what the server did with each id.
// "All matching" sweeps every failed message (or dead entry) the filters match, not only the rows
// shown: after one confirmation the server acts on one batch per call and answers a cursor for
// the next, until none is left (ops/failed.py, ops/dead.py). The page reloads itself every
// REFRESH_MS while "auto-refresh" is ticked; a list with rows selected is left as it is.

import { ApiError, request } from "./http.js";
import { acrossTabs, walletLogin } from "./auth.js";

const STATEMENT = "Sign in to the tradepipe ops page.";
const BATCH = 100; // web/ops.py MAX_BATCH
const MAX_SELECTION = 500; // web/ops.py MAX_LIST: at most one listing per confirmation
const BATCHED = `They are sent in batches of at most ${BATCH}.`;
const REFRESH_MS = 5_000;
const ROLES = ["feeders", "consumers", "workers", "signals", "web", "execution"]; // Procfile types

let token = null;
let failedRows = [];
let deadRows = [];
const $ = (id) => document.getElementById(id);

// --- sign-in --------------------------------------------------------------------------------

async function signIn() {
  accept(await walletLogin(window.ethereum, { scope: "ops", statement: STATEMENT }));
}

/** Resume from the refresh cookie when it belongs to an ops login; resolve true if signed in. */
async function resume() {
  // No ops login in this browser (its readable hint cookie is absent): nothing to ask for.
  if (!document.cookie.split("; ").includes("tp_signed_in_ops=1")) return false;
  try {
    const grant = await acrossTabs(() => request("/auth/refresh", { method: "POST", body: { scope: "ops" } }));
    if (grant?.scope !== "ops") return false; // the main page's login: not ours to use
    accept(grant);
    return true;
  } catch {
    return false;
  }
}

function accept(grant) {
  if (typeof grant?.access_token !== "string") {
    throw new ApiError(200, "malformed", "the server's grant has no access_token");
  }
  token = grant.access_token;
  $("address").textContent = grant.address ?? "";
  $("signin").hidden = true;
  $("logout").hidden = false;
  $("reload").hidden = false;
  $("auto-label").hidden = false;
  $("content").hidden = false;
}

function signedOut(reason) {
  token = null;
  $("address").textContent = "";
  $("signin").hidden = false;
  $("logout").hidden = true;
  $("reload").hidden = true;
  $("auto-label").hidden = true;
  $("content").hidden = true;
  notice(reason ?? "signed out", reason ? "error" : "");
}

async function logout() {
  try {
    if (token) await request("/auth/logout", { method: "POST", body: { scope: "ops" }, token });
  } finally {
    signedOut();
  }
}

/** Call the ops API; an expired token is refreshed once, any other 401 signs the page out. */
async function api(path, body) {
  const call = () =>
    request(`/ops/api/${path}`, body === undefined ? { token } : { method: "POST", body, token });
  try {
    return await call();
  } catch (err) {
    if (err instanceof ApiError && err.code === "token_expired" && (await resume())) return call();
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      signedOut(`signed out: ${err.message}`);
    }
    throw err;
  }
}

// --- small DOM helpers ----------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value ?? "";
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** A <details> whose summary is `title` and whose body is `text` in a <pre>. */
function more(title, text) {
  if (text === null || text === undefined || text === "") return el("span", { text: title });
  return el("details", {}, el("summary", { text: title }), el("pre", { text }));
}

function utc(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "–";
}

function age(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function notice(text, kind = "") {
  $("notice").textContent = text;
  $("notice").dataset.kind = kind;
}

function counts(byResult) {
  return Object.entries(byResult).map(([result, n]) => `${result} ${n}`).join(", ") || "nothing";
}

function confirmDialog(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

function fillSelect(select, values) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "", text: "all" }));
  for (const v of values) select.append(el("option", { value: String(v), text: String(v) }));
  select.value = values.map(String).includes(keep) ? keep : "";
}

// --- health ---------------------------------------------------------------------------------

function summary(report) {
  const skip = new Set(["stale", "age_ms", "at_ms", "updated_ms"]);
  return Object.entries(report)
    .filter(([k, v]) => !skip.has(k) && (typeof v === "number" || typeof v === "string"))
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

const STALE = { class: "stale", text: "stale" };
const FRESH = { class: "fresh", text: "ok" };

function metrics(counters) {
  return more(summary(counters) || "none", json(counters));
}

async function loadHealth() {
  const h = await api("health");
  $("health-at").textContent = `at ${utc(h.now)}; stale after ${h.stale_after_ms / 1000} s`;
  const rows = [];
  for (const role of ROLES) {
    const reports = Object.entries(h[role] ?? {});
    if (reports.length === 0) {
      const none = el("td", { class: "stale", text: "none reporting", colSpan: 4 });
      rows.push(el("tr", {}, el("td", { text: role }), none));
    }
    for (const [name, report] of reports) {
      rows.push(
        el(
          "tr",
          {},
          el("td", { text: role }),
          el("td", { class: "mono", text: name }),
          el("td", report.stale ? STALE : FRESH),
          el("td", { class: "num", text: age(report.age_ms) }),
          el("td", { class: "mono" }, more(summary(report) || "report", json(report))),
        ),
      );
    }
  }
  $("processes").replaceChildren(...rows);
  $("queues").replaceChildren(
    ...Object.entries(h.queues).map(([queue, q]) =>
      el(
        "tr",
        {},
        el("td", { text: queue }),
        el("td", { class: "num", text: q.ready }),
        el("td", { class: "num", text: q.delayed }),
        el("td", { class: q.failed ? "num error" : "num", text: q.failed }),
        el("td", { class: q.trimmed ? "num error" : "num", text: q.trimmed ?? 0 }),
      ),
    ),
  );
  $("shards").replaceChildren(
    ...h.shards.map((s) =>
      el(
        "tr",
        {},
        el("td", { text: s.shard }),
        el("td", { class: s.dead ? "num error" : "num", text: s.dead }),
        ...["trades", "klines", "gaps"].map((name) => lagCell(s.streams?.[name])),
        el("td", { class: "num", text: pendingOf(s.streams) }),
        el("td", { class: "mono" }, metrics(s.candle_metrics)),
        el("td", { class: "mono" }, metrics(s.signal_metrics)),
      ),
    ),
  );
}

/** A stream's lag as a number (its group's undelivered entries); "?" when Redis cannot tell. */
function lagCell(stream) {
  if (!stream) return el("td", { class: "num", text: "–" });
  const lag = stream.lag ?? "?";
  const title = `${stream.group}: length ${stream.length}, pending ${stream.pending ?? "–"}`;
  return el("td", { class: stream.lag ? "num error" : "num", text: String(lag), title });
}

function pendingOf(streams) {
  const pending = Object.values(streams ?? {}).map((s) => s.pending ?? 0);
  return String(pending.reduce((a, b) => a + b, 0));
}

// --- failed Dramatiq messages ---------------------------------------------------------------

function selected(tbody, rows) {
  const boxes = $(tbody).querySelectorAll("input[type=checkbox]:checked");
  return [...boxes].map((box) => rows[box.dataset.index]);
}

function updateSelection(kind) {
  const rows = kind === "failed" ? failedRows : deadRows;
  const n = selected(kind, rows).length;
  for (const action of ["retry", "delete"]) {
    const button = $(`${kind}-${action}-selected`);
    button.disabled = n === 0;
    button.textContent = `${action === "retry" ? "Retry" : "Delete"} selected${n ? ` (${n})` : ""}`;
  }
}

function rowBox(kind, index) {
  const box = el("input", { type: "checkbox", onchange: () => updateSelection(kind) });
  box.setAttribute("aria-label", "select");
  box.dataset.index = String(index);
  return el("td", {}, box);
}

// tasks.broker.FinalTraceback stores the last attempt's traceback with every dead letter; one
// dead-lettered without it (before that middleware, or by another sender) may have none.
const NO_TRACEBACK = "(no traceback stored)";

function failure(row) {
  return more(row.error ?? NO_TRACEBACK, row.traceback ?? row.raw);
}

function brief(args) {
  return JSON.stringify(args ?? []).slice(0, 80);
}

function details(row) {
  const { args, kwargs, message_id: messageId, options } = row;
  const enqueued = utc(row.enqueued_at);
  return json({ args, kwargs, message_id: messageId, redis_message_id: row.id, enqueued, options });
}

/** The row's Retry (at once) and Delete (after a confirmation) buttons. */
function rowActions(row, act) {
  return el(
    "td",
    {},
    el("button", { type: "button", text: "Retry", onclick: () => act("retry", [row], false) }),
    " ",
    el("button", { type: "button", text: "Delete", onclick: () => act("delete", [row], true) }),
  );
}

async function loadFailed() {
  const args = new URLSearchParams({ limit: $("failed-limit").value || "100" });
  if ($("failed-queue").value) args.set("queue", $("failed-queue").value);
  if ($("failed-actor").value.trim()) args.set("actor", $("failed-actor").value.trim());
  const data = await api(`failed?${args}`);
  failedRows = data.failed;
  if (!$("failed-queue").value) fillSelect($("failed-queue"), Object.keys(data.totals));
  $("failed-totals").textContent =
    Object.entries(data.totals).map(([q, n]) => `${q}: ${n}`).join(" · ") +
    (data.truncated ? " (more than shown)" : "");
  $("failed").replaceChildren(
    ...failedRows.map((row, i) =>
      el(
        "tr",
        {},
        rowBox("failed", i),
        el("td", { text: row.queue }),
        el("td", { class: "mono", text: row.actor ?? "(undecodable)" }),
        el("td", { class: "mono", text: utc(row.failed_at) }),
        el("td", { class: "num", text: row.attempts ?? "–" }),
        el("td", { class: "mono error" }, failure(row)),
        el("td", { class: "mono" }, more(brief(row.args), details(row))),
        rowActions(row, actOnFailed),
      ),
    ),
  );
  $("failed-all").checked = false;
  updateSelection("failed");
}

/** Send `rows` grouped by queue in batches of BATCH; confirm first when asked to. */
async function actOnFailed(action, rows, ask) {
  const groups = groupBy(rows, (row) => row.queue);
  const verb = action === "retry" ? "Retry" : "Delete";
  const where = [...groups.keys()].join(", ");
  const question = `${verb} ${rows.length} failed message(s) of ${where}? ${BATCHED}`;
  const send = (queue, ids) => api(`failed/${action}`, { queue, ids });
  await run(ask, question, `failed ${action}`, groups, send);
  await Promise.all([loadFailed(), loadHealth(), loadAudit()]);
}

// --- dead-lettered stream entries -----------------------------------------------------------

async function loadDead() {
  const args = new URLSearchParams({ limit: $("dead-limit").value || "100" });
  if ($("dead-shard").value) args.set("shard", $("dead-shard").value);
  const data = await api(`dead?${args}`);
  const kind = $("dead-stream").value;
  deadRows = kind ? data.dead.filter((row) => (row.stream ?? "").endsWith(`:${kind}`)) : data.dead;
  if (!$("dead-shard").value) fillSelect($("dead-shard"), Object.keys(data.totals));
  $("dead-totals").textContent =
    Object.entries(data.totals).map(([s, n]) => `shard ${s}: ${n}`).join(" · ") +
    (data.truncated ? " (more than shown)" : "");
  $("dead").replaceChildren(
    ...deadRows.map((row, i) =>
      el(
        "tr",
        {},
        rowBox("dead", i),
        el("td", { text: row.shard }),
        el("td", { class: "mono", text: utc(row.dead_at) }),
        el("td", { class: "mono", text: row.stream }),
        el("td", { class: "mono", text: row.entry_id }),
        el("td", { class: "mono error", text: row.error }),
        el("td", { class: "mono" }, more((row.record ?? "").slice(0, 60), row.record)),
        rowActions(row, actOnDead),
      ),
    ),
  );
  $("dead-all").checked = false;
  updateSelection("dead");
}

async function actOnDead(action, rows, ask) {
  const groups = groupBy(rows, (row) => row.shard);
  const what = rows.length === 1 ? "1 dead-lettered entry" : `${rows.length} dead-lettered entries`;
  const back = rows.length === 1 ? "back into its stream" : "back into their streams";
  const question =
    action === "retry" ? `Put ${what} ${back}? ${BATCHED}` : `Delete ${what}? ${BATCHED}`;
  const send = (shard, ids) => api(`dead/${action}`, { shard, ids });
  await run(ask, question, `dead ${action}`, groups, send);
  await Promise.all([loadDead(), loadHealth(), loadAudit()]);
}

// --- "all matching": a sweep in batches, continued by the server's cursor ---------------------

async function sweep(label, targets, call) {
  const tally = {};
  try {
    for (const target of targets) {
      let cursor = null;
      do {
        const reply = await call(target, cursor);
        for (const [result, n] of Object.entries(reply.counts)) {
          tally[result] = (tally[result] ?? 0) + n;
        }
        cursor = reply.next;
        notice(`${label}: ${counts(tally)}…`);
      } while (cursor);
    }
    notice(`${label}: ${counts(tally)}`);
  } catch (err) {
    notice(`${label} stopped: ${err.message} (done so far: ${counts(tally)})`, "error");
  }
}

async function failedMatching(action) {
  const queue = $("failed-queue").value;
  const actor = $("failed-actor").value.trim();
  const queues = queue ? [queue] : [...$("failed-queue").options].map((o) => o.value).filter(Boolean);
  const verb = action === "retry" ? "Retry" : "Delete";
  const which = `${actor ? `of actor ${actor} ` : ""}in ${queue || "every queue"}`;
  if (!(await confirmDialog(`${verb} every failed message ${which}, not only those shown? ${BATCHED}`))) {
    return;
  }
  const before = Date.now(); // a message failing again after its retry is not retried twice
  await sweep(`failed ${action} (all matching)`, queues, (q, cursor) =>
    api(`failed/${action}-matching`, { queue: q, actor: actor || null, before, cursor }),
  );
  await Promise.all([loadFailed(), loadHealth(), loadAudit()]);
}

async function deadMatching(action) {
  const shard = $("dead-shard").value;
  const stream = $("dead-stream").value || null;
  const shards = shard ? [shard] : [...$("dead-shard").options].map((o) => o.value).filter(Boolean);
  const verb = action === "retry" ? "Put back" : "Delete";
  const which = `${stream ? `from ${stream} ` : ""}in ${shard ? `shard ${shard}` : "every shard"}`;
  if (!(await confirmDialog(`${verb} every dead-lettered entry ${which}, not only those shown? ${BATCHED}`))) {
    return;
  }
  const ends = {};
  for (const s of shards) {
    const newest = await api(`dead?shard=${s}&limit=1`);
    if (newest.dead.length) ends[s] = newest.dead[0].id; // entries dead-lettered later wait
  }
  await sweep(`dead ${action} (all matching)`, Object.keys(ends), (s, cursor) =>
    api(`dead/${action}-matching`, { shard: Number(s), stream, until: ends[s], cursor }),
  );
  await Promise.all([loadDead(), loadHealth(), loadAudit()]);
}

// --- shared action runner -------------------------------------------------------------------

function groupBy(rows, keyOf) {
  const groups = new Map();
  for (const row of rows) {
    const key = keyOf(row);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(row.id);
  }
  return groups;
}

async function run(ask, question, label, groups, send) {
  const total = [...groups.values()].reduce((n, ids) => n + ids.length, 0);
  if (total > MAX_SELECTION) {
    notice(`select at most ${MAX_SELECTION} at a time`, "error");
    return;
  }
  if (ask && !(await confirmDialog(question))) return;
  const tally = {};
  try {
    for (const [key, ids] of groups) {
      for (let i = 0; i < ids.length; i += BATCH) {
        const reply = await send(key, ids.slice(i, i + BATCH));
        for (const [result, n] of Object.entries(reply.counts)) {
          tally[result] = (tally[result] ?? 0) + n;
        }
      }
    }
    notice(`${label}: ${counts(tally)}`);
  } catch (err) {
    notice(`${label} stopped: ${err.message} (done so far: ${counts(tally)})`, "error");
  }
}

// --- signal errors and audit ----------------------------------------------------------------

async function loadSignalErrors() {
  const { signal_errors: rows } = await api("signal-errors");
  $("signal-errors").replaceChildren(
    ...rows.map((row) =>
      el(
        "tr",
        {},
        el("td", { class: "mono", text: row.signal }),
        el("td", { text: row.shard }),
        el("td", { text: row.kind ?? "–" }),
        el("td", { class: "mono", text: row.symbol ? `${row.symbol} ${row.timeframe}` : "–" }),
        el("td", { class: "mono", text: utc(row.at) }),
        el("td", { class: "num", text: row.count }),
        el("td", { class: "mono error", text: row.message }),
      ),
    ),
  );
}

async function loadAudit() {
  const { audit: rows } = await api("audit?limit=50");
  $("audit").replaceChildren(
    ...rows.map((row) =>
      el(
        "tr",
        {},
        el("td", { class: "mono", text: utc(row.at_ms) }),
        el("td", { class: "mono", text: row.who }),
        el("td", { text: row.action }),
        el("td", { text: row.target }),
        el("td", { class: "mono" }, more(`${row.ids.length} id(s)`, row.ids.join("\n"))),
        el("td", { text: counts(row.results) }),
      ),
    ),
  );
}

async function loadAll() {
  const loads = [loadHealth, loadFailed, loadDead, loadSignalErrors, loadAudit];
  const results = await Promise.allSettled(loads.map((load) => load()));
  const failed = results.find((r) => r.status === "rejected");
  if (failed && token) notice(`could not load everything: ${failed.reason.message}`, "error");
  else if (token) notice(`loaded at ${utc(Date.now())}`);
}

/** The periodic reload: skipped while signed out, paused, a dialog is open or a load runs. */
let refreshing = false;
async function refresh() {
  if (!token || !$("auto").checked || $("confirm").open || refreshing) return;
  refreshing = true;
  try {
    const loads = [loadHealth(), loadSignalErrors(), loadAudit()];
    // A list with rows selected stays as it is: the operator is about to act on them.
    if (!selected("failed", failedRows).length) loads.push(loadFailed());
    if (!selected("dead", deadRows).length) loads.push(loadDead());
    await Promise.all(loads);
  } catch (err) {
    if (token) notice(`auto-refresh: ${err.message}`, "error");
  } finally {
    refreshing = false;
  }
}

// --- wiring ---------------------------------------------------------------------------------

function wire() {
  $("signin").addEventListener("click", async () => {
    notice("waiting for the wallet…");
    try {
      await signIn();
      await loadAll();
    } catch (err) {
      notice(`sign-in failed: ${err.message}`, "error");
    }
  });
  $("logout").addEventListener("click", () => logout());
  for (const action of ["retry", "delete"]) {
    $(`failed-${action}-matching`).addEventListener("click", () => failedMatching(action));
    $(`dead-${action}-matching`).addEventListener("click", () => deadMatching(action));
  }
  setInterval(refresh, REFRESH_MS);
  $("reload").addEventListener("click", () => loadAll());
  $("failed-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadFailed().catch((err) => notice(err.message, "error"));
  });
  $("dead-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadDead().catch((err) => notice(err.message, "error"));
  });
  for (const kind of ["failed", "dead"]) {
    $(`${kind}-all`).addEventListener("change", (event) => {
      for (const box of $(kind).querySelectorAll("input[type=checkbox]")) {
        box.checked = event.target.checked;
      }
      updateSelection(kind);
    });
    const act = kind === "failed" ? actOnFailed : actOnDead;
    const rows = () => (kind === "failed" ? failedRows : deadRows);
    for (const action of ["retry", "delete"]) {
      const button = $(`${kind}-${action}-selected`);
      button.addEventListener("click", () => act(action, selected(kind, rows()), true));
    }
  }
}

wire();
if (await resume()) await loadAll();
else notice("signed out: sign in with an operator's wallet");
