// The live page's charts, drawn with the vendored uPlot: each chart is made once and fed new columns with
// setData; it is rebuilt (that chart only) when its set of series changes. Data stays bounded server-side.
"use strict";

const palette = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#ff7b72", "#39c5cf", "#e3b341", "#f778ba"];
const axisStyle = { stroke: "#8a98a8", grid: { stroke: "#222c36", width: 1 }, ticks: { stroke: "#2a3642", width: 1 } };
const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
const clock = (u, splits) => splits.map((s) => new Date(s * 1e3).toISOString().slice(11, 19));
const timeAxis = { ...axisStyle, values: clock, space: 80 };
// a time range at least `seconds` across, ending at the last point, so that a first sample is not stretched
// over years (uPlot passes no min for one point) nor a few close ones labelled with one second many times
const atLeast = (seconds) => (u) => {
  const xs = u.data[0];
  const hi = xs[xs.length - 1];
  return [Math.min(xs[0], hi - seconds), hi + 1];
};
const recent = atLeast(60);

function plotSize(el, height) {
  return { width: Math.max(300, el.clientWidth), height };
}

// One chart in a panel: make(series names) returns uPlot options; update(names, columns) draws.
class Chart {
  constructor(panelId, height, make) {
    this.panel = document.getElementById(panelId);
    this.el = this.panel.querySelector(".plot");
    this.height = height;
    this.make = make;
    this.key = null;
    this.plot = null;
    new ResizeObserver(() => this.plot && this.plot.setSize(plotSize(this.el, this.height))).observe(this.el);
  }

  update(names, columns, extra) {
    const points = columns.length ? columns[0].length : 0;
    this.panel.dataset.points = String(points);
    this.extra = extra;
    const key = JSON.stringify(names);
    if (this.plot && key !== this.key) {
      this.plot.destroy();
      this.plot = null;
    }
    if (!points) return;
    if (!this.plot) {
      this.key = key;
      const opts = { ...plotSize(this.el, this.height), tzDate: utc, legend: { live: false }, ...this.make(names, this) };
      this.plot = new uPlot(opts, columns, this.el);
    } else {
      this.plot.setData(columns);
    }
  }

  get data() { return this.plot ? this.plot.data : null; }
}

const line = (label, i, extra = {}) => ({ label, stroke: palette[i % palette.length], width: 1.5, spanGaps: true, ...extra });

// Vertical markers for alerts: opened/updated in red, resolved in green, drawn over the series.
function alertMarkers(chart) {
  return (u) => {
    const marks = (chart.extra && chart.extra.alerts) || [];
    const ctx = u.ctx;
    ctx.save();
    marks.forEach((m, i) => {
      const x = u.valToPos(m.time, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
      ctx.strokeStyle = m.status === "RESOLVED" ? "#3fb950" : "#f85149";
      ctx.lineWidth = 2 * devicePixelRatio;
      ctx.setLineDash(m.status === "RESOLVED" ? [4 * devicePixelRatio, 3 * devicePixelRatio] : []);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle;
      ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
      ctx.fillText(m.status.toLowerCase(), x + 4 * devicePixelRatio, u.bbox.top + (12 + (i % 2) * 13) * devicePixelRatio);
    });
    ctx.restore();
  };
}

const charts = {
  device: new Chart("chart-device", 260, (names, chart) => ({
    series: [{}, line("reading", 0, { scale: "v" }), line("anomaly score", 4, { scale: "score", width: 1,
      fill: "rgba(255,123,114,0.12)" })],
    scales: { x: { time: true }, score: { range: [0, 1] } },
    axes: [timeAxis, { ...axisStyle, scale: "v" }, { ...axisStyle, scale: "score", side: 1, grid: { show: false } }],
    hooks: { draw: [alertMarkers(chart)] },
  })),
  throughput: new Chart("chart-throughput", 200, (names) => ({
    series: [{}, ...names.map((n, i) => line(n, i, { paths: uPlot.paths.stepped({ align: 1 }) }))],
    scales: { x: { time: true, range: recent } },
    axes: [timeAxis, axisStyle],
  })),
  lag: new Chart("chart-lag", 200, (names) => ({
    series: [{}, ...names.map((n, i) => line(n, i + 2))],
    scales: { x: { time: true, range: recent } },
    axes: [timeAxis, axisStyle],
  })),
  call: new Chart("chart-call", 200, () => ({
    series: [{}, line("segment score", 0, { width: 0, points: { show: true, size: 8, fill: palette[0] } }), line("rolling", 1, { width: 2 })],
    scales: { x: { time: true, range: atLeast(10) }, y: { range: [-1, 1] } },
    axes: [timeAxis, axisStyle],
  })),
};

function fillPicker(select, options, chosen) {
  const current = Array.from(select.options).map((o) => o.value);
  if (JSON.stringify(current) !== JSON.stringify(options)) {
    select.replaceChildren(...options.map((v) => {
      const o = document.createElement("option");
      o.value = o.textContent = v;
      return o;
    }));
  }
  if (chosen !== null && chosen !== undefined) select.value = chosen;
}

// Draw every chart from one view (the server sends the charts this client selected).
function renderCharts(v) {
  const c = v.charts;
  const d = v.device_chart;
  fillPicker(document.getElementById("pick-device"), c.devices, d && d.device);
  fillPicker(document.getElementById("pick-sensor"), d ? d.sensors : [], d && d.sensor);
  charts.device.update(d ? [d.device, d.sensor] : [], d ? d.data : [], d);
  charts.throughput.update(c.throughput.series, c.throughput.data);
  charts.lag.update(c.lag.series, c.lag.data);
  const call = v.call_chart;
  fillPicker(document.getElementById("pick-call"), c.calls, call && call.call);
  charts.call.update(call ? [call.call] : [], call ? call.data : []);
}

window.eddylineCharts = { charts, renderCharts };
