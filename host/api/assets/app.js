// wulf dashboard: plain ES2020, no dependencies, no build step.
//
// Data flow: one initial load (nodes + status, overlays, plugins in parallel), then a
// Server-Sent-Events stream of boot events. Events only touch the in-memory state (a Map
// of per-node records) and mark what changed; the DOM is redrawn at most every RENDER_MS,
// so a boot storm of thousands of events per second costs a few cheap redraws per second.
//
// All server data goes into the page through textContent, never innerHTML.
"use strict";

const STAGES = ["dhcp", "ipxe", "kernel", "stage1", "image", "system", "runtime", "agent"];
const TOKEN_KEY = "wulf.token";
const RENDER_MS = 200;        // batch window for DOM updates
const MAX_ROWS = 500;         // rows kept in the table at once (see renderTable)
const MAX_TRACE = 50;         // trace entries kept per node
const MAX_ERRORS = 200;       // entries in the errors list
const PANEL_REFRESH_MS = 30000;
const STREAM_IDLE_MS = 45000; // 3 missed keep-alives: assume the connection is dead

const $ = (sel) => document.querySelector(sel);

// ---- state --------------------------------------------------------------------------

const state = {
  token: null,
  nodes: new Map(),      // id -> {id, image, ipaddr, seenAddr, stage, seen (ms), error, trace, agent}
  sortedIds: [],         // all node ids, natural order ("n2" before "n10")
  unknownMacs: new Set(),
  bytesSent: 0,          // ok events received on the stream since this page loaded
  selected: null,        // node whose trace is open
  filter: "",
  dirty: new Set(),      // nodes whose row needs a redraw
  structural: true,      // node set or filter changed: rebuild the table body
  unsorted: false,       // sortedIds got new ids appended
  errorsDirty: true,
  renderTimer: 0,
  stopped: false,        // set on 401/403: nothing will work until a new link is opened
  reloading: false,      // (re)fetching nodes + status: hold events meanwhile
  held: [],
};

const rows = new Map(); // id -> {tr, cells}; created lazily, only for rows that were shown
const byId = new Intl.Collator(undefined, { numeric: true }).compare;

// ---- formatting ---------------------------------------------------------------------

function humanSize(bytes) {
  if (bytes == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = bytes, u = 0;
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return u === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[u]}`;
}

function ago(ms) {
  if (!ms) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function clock(ms) {
  const d = new Date(ms);
  const hms = d.toLocaleTimeString(undefined, { hour12: false });
  return `${hms}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function agentText(agent) {
  if (!agent) return "—";
  const reboot = agent.reboot_needed || [];
  if (reboot.length) return `reboot needed: ${reboot.join(", ")}`;
  return agent.in_sync ? "in sync" : "out of sync";
}

// Create an element with a class and text in one go (text may be null).
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = String(text);
  return e;
}

// Writing the same text again still costs a style recalculation: skip it.
function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

// ---- auth and API -------------------------------------------------------------------

// The link printed by `wulf dashboard` carries the token in the fragment (never sent to
// the server, not logged). Keep it for this tab only, and take it out of the address bar.
function takeToken() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  try {
    if (m) sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    if (m) history.replaceState(null, "", location.pathname + location.search);
    return sessionStorage.getItem(TOKEN_KEY) || (m && decodeURIComponent(m[1]));
  } catch {
    return m ? decodeURIComponent(m[1]) : null; // storage disabled: works until reload
  }
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// Relative URLs, so the dashboard also works behind a reverse proxy under a sub-path.
async function api(path, init = {}) {
  const res = await fetch(`api/v1/${path}`, {
    ...init,
    cache: "no-store",
    headers: { Authorization: `Bearer ${state.token}`, ...(init.headers || {}) },
  });
  if (res.ok) return path === "events" ? res : res.json();
  let message = `${res.status} ${res.statusText}`;
  try { message = (await res.json()).error || message; } catch { /* not JSON */ }
  throw new ApiError(res.status, message);
}

function showMessage(text, kind = "error") {
  const box = $("#message");
  box.textContent = text;
  box.className = `banner ${kind}`;
  box.hidden = !text;
}

// 401/403 are final: say what to do and stop polling and reconnecting.
function handleAuthError(err) {
  if (!(err instanceof ApiError) || (err.status !== 401 && err.status !== 403)) return false;
  state.stopped = true;
  stream.abort?.abort();
  setConnection("disconnected");
  showMessage(err.status === 401
    ? "The token was refused (expired or revoked): run `wulf dashboard` for a new link"
    : "This token lacks the read scope");
  return true;
}

// ---- applying data ------------------------------------------------------------------

function blankNode(id) {
  return { id, image: null, ipaddr: null, seenAddr: null, stage: null, seen: 0, error: null, trace: [], agent: null };
}

// Nodes + status replace the whole state: the server is the authority, events only patch.
function applySnapshot(nodesReply, statusReply) {
  const status = statusReply.nodes || {};
  const next = new Map();
  for (const n of nodesReply.nodes || []) {
    const rec = blankNode(n.id);
    rec.image = n.image;
    rec.ipaddr = n.ipaddr;
    next.set(n.id, rec);
  }
  for (const [id, s] of Object.entries(status)) {
    if (!next.has(id)) next.set(id, blankNode(id)); // booted, then removed from inventory
    const rec = next.get(id);
    rec.stage = s.stage || null;
    rec.seenAddr = s.ipaddr || null;
    rec.seen = s.last_seen ? s.last_seen * 1000 : 0;
    rec.error = s.error ? { ...s.error, reason: s.error.reason ?? "" } : null;
    rec.trace = (s.trace || []).slice(-MAX_TRACE);
    rec.agent = s.agent || null;
  }
  state.nodes = next;
  state.sortedIds = [...next.keys()].sort(byId);
  state.unsorted = false;
  for (const id of rows.keys()) if (!next.has(id)) rows.delete(id);
  for (const id of next.keys()) state.dirty.add(id);
  if (state.selected && !next.has(state.selected)) select(null);
  state.structural = true;
  state.errorsDirty = true;
  scheduleRender();
}

// Called for every event on the stream: O(1) state changes, no DOM work.
function onBootEvent(ev) {
  if (ev.result === "ok" && ev.bytes) state.bytesSent += ev.bytes;
  if (ev.node == null) {
    if (ev.mac) state.unknownMacs.add(ev.mac);
    scheduleRender();
    return;
  }
  if (state.reloading) { state.held.push(ev); return; }
  applyEvent(ev);
}

function applyEvent(ev) {
  let rec = state.nodes.get(ev.node);
  if (!rec) { // a node added since the last snapshot
    rec = blankNode(ev.node);
    state.nodes.set(ev.node, rec);
    state.sortedIds.push(ev.node); // sorted at the next table rebuild, not per event
    state.unsorted = true;
    state.structural = true;
  }
  const entry = { stage: ev.stage, file: ev.file, bytes: ev.bytes, result: ev.result, reason: ev.reason, at: ev.at };
  rec.trace.push(entry);
  if (rec.trace.length > MAX_TRACE) rec.trace.shift();
  rec.stage = ev.stage;
  rec.seen = ev.at;
  if (ev.stage === "agent" && rec.agent) rec.agent.last_seen = Math.floor(ev.at / 1000);
  if (ev.result === "error") {
    rec.error = { stage: ev.stage, reason: ev.reason || "error", at: ev.at };
    state.errorsDirty = true;
  } else if (ev.result === "ok" && rec.error && rec.error.stage === ev.stage) {
    rec.error = null; // the stage that failed has now succeeded
    state.errorsDirty = true;
  }
  state.dirty.add(rec.id);
  scheduleRender();
}

// An event that arrived while a snapshot was being fetched may already be in it.
function inTrace(ev) {
  const rec = state.nodes.get(ev.node);
  return !!rec && rec.trace.some((t) => t.at === ev.at && t.stage === ev.stage && t.file === ev.file);
}

async function loadSnapshot() {
  state.reloading = true;
  try {
    const [nodes, status] = await Promise.all([api("nodes"), api("status")]);
    applySnapshot(nodes, status);
  } finally {
    state.reloading = false;
    const held = state.held;
    state.held = [];
    for (const ev of held) if (!inTrace(ev)) applyEvent(ev);
  }
}

// ---- rendering ----------------------------------------------------------------------

function scheduleRender() {
  if (!state.renderTimer) state.renderTimer = setTimeout(render, RENDER_MS);
}

function render() {
  state.renderTimer = 0;
  renderSummary();
  renderTable();
  if (state.selected && state.dirty.has(state.selected)) renderTrace();
  if (state.errorsDirty) renderErrors();
  state.dirty.clear();
}

// Counting 10,000 records every RENDER_MS is far cheaper than keeping counters right
// through every transition, and cannot drift.
function renderSummary() {
  const counts = new Map(STAGES.map((s) => [s, 0]));
  let errors = 0, unseen = 0;
  for (const rec of state.nodes.values()) {
    if (counts.has(rec.stage)) counts.set(rec.stage, counts.get(rec.stage) + 1);
    else if (!rec.stage) unseen++;
    if (rec.error) errors++;
  }
  setText($("#node-count"), String(state.nodes.size));
  for (const s of STAGES) setText($(`#stage-counts [data-stage="${s}"] .value`), String(counts.get(s)));
  setText($("#unseen-count"), String(unseen));
  setText($("#error-count"), String(errors));
  $("#error-count").parentElement.classList.toggle("nonzero", errors > 0);
  setText($("#unknown-count"), String(state.unknownMacs.size));
  const macs = $("#unknown-count").parentElement; // hover shows some of them
  if (macs.dataset.n !== String(state.unknownMacs.size)) {
    macs.dataset.n = state.unknownMacs.size;
    macs.title = [...state.unknownMacs].slice(0, 20).join("\n");
  }
  setText($("#bytes-sent"), humanSize(state.bytesSent));
}

function makeRow(id) {
  const tr = el("tr");
  tr.dataset.node = id;
  tr.tabIndex = 0;
  const cells = {
    id: el("td", "id", id), image: el("td", "image"), addr: el("td", "addr"),
    stage: el("td", "stage"), seen: el("td", "seen"), agent: el("td", "agent"), reason: el("td", "reason"),
  };
  tr.append(...Object.values(cells));
  const row = { tr, cells };
  rows.set(id, row);
  fillRow(row, state.nodes.get(id));
  return row;
}

function fillRow({ tr, cells }, rec) {
  setText(cells.image, rec.image || "—");
  // The configured address, or else the one the node was last seen from.
  setText(cells.addr, rec.ipaddr || rec.seenAddr || "—");
  setText(cells.stage, rec.stage || "—");
  cells.stage.dataset.stage = rec.stage || "none";
  setText(cells.seen, ago(rec.seen));
  setText(cells.agent, agentText(rec.agent));
  setText(cells.reason, rec.error ? `${rec.error.stage}: ${rec.error.reason}` : "");
  tr.classList.toggle("error", !!rec.error);
  tr.classList.toggle("selected", rec.id === state.selected);
}

// Only the first MAX_ROWS matching nodes (in id order) are in the DOM; the filter box
// narrows the set (10,000 live rows would make every filter keystroke and style
// recalculation slow, and nobody reads past a few hundred). A full rebuild happens only
// when the node set or the filter changes; otherwise just the changed rows are refilled,
// and fillRow skips unchanged cells. Row elements are cached across rebuilds.
function renderTable() {
  if (state.structural) {
    state.structural = false;
    if (state.unsorted) state.sortedIds.sort(byId);
    state.unsorted = false;
    const f = state.filter;
    const matching = f ? state.sortedIds.filter((id) => id.toLowerCase().includes(f)) : state.sortedIds;
    const frag = document.createDocumentFragment();
    for (const id of matching.slice(0, MAX_ROWS)) {
      const row = rows.get(id);
      // A cached row missed every update while it was out of the table: refill it.
      if (row) fillRow(row, state.nodes.get(id));
      frag.append((row || makeRow(id)).tr);
    }
    $("#nodes tbody").replaceChildren(frag);
    const total = state.sortedIds.length;
    setText($("#showing"), matching.length > MAX_ROWS
      ? `showing ${MAX_ROWS} of ${matching.length}${f ? " matching" : ""}`
      : f ? `${matching.length} of ${total}` : "");
    return;
  }
  for (const id of state.dirty) {
    const row = rows.get(id);
    if (row && row.tr.isConnected) fillRow(row, state.nodes.get(id));
  }
}

// "5s ago" goes stale on its own: refresh the visible rows once a second.
function tick() {
  for (const tr of $("#nodes tbody").children) {
    const rec = state.nodes.get(tr.dataset.node);
    if (rec) setText(rows.get(rec.id).cells.seen, ago(rec.seen));
  }
  if (state.selected) renderAgentInfo(state.nodes.get(state.selected));
}

function renderTrace() {
  const panel = $("#trace");
  const rec = state.selected && state.nodes.get(state.selected);
  panel.classList.toggle("open", !!rec);
  panel.querySelector(".placeholder").hidden = !!rec;
  panel.querySelector("#trace-close").hidden = !rec;
  setText(panel.querySelector("h2"), rec ? `Boot trace · ${rec.id}` : "Boot trace");
  const list = panel.querySelector(".trace-list");
  if (!rec) { list.replaceChildren(); renderAgentInfo(null); return; }
  const items = rec.trace.map((t) => {
    const li = el("li", t.result || "");
    const stage = el("span", "stage", t.stage);
    stage.dataset.stage = t.stage;
    li.append(stage, el("span", "file", t.file), el("span", "bytes", humanSize(t.bytes)),
      el("time", "at", clock(t.at)), el("span", "result", t.result));
    if (t.reason) li.append(el("span", "reason", t.reason));
    return li;
  });
  if (!items.length) items.push(el("li", "muted", "No boot seen yet."));
  list.replaceChildren(...items);
  renderAgentInfo(rec);
}

function renderAgentInfo(rec) {
  const dl = $("#trace .agent-info");
  dl.hidden = !rec;
  if (!rec) return;
  const a = rec.agent;
  const pairs = a
    ? [["agent check-in", ago(a.last_seen * 1000)], ["in sync", a.in_sync ? "yes" : "no"],
       ["reboot needed", (a.reboot_needed || []).join(", ") || "no"]]
    : [["agent check-in", "never"]];
  // Same shape as last time (the 1 s tick): update the text in place.
  const dds = dl.querySelectorAll("dd");
  if (dds.length === pairs.length && dl.dataset.node === rec.id) {
    pairs.forEach(([, v], i) => setText(dds[i], v));
    return;
  }
  dl.dataset.node = rec.id;
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", null, k), el("dd", null, v)]));
}

function renderErrors() {
  state.errorsDirty = false;
  const failing = [];
  for (const rec of state.nodes.values()) if (rec.error) failing.push(rec);
  failing.sort((a, b) => (b.error.at || 0) - (a.error.at || 0)); // newest first
  const items = failing.slice(0, MAX_ERRORS).map((rec) => {
    const li = el("li", "error", `${rec.id} · ${rec.error.stage} · ${rec.error.reason}`);
    li.dataset.node = rec.id;
    li.tabIndex = 0;
    li.title = rec.error.at ? clock(rec.error.at) : "";
    return li;
  });
  if (failing.length > MAX_ERRORS) items.push(el("li", "muted", `and ${failing.length - MAX_ERRORS} more`));
  $("#errors").replaceChildren(...items);
  $("#errors-empty").hidden = failing.length > 0;
}

function select(id) {
  const prev = state.selected && rows.get(state.selected);
  if (prev) prev.tr.classList.remove("selected");
  state.selected = id;
  const row = id && rows.get(id);
  if (row) row.tr.classList.add("selected");
  renderTrace();
}

// ---- overlays and plugins -----------------------------------------------------------

function fillTable(section, records, toRow) {
  const body = section.querySelector("tbody");
  body.replaceChildren(...records.flatMap(toRow));
  setText(section.querySelector(".panel-error"), records.length ? "" : "none");
}

async function refreshPanels() {
  const jobs = [
    api("overlays").then(({ overlays = [] }) => fillTable($("#overlays"), overlays, (o) => {
      const tr = el("tr");
      tr.append(el("td", null, o.name), el("td", null, o.kind),
        el("td", "num", o.files), el("td", "num", o.templates), el("td", "num", o.nodes));
      return [tr];
    })).catch((err) => panelError($("#overlays"), err)),
    api("plugins").then(({ plugins = [] }) => fillTable($("#plugins"), plugins, (p) => {
      const tr = el("tr", p.error ? "error" : p.enabled ? "" : "disabled");
      tr.append(el("td", null, p.name), el("td", null, p.version), el("td", null, p.world),
        el("td", "path", p.source), el("td", null, p.enabled ? "yes" : "no"));
      if (!p.error) return [tr];
      // A load error is long: give it its own full-width row under the plugin.
      const errRow = el("tr", "error detail");
      const td = el("td", "reason", p.error);
      td.colSpan = 5;
      errRow.append(td);
      return [tr, errRow];
    })).catch((err) => panelError($("#plugins"), err)),
  ];
  await Promise.all(jobs);
}

function panelError(section, err) {
  if (handleAuthError(err)) return;
  setText(section.querySelector(".panel-error"), `could not load: ${err.message}`);
}

// ---- event stream -------------------------------------------------------------------

// gap: the stream was down at some point since the last snapshot, so events may be missing.
const stream = { abort: null, backoff: 1000, gap: false };

function setConnection(kind) {
  const c = $("#connection");
  c.className = `conn ${kind}`;
  setText(c, { live: "live", connecting: "connecting…", reconnecting: "reconnecting…" }[kind] || "disconnected");
}

// EventSource cannot send an Authorization header, so read the stream with fetch and
// parse the SSE framing here: "field: value" lines, a blank line ends an event, lines
// starting with ":" are comments (the server's keep-alives).
async function readStream() {
  const abort = new AbortController();
  stream.abort = abort;
  let idle = 0, connectedAt = 0;
  const resetIdle = () => { clearTimeout(idle); idle = setTimeout(() => abort.abort(), STREAM_IDLE_MS); };
  try {
    const res = await api("events", { signal: abort.signal, headers: { Accept: "text/event-stream" } });
    setConnection("live");
    connectedAt = Date.now();
    // After a reconnect, events may have been missed while we were away: resync.
    if (stream.gap) {
      stream.gap = false;
      loadSnapshot().then(() => showMessage("")).catch((err) => handleAuthError(err)
        || showMessage(`Could not reload the node status (${err.message})`, "warn"));
    }
    resetIdle();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "", type = "", data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      resetIdle();
      buf += decoder.decode(value, { stream: true });
      const lines = buf.split("\n");
      buf = lines.pop(); // an incomplete last line waits for the next chunk
      for (let line of lines) {
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") { // end of one event
          if (data.length && (type === "boot" || type === "")) dispatch(data.join("\n"));
          type = ""; data = [];
        } else if (!line.startsWith(":")) {
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          let value = i < 0 ? "" : line.slice(i + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") type = value;
          else if (field === "data") data.push(value);
        }
      }
    }
  } catch (err) {
    if (handleAuthError(err)) return;
  } finally {
    clearTimeout(idle);
  }
  if (state.stopped) return;
  stream.gap = true;
  setConnection("reconnecting");
  // Start again from 1 s after a long healthy connection; a server that accepts and
  // drops us at once keeps doubling the wait instead.
  if (connectedAt && Date.now() - connectedAt > 30000) stream.backoff = 1000;
  setTimeout(readStream, stream.backoff);
  stream.backoff = Math.min(stream.backoff * 2, 15000);
}

function dispatch(text) {
  try { onBootEvent(JSON.parse(text)); } catch (err) { console.warn("bad event", text, err); }
}

// ---- start --------------------------------------------------------------------------

function wire() {
  $("#stage-counts").replaceChildren(...STAGES.map((s) => {
    const li = el("li", "stat");
    li.dataset.stage = s;
    li.append(el("span", "value", "0"), el("span", "label", s));
    return li;
  }));
  let filterTimer = 0;
  $("#filter").addEventListener("input", (e) => {
    clearTimeout(filterTimer); // typing fast into 10,000 nodes: filter once it settles
    filterTimer = setTimeout(() => {
      state.filter = e.target.value.trim().toLowerCase();
      state.structural = true;
      scheduleRender();
    }, 120);
  });
  const pick = (e) => {
    const target = e.target.closest("[data-node]");
    if (target && (e.type === "click" || e.key === "Enter")) select(target.dataset.node);
  };
  for (const list of [$("#nodes tbody"), $("#errors")]) {
    list.addEventListener("click", pick);
    list.addEventListener("keydown", pick);
  }
  $("#trace-close").addEventListener("click", () => select(null));
  // A new link pasted into this tab changes only the fragment: start over with its token.
  window.addEventListener("hashchange", () => { if (/token=/.test(location.hash)) location.reload(); });
}

async function main() {
  wire();
  state.token = takeToken();
  if (!state.token) {
    showMessage("No access token: open the link printed by `wulf dashboard`");
    return;
  }
  setConnection("connecting");
  refreshPanels();
  // Retry the first load until it works (the server may be restarting), unless refused.
  for (let wait = 1000; ; wait = Math.min(wait * 2, 15000)) {
    try {
      await loadSnapshot();
      showMessage("");
      break;
    } catch (err) {
      if (handleAuthError(err)) return;
      showMessage(`Could not load the node status (${err.message}); retrying…`, "warn");
      await new Promise((r) => setTimeout(r, wait));
    }
  }
  if (state.stopped) return;
  readStream();
  setInterval(tick, 1000);
  setInterval(() => { if (!state.stopped) refreshPanels(); }, PANEL_REFRESH_MS);
}

main();
