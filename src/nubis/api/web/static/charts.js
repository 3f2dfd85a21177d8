// Charts of metric series (uPlot): <div class="chart" data-series='[{"label", "src", "metric"}]'
// data-unit="%" data-title="CPU">. Series from several sources are joined on time.
"use strict";

(() => {
  const RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
  const charts = [];

  function format(unit) {
    return (_u, value) => {
      if (value == null) return "–";
      if (unit === "B/s") {
        const steps = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
        let i = 0;
        while (Math.abs(value) >= 1024 && i < steps.length - 1) { value /= 1024; i += 1; }
        return `${value.toFixed(Math.abs(value) >= 100 ? 0 : 1)} ${steps[i]}`;
      }
      const digits = Math.abs(value) >= 100 ? 0 : 1;
      return `${Number(value).toFixed(digits)}${unit ? " " + unit : ""}`;
    };
  }

  async function load(box, seconds) {
    const series = JSON.parse(box.dataset.series);
    const since = new Date(Date.now() - seconds * 1000).toISOString();
    const cache = new Map();
    const tables = [];
    for (const s of series) {
      const url = `${s.src}${s.src.includes("?") ? "&" : "?"}since=${encodeURIComponent(since)}`;
      if (!cache.has(url)) cache.set(url, Nubis.api("GET", url));
      const data = await cache.get(url);
      tables.push([data.series.ts, data.series[s.metric]]);
    }
    return { series, data: tables.length === 1 ? tables[0] : uPlot.join(tables) };
  }

  function draw(box, series, data) {
    const colors = ["#1f5fbf", "#b42318", "#147a3d", "#9a6700", "#6941c6", "#0e7490", "#c11574", "#475467"];
    const unit = box.dataset.unit || "";
    const width = Math.max(240, box.clientWidth);
    const opts = {
      title: box.dataset.title,
      width,
      height: 180,
      scales: unit === "%" ? { y: { range: [0, 100] } } : {},
      axes: [{}, { values: (u, ticks) => ticks.map((t) => format(unit)(u, t)), size: 80 }],
      series: [{}].concat(series.map((s, i) => ({
        label: s.label, stroke: colors[i % colors.length], width: 2, value: format(unit), spanGaps: false,
      }))),
    };
    box.replaceChildren();
    const empty = data[0].length === 0;
    if (empty) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = `${box.dataset.title}: no samples in this range yet.`;
      box.append(p);
      return null;
    }
    return new uPlot(opts, data, box);
  }

  async function refresh(entry) {
    try {
      const { series, data } = await load(entry.box, entry.seconds);
      if (entry.plot && data[0].length) {
        entry.plot.setData(data);
      } else {
        if (entry.plot) entry.plot.destroy();
        entry.plot = draw(entry.box, series, data);
      }
      entry.box.dataset.points = String(data[0].length);
    } catch (error) {
      entry.box.textContent = `${entry.box.dataset.title}: ${error.message}`;
    }
  }

  function start() {
    const boxes = document.querySelectorAll(".chart[data-series]");
    if (!boxes.length) return;
    for (const box of boxes) charts.push({ box, seconds: RANGES["1h"], plot: null });
    charts.forEach(refresh);
    setInterval(() => charts.forEach(refresh), 15000);
    for (const button of document.querySelectorAll("[data-chart-range]")) {
      button.addEventListener("click", () => {
        const seconds = RANGES[button.dataset.chartRange];
        for (const b of document.querySelectorAll("[data-chart-range]")) {
          b.setAttribute("aria-pressed", String(b === button));
        }
        for (const entry of charts) {
          entry.seconds = seconds;
          if (entry.plot) { entry.plot.destroy(); entry.plot = null; }
          refresh(entry);
        }
      });
    }
    window.addEventListener("resize", () => {
      for (const entry of charts) {
        if (entry.plot) entry.plot.setSize({ width: Math.max(240, entry.box.clientWidth), height: 180 });
      }
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
