// switchyard's operator console: a single page with hash routes. Every piece of data
// comes from the admin API with the token kept in sessionStorage (this tab only); the
// page builds its DOM with text nodes, never HTML from data.
"use strict";

const TOKEN_KEY = "switchyard.adminToken";
const HISTORY_CAP = 900; // samples kept in the page, as on the server (15 min at 1 s)
const $ = (id) => document.getElementById(id);

const live = {
  state: null,          // the last AdminState
  times: [],            // sample times (ms), oldest first
  series: new Map(),    // series name -> values, one per time
  stream: null,         // AbortController of the open event stream
  listeners: new Set(), // functions called with each new state
};

// ---------------------------------------------------------------------------------
// DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Replaces the children of `el` (arrays flattened, absent values left out).
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

function fmtNum(n) {
  if (n === undefined || n === null) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtAge(ms) {
  if (ms === undefined || ms === null) return "–";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

// ---------------------------------------------------------------------------------
// The admin API

class Refused extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
  const resp = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (resp.status === 401 || resp.status === 403) {
    logout("The admin token was refused: log in again with server.admin_token.");
    throw new Refused("refused");
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { error: text }; }
  if (!resp.ok) {
    throw new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
  }
  return body;
}

const post = (path, body, type = "application/json") =>
  api(path, {
    method: "POST",
    headers: { "content-type": type },
    body: typeof body === "string" ? body : JSON.stringify(body || {}),
  });

// ---------------------------------------------------------------------------------
// Login

function showLogin(message) {
  $("login").hidden = false;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("live").hidden = true;
  $("banner").hidden = true;
  fill($("app"));
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("token").focus();
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopStream();
  showLogin(message);
}

async function tryLogin(token) {
  let resp;
  try {
    resp = await fetch("/admin/state", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  } catch (e) {
    return `Cannot reach switchyard: ${e.message}`;
  }
  if (resp.ok) return null;
  if (resp.status === 401 || resp.status === 403) {
    return "Refused: this is not the admin token (server.admin_token). Check it and try again.";
  }
  let why = "";
  try { why = (await resp.json()).error; } catch { /* not JSON */ }
  return `switchyard answered ${resp.status}${why ? `: ${why}` : ""}`;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  const refused = await tryLogin(token);
  if (refused) {
    showLogin(refused);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  start();
});

$("logout").addEventListener("click", () => logout(""));

// ---------------------------------------------------------------------------------
// Live state: the history once, then the event stream (fetch, so that it carries the
// bearer token, which EventSource cannot send).

function pushSample(state) {
  const counters = [];
  for (const [kind, nodes] of [["sources", state.sources], ["pipelines", state.pipelines], ["sinks", state.sinks]]) {
    for (const n of nodes) {
      for (const [field, v] of Object.entries(n.counters)) counters.push([`${kind}.${n.name}.${field}`, v]);
    }
  }
  // The other series the server keeps (crates/runtime/src/console/monitor.rs, series_of).
  for (const n of state.sinks) {
    counters.push([`sinks.${n.name}.latency_sum_us`, n.latency_sum_us || 0], [`sinks.${n.name}.latency_count`, n.latency_count || 0]);
  }
  for (const n of state.sources) {
    if (n.slot_lag_bytes !== undefined && n.slot_lag_bytes !== null) counters.push([`sources.${n.name}.slot_lag_bytes`, Math.max(0, n.slot_lag_bytes)]);
  }
  for (const q of state.queues) {
    counters.push([`queues.${q.name}.produced`, q.produced || 0]);
    for (const g of q.groups) counters.push([`queues.${q.name}.groups.${g.name}.acked`, g.acked || 0]);
  }
  const last = live.times[live.times.length - 1];
  if (last !== undefined && state.time_ms <= last) return;
  if (live.times.length >= HISTORY_CAP) {
    live.times.shift();
    for (const values of live.series.values()) values.shift();
  }
  live.times.push(state.time_ms);
  for (const [name, v] of counters) {
    let values = live.series.get(name);
    // A series seen for the first time takes its first value for the earlier samples
    // (as on the server), so that a rate does not leap from zero.
    if (!values) { values = new Array(live.times.length - 1).fill(v); live.series.set(name, values); }
    values.push(v);
  }
}

function receive(state) {
  live.state = state;
  pushSample(state);
  const banner = $("banner");
  banner.hidden = state.ready.ready;
  banner.textContent = state.ready.ready ? "" : `Not ready: ${state.ready.reason}`;
  for (const f of live.listeners) f(state);
}

function setLive(text, ok) {
  const el = $("live");
  el.hidden = false;
  el.textContent = text;
  el.classList.toggle("off", !ok);
}

function stopStream() {
  if (live.stream) live.stream.abort();
  live.stream = null;
}

async function loadHistory() {
  const hist = await api("/admin/history");
  live.times = hist.times.slice(-HISTORY_CAP);
  live.series = new Map(Object.entries(hist.series).map(([k, v]) => [k, v.slice(-HISTORY_CAP)]));
}

async function openStream() {
  stopStream();
  const ctrl = new AbortController();
  live.stream = ctrl;
  const token = sessionStorage.getItem(TOKEN_KEY);
  while (!ctrl.signal.aborted) {
    try {
      const resp = await fetch("/admin/events", {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        signal: ctrl.signal,
        cache: "no-store",
      });
      if (resp.status === 401 || resp.status === 403) { logout("The admin token was refused: log in again."); return; }
      if (resp.status === 429) {
        // Too many streams: poll instead until one frees up.
        setLive("live (polling)", true);
        receive(await api("/admin/state"));
        await sleep(2000, ctrl.signal);
        continue;
      }
      if (!resp.ok) throw new Error(`${resp.status}`);
      setLive("● live", true);
      await readEvents(resp.body, ctrl.signal);
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    setLive("reconnecting…", false);
    await sleep(2000, ctrl.signal);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Reads `text/event-stream` frames: lines `event: …` and `data: …`, a blank line ends one.
async function readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (event === "state" && data.length) receive(JSON.parse(data.join("\n")));
    }
  }
}

// ---------------------------------------------------------------------------------
// Rates from the history

function seriesOf(name) { return live.series.get(name) || []; }

// Per-second rate of a counter over the last `window` samples.
function rate(name, window = 5) {
  const v = seriesOf(name);
  const n = Math.min(window, v.length - 1);
  if (n < 1) return 0;
  const t = live.times;
  const dt = (t[t.length - 1] - t[t.length - 1 - n]) / 1000;
  return dt > 0 ? Math.max(0, v[v.length - 1] - v[v.length - 1 - n]) / dt : 0;
}

// Per-sample rates of a counter, for charts.
function rates(name) {
  const v = seriesOf(name);
  const t = live.times;
  const out = [];
  for (let i = 1; i < v.length; i++) {
    const dt = (t[i] - t[i - 1]) / 1000 || 1;
    out.push(Math.max(0, v[i] - v[i - 1]) / dt);
  }
  return out;
}

// Mean of a sum over a count between samples (the delivery latency of a sink), per
// sample; null where nothing was counted.
function means(sumName, countName) {
  const sum = seriesOf(sumName), count = seriesOf(countName);
  const out = [];
  for (let i = 1; i < sum.length; i++) {
    const n = count[i] - count[i - 1];
    out.push(n > 0 ? Math.max(0, sum[i] - sum[i - 1]) / n : null);
  }
  return out;
}

// The mean of `sumName / countName` over the last `window` samples, or null.
function recentMean(sumName, countName, window = 5) {
  const sum = seriesOf(sumName), count = seriesOf(countName);
  const n = Math.min(window, sum.length - 1);
  if (n < 1) return null;
  const dc = count[count.length - 1] - count[count.length - 1 - n];
  return dc > 0 ? (sum[sum.length - 1] - sum[sum.length - 1 - n]) / dc : null;
}

function fmtMicros(us) {
  if (us === undefined || us === null) return "–";
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 2 : 1)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}

// ---------------------------------------------------------------------------------
// Pages

const routes = [
  [/^#\/overview$/, overviewPage],
  [/^#\/pipelines\/(.+)$/, pipelinePage],
  [/^#\/queues$/, queuesPage],
  [/^#\/dead-letters$/, deadLettersPage],
  [/^#\/sources$/, sourcesPage],
  [/^#\/config$/, configPage],
];

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  const hash = location.hash || "#/overview";
  live.listeners.clear();
  for (const a of document.querySelectorAll("#nav a")) {
    const current = hash === a.getAttribute("href") || (a.getAttribute("href") === "#/overview" && hash.startsWith("#/pipelines/"));
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const app = $("app");
  fill(app);
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (m) {
      page(app, ...m.slice(1).map(decodedOrAsIs)).catch((e) => {
        if (!(e instanceof Refused)) app.append(h("p", { class: "error", role: "alert" }, e.message));
      });
      return;
    }
  }
  location.hash = "#/overview";
}

window.addEventListener("hashchange", route);

// Overview: sources → pipelines (with plugins) → sinks, live rates and states.
async function overviewPage(app) {
  app.append(h("h1", {}, "Overview"));
  const graph = h("div", { class: "graph", id: "graph" });
  app.append(graph);
  const draw = (state) => {
    const sources = h("section", { class: "column", "aria-label": "Sources" }, h("h2", {}, "Sources"),
      state.sources.map((n) => node("sources", n, [
        ["in/s", fmtNum(rate(`sources.${n.name}.events_in`))],
        ["events", fmtNum(n.counters.events_in)],
        ["errors", fmtNum(n.counters.errors)],
      ])));
    const pipelines = h("section", { class: "column", "aria-label": "Pipelines" }, h("h2", {}, "Pipelines"),
      state.pipelines.map((p) => node("pipelines", p, [
        ["in/s", fmtNum(rate(`pipelines.${p.name}.events_in`))],
        ["done/s", fmtNum(rate(`pipelines.${p.name}.delivered`))],
        ["read", fmtNum(p.counters.events_in)],
        ["errors", fmtNum(p.counters.errors)],
      ], p.plugins.length ? h("ul", { class: "chips", "aria-label": "Plugins" }, p.plugins.map((x) => h("li", {}, x))) : h("p", { class: "muted" }, "no plugins"),
      h("a", { href: `#/pipelines/${encodeURIComponent(p.name)}` }, "Details"))));
    const sinks = h("section", { class: "column", "aria-label": "Sinks" }, h("h2", {}, "Sinks"),
      state.sinks.map((n) => node("sinks", n, [
        ["delivered/s", fmtNum(rate(`sinks.${n.name}.delivered`))],
        ["delivered", fmtNum(n.counters.delivered)],
        ["retried", fmtNum(n.counters.retried)],
        ["dead-lettered", fmtNum(n.counters.dead_lettered)],
      ])));
    fill(graph, sources, pipelines, sinks);
    drawEdges(graph, state);
  };
  if (live.state) draw(live.state);
  live.listeners.add(draw);
}

function node(kind, n, stats, ...extra) {
  return h("article", { class: `node ${n.state}`, id: `node-${kind}-${n.name}`, "data-name": n.name },
    h("span", { class: `state ${n.state}` }, n.state),
    h("h3", {}, n.name),
    n.type ? h("div", { class: "kind" }, n.type) : h("div", { class: "kind" }, `${n.sources.join(", ")} → ${n.sinks.join(", ")}`),
    n.reason ? h("p", { class: "reason" }, n.reason) : null,
    extra,
    h("dl", {}, stats.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-stat": k }, v)])));
}

// Lines from each source to its pipelines and from each pipeline to its sinks.
function drawEdges(graph, state) {
  const svg = s("svg", { class: "edges", "aria-hidden": "true" });
  graph.prepend(svg);
  const box = graph.getBoundingClientRect();
  const at = (id) => document.getElementById(id)?.getBoundingClientRect();
  const link = (from, to) => {
    const a = at(from), b = at(to);
    if (!a || !b) return;
    const x1 = a.right - box.left, y1 = a.top + a.height / 2 - box.top;
    const x2 = b.left - box.left, y2 = b.top + b.height / 2 - box.top;
    const mx = (x1 + x2) / 2;
    svg.append(s("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
  };
  for (const p of state.pipelines) {
    for (const src of p.sources) link(`node-sources-${src}`, `node-pipelines-${p.name}`);
    for (const sink of p.sinks) link(`node-pipelines-${p.name}`, `node-sinks-${sink}`);
  }
}

// Pipeline detail: rates of the pipeline and of each of its sinks, over the history.
async function pipelinePage(app, name) {
  app.append(h("p", {}, h("a", { href: "#/overview" }, "← Overview")), h("h1", {}, `Pipeline ${name}`));
  const body = h("div", {});
  app.append(body);
  const draw = (state) => {
    const p = state.pipelines.find((x) => x.name === name);
    if (!p) { fill(body, h("p", { class: "error" }, `No pipeline named ${name}.`)); return; }
    fill(body,
      h("p", {}, `Reads ${p.sources.join(", ")}; delivers to ${p.sinks.join(", ") || "what its router chooses"}; dead letters go to `,
        h("a", { href: "#/dead-letters" }, p.dead_letter), "."),
      p.plugins.length ? h("ul", { class: "chips", "aria-label": "Plugins" }, p.plugins.map((x) => h("li", {}, x))) : null,
      h("h2", {}, "Checkpoints"),
      readersTable(p),
      h("h2", {}, "Events per second (last 15 minutes)"),
      h("div", { class: "charts" },
        chart(`pipeline ${name}`, [["events_in", `pipelines.${name}.events_in`], ["delivered", `pipelines.${name}.delivered`]]),
        p.sinks.map((sink) => chart(`sink ${sink}`, [
          ["delivered", `sinks.${sink}.delivered`],
          ["retried", `sinks.${sink}.retried`],
          ["dead_lettered", `sinks.${sink}.dead_lettered`],
        ]))),
      h("h2", {}, "Delivery latency (mean per second, last 15 minutes)"),
      h("div", { class: "charts" }, p.sinks.map((sink) => latencyChart(sink))),
      h("h2", {}, "Plugins"),
      pluginsTable(p));
  };
  if (live.state) draw(live.state);
  live.listeners.add(draw);
}

// Where each reader of the pipeline stands: one row per source partition.
function readersTable(p) {
  const readers = p.readers || [];
  if (!readers.length) return h("p", { class: "muted", id: "readers" }, "No reader has started yet.");
  return h("div", { class: "panel" }, h("table", { id: "readers" },
    h("thead", {}, h("tr", {}, h("th", {}, "Source"), h("th", { class: "num" }, "Partition"),
      h("th", { class: "num" }, "Checkpoint (low watermark)"), h("th", { class: "num wide" }, "Stored"),
      h("th", { class: "num" }, "In flight"), h("th", { class: "num wide" }, "Behind"))),
    h("tbody", {}, readers.map((r) => h("tr", { "data-source": r.source, "data-partition": r.partition },
      h("td", {}, r.source), h("td", { class: "num" }, r.partition),
      h("td", { class: "num", "data-stat": "checkpoint" }, fmtNum(r.checkpoint)),
      h("td", { class: "num wide" }, fmtNum(r.committed)),
      h("td", { class: "num", "data-stat": "in-flight" }, fmtNum(r.in_flight)),
      h("td", { class: "num wide" }, fmtNum(r.lag)))))));
}

// What each plugin of the pipeline did: calls, events, fuel and time per call, failures
// by cause.
function pluginsTable(p) {
  const stats = p.plugin_stats || [];
  if (!stats.length) return h("p", { class: "muted", id: "plugins" }, "This pipeline runs no plugin.");
  return h("div", { class: "panel" }, h("table", { id: "plugins" },
    h("thead", {}, h("tr", {}, h("th", {}, "Plugin"), h("th", { class: "num" }, "Calls"), h("th", { class: "num wide" }, "Events"),
      h("th", { class: "num" }, "Fuel / call"), h("th", { class: "num" }, "Time / call"), h("th", { class: "num wide" }, "Time in all"), h("th", {}, "Errors by cause"))),
    h("tbody", {}, stats.map((x) => {
      const per = (v) => (x.calls ? v / x.calls : null);
      const errors = Object.entries(x.errors || {});
      return h("tr", { "data-plugin": x.plugin },
        h("td", {}, x.plugin),
        h("td", { class: "num", "data-stat": "calls" }, fmtNum(x.calls)),
        h("td", { class: "num wide" }, fmtNum(x.events)),
        h("td", { class: "num" }, x.calls ? fmtNum(Math.round(per(x.fuel))) : "–"),
        h("td", { class: "num" }, fmtMicros(per(x.time_us))),
        h("td", { class: "num wide" }, fmtMicros(x.time_us)),
        h("td", { "data-stat": "errors" }, errors.length ? errors.map(([cause, n]) => h("div", { class: cause === "split" ? "muted" : "reason" }, `${cause.replace(/_/g, " ")}: ${fmtNum(n)}`)) : h("span", { class: "muted" }, "none")));
    }))));
}

// The mean delivery latency of a sink, per second, over the history.
function latencyChart(sink) {
  const sum = `sinks.${sink}.latency_sum_us`, count = `sinks.${sink}.latency_count`;
  const now = recentMean(sum, count);
  return lineChart(`latency ${sink}`, [["latency", means(sum, count)]], {
    format: fmtMicros,
    label: `${sink}: mean delivery latency`,
    legend: [h("span", { class: "latency" }, `mean ${now === null ? "–" : fmtMicros(now)}`)],
  });
}

// A small line chart of some series (null: no value at that sample), newest at the
// right; `limit` draws a dashed line at that value.
function lineChart(title, data, { format = fmtNum, label = title, legend = [], limit = null, id } = {}) {
  const W = 300, H = 80;
  const values = data.flatMap(([, v]) => v).filter((y) => y !== null);
  const max = Math.max(limit === null ? 1 : limit * 1.1, ...values, 1e-9);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
  svg.append(s("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }));
  const y = (v) => (H - 2 - (v / max) * (H - 6)).toFixed(1);
  if (limit !== null) svg.append(s("line", { class: "limit", x1: 0, y1: y(limit), x2: W, y2: y(limit) }));
  const span = Math.max(60, ...data.map(([, v]) => v.length));
  const step = W / (span - 1);
  for (const [cls, v] of data) {
    const x0 = W - (v.length - 1) * step;
    // A gap where a value is missing: one polyline per run of values.
    let run = [];
    const flush = () => {
      if (run.length >= 2) svg.append(s("polyline", { class: `line ${cls}`, points: run.join(" ") }));
      else if (run.length === 1) { const [cx, cy] = run[0].split(","); svg.append(s("circle", { class: `dot ${cls}`, cx, cy, r: 1.6 })); }
      run = [];
    };
    v.forEach((val, i) => { if (val === null) flush(); else run.push(`${(x0 + i * step).toFixed(1)},${y(val)}`); });
    flush();
  }
  return h("figure", { class: "chart", id },
    h("h3", {}, title),
    svg,
    h("figcaption", { class: "legend" }, legend,
      h("span", { class: "muted" }, `last ${fmtAge(span * 1000)} · top ${format(max)}`)));
}

// A small line chart of the per-second rates of some counters.
function chart(title, lines) {
  const W = 300, H = 80;
  const data = lines.map(([cls, name]) => [cls, rates(name)]);
  const max = Math.max(1, ...data.flatMap(([, v]) => v));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": `${title}: events per second` });
  svg.append(s("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }));
  // At least a minute wide, so that a young history does not stretch over the chart.
  const span = Math.max(60, ...data.map(([, v]) => v.length));
  const step = W / (span - 1);
  for (const [cls, v] of data) {
    if (v.length < 2) continue;
    const x0 = W - (v.length - 1) * step;
    const pts = v.map((y, i) => `${(x0 + i * step).toFixed(1)},${(H - 2 - (y / max) * (H - 6)).toFixed(1)}`);
    svg.append(s("polyline", { class: `line ${cls}`, points: pts.join(" ") }));
  }
  const now = (name) => fmtNum(rate(name));
  return h("figure", { class: "chart" },
    h("h3", {}, title),
    svg,
    h("figcaption", { class: "legend" },
      lines.map(([cls, name, label]) => h("span", { class: cls }, `${label || cls.replace("_", "-")} ${now(name)}/s`)),
      h("span", { class: "muted" }, `last ${fmtAge(span * 1000)} · max ${fmtNum(max)}/s`)));
}

// Queues: depth, size and work groups; peek at stored messages.
async function queuesPage(app) {
  app.append(h("h1", {}, "Queues"));
  const table = h("div", { class: "panel" });
  const charts = h("div", { class: "charts" });
  const peek = h("section", { "aria-live": "polite" });
  app.append(table, h("h2", {}, "Records in and acked per second (last 15 minutes)"), charts, peek);
  const draw = (state) => {
    fill(table, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Queue"), h("th", {}, "Role"), h("th", { class: "num" }, "Depth"),
        h("th", { class: "num wide" }, "Size"), h("th", { class: "num" }, "In/s"),
        h("th", {}, "Work groups (depth / in flight / delayed / oldest · acked/s)"), h("th", {}, ""))),
      h("tbody", {}, state.queues.map((q) => h("tr", { "data-queue": q.name },
        h("td", {}, q.name), h("td", {}, q.role.replace("_", " ")), h("td", { class: "num" }, fmtNum(q.depth)),
        h("td", { class: "num wide" }, fmtBytes(q.bytes)),
        h("td", { class: "num", "data-stat": "in/s" }, fmtNum(rate(`queues.${q.name}.produced`))),
        h("td", {}, q.groups.length ? q.groups.map((g) => h("div", { "data-group": g.name }, `${g.name}: ${fmtNum(g.depth)} / ${fmtNum(g.in_flight)} / ${fmtNum(g.delayed)} / ${fmtAge(g.oldest_ms)} · ${fmtNum(rate(`queues.${q.name}.groups.${g.name}.acked`))}`)) : h("span", { class: "muted" }, "none")),
        h("td", {}, q.role === "intake" ? null : h("button", { type: "button", class: "quiet", onclick: () => peekAt(q.name, peek) }, `Peek ${q.name}`)))))));
    fill(charts, state.queues.map((q) => chart(`queue ${q.name}`, [
      ["events_in", `queues.${q.name}.produced`, "in"],
      ...q.groups.map((g) => ["delivered", `queues.${q.name}.groups.${g.name}.acked`, `acked by ${g.name}`]),
    ])));
  };
  if (live.state) draw(live.state);
  live.listeners.add(draw);
}

async function peekAt(queue, into) {
  const answer = await api(`/admin/queues/${encodeURIComponent(queue)}/messages?limit=20`);
  fill(into, h("h2", {}, `First messages of ${queue}`),
    answer.messages.length ? answer.messages.map((m) => eventView(m)) : h("p", { class: "muted" }, "The queue holds no messages."));
}

function eventView(record) {
  const e = record.event;
  return h("details", { class: "panel" },
    h("summary", {}, `${record.partition}/${record.offset} · ${e.id || "undecodable"} · ${e.kind || ""}`),
    h("pre", {}, e.decode_error ? e.decode_error : prettyEvent(e)));
}

function prettyPayload(e) {
  if (e.payload === undefined) return "(no payload)";
  if (e.payload_encoding === "base64") return `(base64) ${e.payload}`;
  return typeof e.payload === "string" ? e.payload : JSON.stringify(e.payload, null, 2);
}

function prettyEvent(e) {
  const headers = Object.entries(e.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
  return `id: ${e.id}\nsource: ${e.source}\nkind: ${e.kind}\nkey: ${e.key ?? "–"}\ncontent-type: ${e.content_type}\n\n${headers}\n\n${prettyPayload(e)}`;
}

// A part of the address as written when it is not valid percent-encoding (a hand-typed
// `%`), instead of a blank page.
function decodedOrAsIs(part) {
  try { return decodeURIComponent(part); } catch { return part; }
}

// Dead letters: list, show one, replay one / the selected / all, purge.
async function deadLettersPage(app) {
  app.append(h("h1", {}, "Dead letters"));
  const queues = (live.state ? live.state.queues : []).filter((q) => q.role === "dead_letter").map((q) => q.name);
  if (!queues.length) { app.append(h("p", { class: "muted" }, "No dead-letter queue.")); return; }
  const select = h("select", { id: "dlq", "aria-label": "Dead-letter queue" }, queues.map((q) => h("option", { value: q }, q)));
  const status = h("p", { id: "dlq-status", role: "status" });
  const list = h("div", { class: "panel" });
  const detail = h("section", { id: "dlq-detail" });
  const selected = () => [...list.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
  // One replay or purge at a time (the server answers 409 to a second one): the
  // buttons do nothing while one runs.
  let busy = false;
  const exclusive = async (f) => {
    if (busy) { status.textContent = "A replay or purge is running; wait for its answer."; return; }
    busy = true;
    try { await f(); } finally { busy = false; }
  };
  const replay = (body, what) => exclusive(async () => {
    status.textContent = `Replaying ${what}…`;
    const a = await post(`/admin/dlq/${encodeURIComponent(select.value)}/replay`, body);
    status.textContent = `Replayed ${a.replayed}` + (a.skipped
      ? `, ${a.skipped} skipped. Skipped ones stay listed, and so do replayed ones listed after the first skipped one: replaying those again sends them again.`
      : ".");
    await load();
  });
  const load = async () => {
    const answer = await api(`/admin/dlq/${encodeURIComponent(select.value)}?limit=200`);
    const rows = answer.dead_letters;
    const now = Date.now();
    fill(list, rows.length ? h("table", { id: "dead-letters" },
      h("thead", {}, h("tr", {}, h("th", {}, h("span", { class: "muted" }, "Pick")), h("th", {}, "Event"), h("th", {}, "Sink"),
        h("th", {}, "Reason"), h("th", { class: "num" }, "Attempts"), h("th", { class: "num wide" }, "Age"), h("th", {}, ""))),
      h("tbody", {}, rows.map((r) => {
        const e = r.event, hd = e.headers || {};
        const at = Number(hd["x-switchyard-dead-letter-at-ms"]) || e.timestamp_ms;
        return h("tr", { "data-id": e.id },
          h("td", {}, h("input", { type: "checkbox", value: e.id, "aria-label": `Pick ${e.id}` })),
          h("td", { class: "mono" }, h("button", { type: "button", class: "quiet", onclick: () => show(r) }, e.id || "undecodable")),
          h("td", {}, hd["x-switchyard-dead-letter-sink"] || hd["x-switchyard-dead-letter-plugin"] || hd["x-switchyard-dead-letter-queue"] || "–"),
          h("td", {}, hd["x-switchyard-dead-letter-error"] || e.decode_error || "–"),
          h("td", { class: "num" }, hd["x-switchyard-dead-letter-attempts"] || "–"),
          h("td", { class: "num wide" }, at ? fmtAge(now - at) : "–"),
          h("td", {}, e.id ? h("button", { type: "button", onclick: guard(() => replay({ ids: [e.id] }, e.id)) }, "Replay") : ""));
      }))) : h("p", { class: "muted" }, "No dead letters."));
    fill(detail);
    return rows.length;
  };
  const show = (r) => {
    fill(detail, h("h2", {}, `Dead letter ${r.event.id}`),
      h("h3", {}, "Headers"),
      h("pre", { class: "headers" }, Object.entries(r.event.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n") || "(none)"),
      h("h3", {}, "Payload"),
      h("pre", { class: "payload" }, r.event.decode_error || prettyPayload(r.event)));
    detail.scrollIntoView({ block: "nearest" });
  };
  const purge = () => exclusive(async () => {
    if (!(await confirmDialog(`Drop every dead letter of ${select.value}, also any that arrived since this list was loaded? They cannot be replayed afterwards.`, "Purge"))) return;
    const a = await post(`/admin/dlq/${encodeURIComponent(select.value)}/purge`);
    status.textContent = `Purged ${a.purged}.`;
    await load();
  });
  const guard = (f) => () => f().catch((e) => { if (!(e instanceof Refused)) status.textContent = e.message; });
  app.append(h("div", { class: "toolbar" },
    h("label", { for: "dlq" }, "Queue"), select,
    h("button", { type: "button", class: "quiet", onclick: guard(load) }, "Refresh"),
    h("button", { type: "button", onclick: guard(() => { const ids = selected(); return ids.length ? replay({ ids }, `${ids.length} selected`) : Promise.resolve(status.textContent = "Pick dead letters first."); }) }, "Replay selected"),
    h("button", { type: "button", onclick: guard(() => replay({}, "all")) }, "Replay all"),
    h("button", { type: "button", class: "danger", onclick: guard(purge) }, "Purge…")),
    status, list, detail);
  select.addEventListener("change", guard(load));
  await load();
}

function confirmDialog(text, ok) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

// Postgres sources: replication status, slot lag, snapshot progress and actions. The
// status is fetched again with each state the stream brings (once a second).
async function sourcesPage(app) {
  app.append(h("h1", {}, "Postgres sources"));
  const names = (live.state ? live.state.sources : []).filter((x) => x.type === "postgres_cdc").map((x) => x.name);
  if (!names.length) { app.append(h("p", { class: "muted" }, "No postgres_cdc source in this config.")); return; }
  const panels = [];
  for (const name of names) {
    const status = h("div", {});
    const lag = h("div", { class: "charts" });
    const message = h("p", { role: "status" });
    const table = h("input", { id: `snapshot-table-${name}`, name: "table", placeholder: "schema.table", required: true });
    const where = h("input", { id: `snapshot-where-${name}`, name: "where", placeholder: "optional SQL condition, e.g. created_at > now() - interval '1 day'", class: "where" });
    const form = h("form", { class: "toolbar" },
      h("label", { for: `snapshot-table-${name}` }, "Snapshot a table"), table,
      h("label", { for: `snapshot-where-${name}` }, "where"), where,
      h("button", { type: "submit" }, "Start snapshot"));
    const panel = { name, status, lag, message, table, where };
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      snapshotAction(panel, table.value.trim(), "start", where.value.trim());
    });
    app.append(h("section", { class: "panel", id: `source-${name}` }, h("h2", {}, name), status, lag, form, message));
    panels.push(panel);
  }
  const refresh = () => Promise.all(panels.map((p) => {
    drawLag(p);
    return drawSource(p).catch((e) => {
      if (!(e instanceof Refused)) p.message.textContent = e.message;
    });
  }));
  await refresh();
  let busy = false;
  live.listeners.add(async () => {
    if (busy) return;
    busy = true;
    try { await refresh(); } finally { busy = false; }
  });
}

// The slot's lag over the history, against the source's `max_slot_lag` (it warns beyond).
function drawLag(panel) {
  const node = (live.state ? live.state.sources : []).find((x) => x.name === panel.name);
  if (!node) return;
  const limit = node.max_slot_lag_bytes ?? null;
  const values = seriesOf(`sources.${panel.name}.slot_lag_bytes`);
  const now = node.slot_lag_bytes ?? null;
  fill(panel.lag, lineChart(`slot lag ${panel.name}`, [["lag", values]], {
    id: `lag-${panel.name}`,
    format: fmtBytes,
    limit,
    label: `${panel.name}: replication slot lag in bytes, limit ${limit === null ? "none" : fmtBytes(limit)}`,
    legend: [
      h("span", { class: "lag" }, `lag ${now === null ? "–" : fmtBytes(Math.max(0, now))}`),
      limit !== null ? h("span", { class: "limit" }, `max_slot_lag ${fmtBytes(limit)}`) : null,
    ],
  }));
}

async function snapshotAction(panel, table, action, filter = "") {
  try {
    const body = action === "start" ? (filter ? { table, where: filter } : { table }) : { table, action };
    const a = await post(`/admin/sources/${encodeURIComponent(panel.name)}/snapshot`, body);
    panel.message.textContent = `Snapshot of ${a.table}: ${a.snapshot}.`;
  } catch (e) {
    if (!(e instanceof Refused)) panel.message.textContent = e.message;
  }
  await drawSource(panel);
}

function replicationState(st) {
  if (st.stopped) return "stopped";
  if (!st.connected) return st.last_error ? "reconnecting" : "connecting";
  return "streaming";
}

async function drawSource(panel) {
  const st = (await api(`/admin/sources/${encodeURIComponent(panel.name)}/status`)).status;
  const act = (table, action) => () => snapshotAction(panel, table, action);
  // Fills the form with the table and its last filter, to change or clear before starting.
  const again = (table, filter) => {
    panel.table.value = table;
    panel.where.value = filter || "";
    panel.where.focus();
    panel.message.textContent = `Start snapshot of ${table} again, with this condition or none.`;
  };
  const tables = st.snapshot || {};
  fill(panel.status,
    h("p", {}, `slot ${st.slot} · ${st.connected ? "connected" : "not connected"} · slot lag ${fmtBytes(Math.max(0, st.slot_lag_bytes))} · confirmed ${st.confirmed_lsn} · ${fmtNum(st.events)} events · ${fmtNum(st.reconnects)} reconnects`),
    h("p", { class: "replication", "data-state": replicationState(st) }, `Replication: ${replicationState(st)}`,
      st.streaming_transactions ? ` · ${fmtNum(st.streaming_transactions)} large transactions streaming (${fmtBytes(st.streaming_buffered_bytes)} buffered)` : "",
      st.spilled_bytes ? ` · ${fmtBytes(st.spilled_bytes)} spilled to disk` : ""),
    st.last_error ? h("p", { class: "reason" }, st.last_error) : null,
    h("h3", {}, "Snapshots"),
    Object.keys(tables).length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Table"), h("th", {}, "State"), h("th", {}, "Progress"), h("th", { class: "num" }, "Rows"), h("th", { class: "num wide" }, "ETA"), h("th", {}, "Actions"))),
      h("tbody", {}, Object.entries(tables).map(([table, p]) => {
        // Done is 100% whatever the planner estimated (a filtered estimate can be far off).
        const pct = p.state === "done" ? 100 : p.rows_estimate ? Math.min(100, Math.round((p.rows_acknowledged / Math.max(1, p.rows_estimate)) * 100)) : 0;
        const bar = h("span", {});
        bar.style.width = `${pct}%`;
        return h("tr", { "data-table": table, "data-state": p.state },
          h("td", {}, table, p.filter ? h("div", { class: "muted" }, `where ${p.filter}`) : null),
          h("td", {}, p.state, p.error ? h("div", { class: "reason" }, p.error) : null),
          h("td", {}, h("div", { class: "progress", role: "progressbar", "aria-label": `${table} snapshot`, "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 }, bar)),
          h("td", { class: "num" }, `${fmtNum(p.rows_acknowledged)}${p.rows_estimate ? ` / ~${fmtNum(p.rows_estimate)}` : ""}`),
          h("td", { class: "num wide" }, p.eta_seconds !== null && p.eta_seconds !== undefined ? fmtAge(p.eta_seconds * 1000) : "–"),
          h("td", {}, h("div", { class: "toolbar" },
            p.state === "running" ? h("button", { type: "button", class: "quiet", onclick: act(table, "pause") }, "Pause") : null,
            p.state === "paused" ? h("button", { type: "button", class: "quiet", onclick: act(table, "resume") }, "Resume") : null,
            ["running", "paused", "pending"].includes(p.state) ? h("button", { type: "button", class: "quiet", onclick: act(table, "cancel") }, "Cancel") : null,
            ["done", "cancelled"].includes(p.state) ? h("button", { type: "button", class: "quiet", onclick: () => again(table, p.filter) }, "Snapshot again…") : null)));
      }))) : h("p", { class: "muted" }, "No snapshot."));
}

// Config: the running config (secrets masked) and a validator for an edited one.
async function configPage(app) {
  app.append(h("h1", {}, "Config"));
  const running = await api("/admin/config");
  const text = h("textarea", { id: "config-text", spellcheck: "false", "aria-label": "Config to validate (TOML)" });
  const result = h("div", { id: "validate-result", role: "status" });
  const validate = async () => {
    fill(result, "Validating…");
    try {
      const a = await post("/admin/config/validate", text.value, "application/toml");
      fill(result,
        a.ok ? h("p", { class: "ok" }, "Valid: switchyard would start with this config (nothing was applied).") : h("p", { class: "error" }, `${a.issues.length} problem(s):`),
        h("ul", { class: "issues" }, a.issues.map(issueItem)),
        a.warnings.length ? [h("p", {}, "Warnings:"), h("ul", { class: "warnings" }, a.warnings.map(issueItem))] : null);
    } catch (e) {
      if (!(e instanceof Refused)) fill(result, h("p", { class: "error" }, e.message));
    }
  };
  app.append(
    h("h2", {}, "Validate an edited config"),
    h("p", { class: "muted" }, "Paste a TOML config: it is checked as `switchyard validate` would, and nothing is applied."),
    text,
    h("div", { class: "toolbar" }, h("button", { type: "button", onclick: validate }, "Validate")),
    result,
    h("h2", {}, "Running config (secrets masked)"),
    h("pre", { id: "running-config" }, JSON.stringify(running, null, 2)));
}

function issueItem(i) {
  const where = i.line ? ` (line ${i.line}${i.column ? `, column ${i.column}` : ""})` : "";
  return h("li", {}, `${i.path ? `${i.path}: ` : ""}${i.message}${where}`);
}

// ---------------------------------------------------------------------------------

async function start() {
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = false;
  try {
    await loadHistory();
    receive(await api("/admin/state"));
  } catch (e) {
    if (e instanceof Refused) return;
    fill($("app"), h("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  openStream();
  route();
}

if (sessionStorage.getItem(TOKEN_KEY)) start(); else showLogin("");
