// pennybot's cost dashboard: draws the charts as inline SVG from the figures in #pb-data.
// No library and nothing fetched. Every amount shown is a string made on the server from exact
// Decimals; Number() is used here only to size bars and place points.
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#3867d6", "#e67e22", "#20a39e", "#c0417a", "#8e6bd6", "#c9a227", "#4aa3c8", "#6b7785"];
  const data = JSON.parse(document.getElementById("pb-data").textContent);
  const colors = {};
  data.providers.forEach((name, i) => { colors[name] = PALETTE[i % PALETTE.length]; });
  const color = (name) => colors[name] || PALETTE[PALETTE.length - 1];
  const size = (text) => Number(text); // sizing only, never shown
  let uid = 0;

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, value, cls, anchor) {
    const node = el("text", { x, y, class: cls || "", "text-anchor": anchor || "start" }, parent);
    node.textContent = value;
    return node;
  }

  function tip(node, value) {
    el("title", {}, node).textContent = value;
  }

  function short(value, max) {
    return value.length > max ? value.slice(0, max - 1) + "\u2026" : value;
  }

  function svg(box, width, height, desc) {
    box.textContent = "";
    const id = "svg" + (++uid);
    const root = el("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-labelledby": `${id}-t ${id}-d`, class: "svg", preserveAspectRatio: "xMinYMin meet",
    }, box);
    el("title", { id: `${id}-t` }, root).textContent = box.dataset.label;
    el("desc", { id: `${id}-d` }, root).textContent = desc;
    return root;
  }

  function empty(box) {
    box.textContent = "";
    const note = document.createElement("p");
    note.className = "empty";
    note.textContent = "no data yet";
    box.appendChild(note);
  }

  function swatch(parent, fill) {
    const s = el("svg", { width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true", class: "swatch" }, parent);
    el("rect", { width: 12, height: 12, rx: 3, fill }, s);
  }

  // A y axis from the server's ticks; returns the function placing a value.
  function yAxis(root, scale, left, right, top, height) {
    const max = size(scale.max) || 1;
    const y = (value) => top + height - (height * size(value)) / max;
    for (const t of scale.ticks) {
      el("line", { x1: left, x2: right, y1: y(t.value), y2: y(t.value), class: "grid" }, root);
      text(root, left - 8, y(t.value) + 4, t.text, "axis", "end");
    }
    return y;
  }

  function daily(box) {
    const d = data.daily;
    if (d.empty) return empty(box);
    const W = 960, H = 280, L = 64, R = 12, T = 12, B = 30;
    const root = svg(box, W, H, d.summary);
    const y = yAxis(root, d.scale, L, W - R, T, H - T - B);
    const slot = (W - L - R) / d.days.length;
    const bar = Math.max(1, slot * 0.7);
    const every = Math.ceil(d.days.length / 12);
    d.days.forEach((day, i) => {
      const g = el("g", { class: "day", "data-date": day.date }, root);
      const parts = day.parts.map((p) => `${p.name} ${p.text}`).join(", ");
      tip(g, `${day.date}: ${day.text}` + (parts ? ` (${parts})` : ""));
      el("rect", { x: L + i * slot, y: T, width: slot, height: H - T - B, class: "hit" }, g);
      let base = H - B;
      for (const p of day.parts) {
        const top = Math.min(y(p.value) - (H - B) + base, base - 1);
        el("rect", { x: L + i * slot + (slot - bar) / 2, y: top, width: bar, height: base - top, fill: color(p.name), class: "seg" }, g);
        base = top;
      }
      if (i % every === 0) text(root, L + i * slot + slot / 2, H - 10, day.label, "axis", "middle");
    });
    const legend = document.getElementById("legend-daily");
    const seen = new Set(d.days.flatMap((day) => day.parts.map((p) => p.name)));
    for (const name of data.providers.filter((p) => seen.has(p))) {
      const item = document.createElement("span");
      item.className = "item";
      swatch(item, color(name));
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    }
  }

  function hbars(box, items, fill, what) {
    if (!items.length) return empty(box);
    const W = 560, L = 168, R = 150, rowH = 30;
    const H = items.length * rowH + 6;
    const first = items[0];
    const root = svg(box, W, H, `${items.length} ${what}; the dearest ${first.name} at ${first.text} (${first.share})`);
    const max = Math.max(...items.map((it) => size(it.value))) || 1;
    items.forEach((it, k) => {
      const g = el("g", { class: "bar" }, root);
      tip(g, `${it.name}: ${it.text} (${it.share})`);
      const top = 3 + k * rowH;
      const width = Math.max(2, ((W - L - R) * size(it.value)) / max);
      text(g, L - 10, top + 19, short(it.name, 22), "name", "end");
      el("rect", { x: L, y: top + 5, width, height: rowH - 10, rx: 4, fill: fill(it) }, g);
      text(g, L + width + 8, top + 19, it.text, "value");
      text(g, W - 4, top + 19, it.share, "share", "end");
    });
  }

  function cache(box) {
    const c = data.cache;
    if (c.rate === null) return empty(box);
    const W = 220, r = 78, mid = W / 2;
    const root = svg(box, W, W, `hit rate ${c.rate_text}: ${c.hits} of ${c.answers} answers; saved ${c.saved}`);
    const round = 2 * Math.PI * r;
    el("circle", { cx: mid, cy: mid, r, class: "track" }, root);
    const arc = el("circle", {
      cx: mid, cy: mid, r, class: "arc", "stroke-dasharray": `${round * size(c.rate)} ${round}`,
      transform: `rotate(-90 ${mid} ${mid})`,
    }, root);
    tip(arc, `${c.hits} cache hits of ${c.answers} answers`);
    text(root, mid, mid + 4, c.rate_text, "big", "middle");
    text(root, mid, mid + 28, "hit rate", "small", "middle");
  }

  function burn(box) {
    const b = data.burn;
    if (b.empty) return empty(box);
    const W = 960, H = 300, L = 64, R = 150, T = 14, B = 30;
    const root = svg(box, W, H, b.summary);
    const y = yAxis(root, b.scale, L, W - R, T, H - T - B);
    const x = (day) => L + ((W - L - R) * day) / b.days_in_month;
    for (const day of [1, 5, 10, 15, 20, 25, b.days_in_month]) {
      text(root, x(day), H - 10, String(day), "axis", "middle");
    }
    const points = (list) => list.map((p) => `${x(p.day)},${y(p.value)}`).join(" ");
    const floor = y("0");
    const last = b.actual[b.actual.length - 1];
    el("polygon", { points: `${points(b.actual)} ${x(last.day)},${floor} ${x(0)},${floor}`, class: "area" }, root);
    const labels = [];
    if (b.limit) {
      el("line", { x1: L, x2: W - R, y1: y(b.limit.value), y2: y(b.limit.value), class: "limit" }, root);
      labels.push({ y: y(b.limit.value), text: `limit ${b.limit.text}`, cls: "limit-label" });
    }
    for (const t of b.thresholds) {
      el("line", { x1: L, x2: W - R, y1: y(t.value), y2: y(t.value), class: `threshold ${t.kind}` }, root);
      labels.push({ y: y(t.value), text: `${t.name} ${t.text}`, cls: `threshold-label ${t.kind}` });
    }
    const forecast = el("polyline", { points: points(b.forecast), class: "forecast" }, root);
    tip(forecast, `forecast ${b.projected} by day ${b.days_in_month}`);
    const actual = el("polyline", { points: points(b.actual), class: "actual" }, root);
    tip(actual, `${b.spent} spent by day ${b.today}`);
    const end = b.forecast[b.forecast.length - 1];
    el("circle", { cx: x(end.day), cy: y(end.value), r: 4, class: "forecast-dot" }, root);
    el("circle", { cx: x(last.day), cy: y(last.value), r: 4.5, class: "now-dot" }, root);
    text(root, x(last.day) - 8, y(last.value) - 10, `${b.spent} today`, "point", "end");
    labels.push({ y: y(end.value), text: `forecast ${end.text}`, cls: "forecast-label" });
    // Right-hand labels, nudged apart so that close lines stay readable.
    labels.sort((a, c) => a.y - c.y);
    let previous = -Infinity;
    for (const label of labels) {
      label.y = Math.max(label.y, previous + 14);
      previous = label.y;
      text(root, W - R + 8, label.y + 4, label.text, label.cls);
    }
  }

  function bill(box) {
    const b = data.bill;
    if (b.empty) return empty(box);
    const parts = b.lines.filter((line) => line.part && size(line.value) > 0);
    const W = 960, H = 40;
    const root = svg(box, W, H, "the bill: " + parts.map((p) => `${p.label} ${p.text}`).join(", ") + `; total ${b.total}`);
    const sum = parts.reduce((acc, p) => acc + size(p.value), 0) || 1;
    let left = 0;
    parts.forEach((p, i) => {
      const width = (W * size(p.value)) / sum;
      const g = el("g", { class: "part" }, root);
      tip(g, `${p.label}: ${p.text} (${p.share})`);
      el("rect", { x: left, y: 4, width: Math.max(width, 1), height: 32, fill: PALETTE[(i + 2) % PALETTE.length] }, g);
      const label = `${p.label} ${p.share}`;
      if (width > label.length * 7.5 + 12) text(g, left + 8, 25, label, "inside");
      left += width;
    });
    const legend = document.getElementById("legend-bill");
    parts.forEach((p, i) => {
      const item = document.createElement("span");
      item.className = "item";
      swatch(item, PALETTE[(i + 2) % PALETTE.length]);
      item.appendChild(document.createTextNode(`${p.label} ${p.text} (${p.share})`));
      legend.appendChild(item);
    });
  }

  const charts = {
    daily,
    burn,
    provider: (box) => hbars(box, data.by_provider, (it) => color(it.name), "providers"),
    model: (box) => hbars(box, data.by_model, (it) => color(it.provider), "models"),
    users: (box) => hbars(box, data.top_users, () => "#56627a", "users shown"),
    cache,
    bill,
  };
  for (const box of document.querySelectorAll("[data-chart]")) {
    try {
      charts[box.dataset.chart](box);
    } catch (error) {
      console.error(`chart ${box.dataset.chart} not drawn:`, error);
    }
  }
  document.body.setAttribute("data-drawn", "true");
})();
