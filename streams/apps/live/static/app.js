// The live page: one WebSocket, a whole (bounded) view per message, panels redrawn in place; no reloads.
"use strict";

const $ = (sel) => document.querySelector(sel);
const time = (ms) => {  // a device's clock can say anything: an invalid date must not stop the render
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString().slice(11, 19);
};
const num = (v, digits = 3) => (v === null || v === undefined) ? "–" : Number(v).toFixed(digits);
window.eddyline = { loadedAt: Date.now(), messages: 0, view: null, selection: {}, charts: window.eddylineCharts.charts };
let socket = null;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(panelId, rows, toCells) {
  const panel = document.getElementById(panelId);
  const body = panel.querySelector("tbody");
  const trs = rows.map((r) => {
    const tr = document.createElement("tr");
    toCells(r).forEach((td) => tr.appendChild(td));
    return tr;
  });
  body.replaceChildren(...trs);
  panel.dataset.rows = String(rows.length);
}

// Text with the reason beneath it, in smaller print.
function withWhy(text, why, cls = "text") {
  const td = cell(text, cls);
  if (why) {
    const line = document.createElement("div");
    line.className = "why";
    line.textContent = why;
    td.appendChild(line);
  }
  return td;
}

// An alert's summary, with why it fired (rule, expected value and band, recent readings) beneath it.
const alertSummary = (r) => withWhy(r.summary, r.why ? `why: ${r.why}` : "");

function sentimentBar(rolling) {
  const td = document.createElement("td");
  const bar = document.createElement("span");
  bar.className = "bar";
  const fillEl = document.createElement("i");
  const v = Math.max(-1, Math.min(1, rolling ?? 0));
  fillEl.style.left = v < 0 ? `${50 + v * 50}%` : "50%";
  fillEl.style.width = `${Math.abs(v) * 50}%`;
  fillEl.style.background = v < 0 ? "var(--err)" : "var(--ok)";
  bar.appendChild(fillEl);
  td.appendChild(bar);
  return td;
}

function render(v) {
  window.eddylineCharts.renderCharts(v);
  const a = v.anomalies;
  $("#anomaly-counts").textContent = `${a.anomalous.toLocaleString()} of ${a.scored.toLocaleString()} readings`;
  fill("panel-anomalies", a.recent, (r) => [cell(r.device), cell(r.sensor), cell(time(r.time)), cell(num(r.score))]);

  const c = v.alerts.counts;
  $("#alert-counts").textContent = `${v.alerts.open_count} open · opened ${c.OPENED ?? 0} · updated ${c.UPDATED ?? 0} · resolved ${c.RESOLVED ?? 0}`;
  fill("panel-alerts", v.alerts.open, (r) => [cell(r.severity, r.severity), cell(r.source), cell(r.entity),
    alertSummary(r), cell(time(r.updated))]);

  fill("panel-sentiment", v.sentiment, (r) => [cell(r.conversation), cell(String(r.segments)),
    cell(r.label, r.label), cell(num(r.rolling ?? r.score, 2)), sentimentBar(r.rolling ?? r.score), cell(r.emotion || "–"),
    withWhy(r.route || "–", r.reason, `route ${r.route || ""}`), cell(r.text, "text")]);

  fill("panel-quality", v.quality.windows, (r) => [cell(r.model_name), cell(r.model_version), cell(String(r.predictions)),
    cell(num(r.accuracy)), cell(num(r.auc)), cell(num(r.f1)), cell(num(r.latency_p99_ms, 1)), cell(String(r.missing_feedback))]);

  $("#drift-counts").textContent = Object.entries(v.drift.counts).map(([m, n]) => `${m}: ${n}`).join(" · ");
  fill("panel-drift", v.drift.recent, (r) => [cell(r.model), cell(r.subject), cell(r.kind), cell(r.detector),
    cell(num(r.statistic, 4)), cell(num(r.threshold, 4)), cell(time(r.time))]);

  const f = v.fleet;
  $("#fleet-counts").textContent = `${f.devices} devices · ${f.trouble.length} not ok`;
  fill("panel-fleet", f.groups, (r) => [cell(r.agent_version), cell(r.model_version), cell(r.state, r.state),
    cell(String(r.devices))]);
  $("#fleet-trouble tbody").replaceChildren(...f.trouble.map((r) => {
    const tr = document.createElement("tr");
    [cell(r.device), cell(r.state, r.state), cell(r.device_class), cell(`${num(r.age_s, 0)} s ago`),
      cell(String(r.buffer_depth)), cell(String(r.errors))].forEach((td) => tr.appendChild(td));
    return tr;
  }));
  $("#fleet-trouble").hidden = !f.trouble.length;

  const total = Object.values(v.events).reduce((x, y) => x + y, 0);
  $("#totals").textContent = `${total.toLocaleString()} events · ${v.duplicates} duplicates ignored`;
  const rejected = Object.entries(v.rejected).map(([t, r]) =>
    `${t}: ${Object.entries(r).map(([why, n]) => `${n} ${why}`).join(", ")}`);
  $("#rejected").textContent = rejected.length ? `Undecodable events (not shown): ${rejected.join("; ")}` : "";
}

function connect(delay = 500) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket = ws;
  const status = $("#status");
  ws.onopen = () => {
    status.textContent = "live"; status.className = "status up"; delay = 500;
    if (Object.keys(window.eddyline.selection).length) ws.send(JSON.stringify(window.eddyline.selection));
  };
  ws.onmessage = (msg) => {
    const view = JSON.parse(msg.data);
    if (view.error) { console.warn(view.error); return; }
    window.eddyline.messages += 1;
    window.eddyline.view = view;
    render(view);
  };
  ws.onclose = () => {
    status.textContent = "disconnected: retrying";
    status.className = "status down";
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

// A picker asks the server for that device, sensor or call; the answer redraws the charts in place.
function choose(change) {
  const sel = window.eddyline.selection;
  Object.assign(sel, change);
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(sel));
}
$("#pick-device").addEventListener("change", (e) => choose({ device: e.target.value, sensor: null }));
$("#pick-sensor").addEventListener("change", (e) => choose({ sensor: e.target.value }));
$("#pick-call").addEventListener("change", (e) => choose({ call: e.target.value }));

connect();
