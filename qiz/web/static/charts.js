// Drawings in plain SVG (no library, nothing from elsewhere: the page runs under a strict CSP):
// the mesh around this node, sparklines of the node's recent past, a sweep's landscape.
"use strict";

import { el, svg } from "./util.js";

const COLORS = { fast: "#3ddc97", mid: "#f6c453", slow: "#ff6b6b", none: "#8a97a5", offline: "#55626f" };

export function rttClass(ms) {
  if (ms === null || ms === undefined) return "none";
  return ms < 1 ? "fast" : ms < 5 ? "mid" : "slow";
}

const shortId = (id) => (id || "").slice(0, 12) + "…";

// this node in the middle, its label below its circle; its peers around it, offline ones grey
// and dashed. The drawing's box is cut to what is drawn (the card holds no empty band) and
// shown at a fixed scale, so one peer makes a small picture and twenty a larger one.
const CHAR = 6.1;  // the width of one character of the 10 px monospace labels, in drawing units
export function drawMesh(target, self, peers) {
  const cx = 0, cy = 0, r = peers.length > 8 ? 150 : 110;
  const parts = [];
  const box = { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
  const cover = (x0, y0, x1, y1) => {
    box.x0 = Math.min(box.x0, x0); box.y0 = Math.min(box.y0, y0);
    box.x1 = Math.max(box.x1, x1); box.y1 = Math.max(box.y1, y1);
  };
  const nodes = [{ id: self, x: cx, y: cy, self: true }];
  peers.forEach((p, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, peers.length) - Math.PI / 2;
    nodes.push({ id: p.id, x: cx + r * Math.cos(a), y: cy + r * Math.sin(a), rtt: p.rtt_ms, offline: p.offline });
  });
  for (const n of nodes.slice(1)) {
    const color = n.offline ? COLORS.offline : COLORS[rttClass(n.rtt)];
    const line = svg("line", { x1: cx, y1: cy, x2: n.x, y2: n.y, stroke: color, "stroke-width": 2.5 });
    if (n.offline) line.setAttribute("stroke-dasharray", "5 5");
    parts.push(line);
    if (!n.offline && n.rtt !== null && n.rtt !== undefined) {
      parts.push(svg("text", { x: (cx + n.x) / 2 + 4, y: (cy + n.y) / 2 - 4, class: "halo" }, n.rtt.toFixed(2) + " ms"));
    }
  }
  for (const n of nodes) {
    const g = svg("g", { "data-testid": "mesh-node", "data-id": n.id, "data-state": n.offline ? "offline" : "online" });
    const radius = n.self ? 14 : 10;
    g.append(svg("title", {}, n.id + (n.self ? " (this node)" : n.offline ? " (offline)" : "")));
    g.append(svg("circle", {
      cx: n.x, cy: n.y, r: radius,
      fill: n.self ? "#5cc8ff" : n.offline ? "#182029" : "#2b3947",
      stroke: n.offline ? COLORS.offline : "#5cc8ff",
    }));
    cover(n.x - radius - 2, n.y - radius - 2, n.x + radius + 2, n.y + radius + 2);
    if (n.self) {  // two lines under the circle, clear of it
      const words = ["this node", shortId(n.id)];
      words.forEach((w, k) => g.append(svg("text", { x: n.x, y: n.y + radius + 13 + 11 * k, "text-anchor": "middle", class: "halo" }, w)));
      const half = (shortId(n.id).length * CHAR) / 2;
      cover(n.x - half, n.y, n.x + half, n.y + radius + 30);
    } else {
      const text = shortId(n.id) + (n.offline ? " offline" : "");
      const anchor = n.x < cx - 20 ? "end" : "start";
      const x = n.x + (anchor === "end" ? -(radius + 4) : radius + 4);
      g.append(svg("text", { x, y: n.y + 4, "text-anchor": anchor, class: "halo" }, text));
      const w = text.length * CHAR;
      cover(anchor === "end" ? x - w : x, n.y - 8, anchor === "end" ? x : x + w, n.y + 8);
    }
    parts.push(g);
  }
  const pad = 8, scale = 1.25;
  const width = box.x1 - box.x0 + 2 * pad, height = box.y1 - box.y0 + 2 * pad;
  target.setAttribute("viewBox", `${(box.x0 - pad).toFixed(1)} ${(box.y0 - pad).toFixed(1)} ${width.toFixed(1)} ${height.toFixed(1)}`);
  target.setAttribute("width", Math.round(width * scale));
  target.setAttribute("height", Math.round(height * scale));
  target.replaceChildren(...parts);
}

// a line over the last samples; null values leave a gap
export function sparkline(target, values, { min = null } = {}) {
  const w = 200, h = 40, pad = 3;
  const numbers = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const parts = [svg("line", { x1: 0, y1: h - pad, x2: w, y2: h - pad, class: "axis" })];
  if (numbers.length) {
    const lo = min === null ? Math.min(...numbers) : Math.min(min, ...numbers);
    const hi = Math.max(...numbers);
    const span = hi - lo || 1;
    const step = values.length > 1 ? w / (values.length - 1) : 0;
    let run = [];
    const flush = () => {
      if (run.length > 1) parts.push(svg("polyline", { points: run.join(" "), class: "spark" }));
      else if (run.length === 1) {
        const [x, y] = run[0].split(",");
        parts.push(svg("circle", { cx: x, cy: y, r: 1.8, class: "spark-dot" }));
      }
      run = [];
    };
    values.forEach((v, i) => {
      if (v === null || v === undefined || !Number.isFinite(v)) { flush(); return; }
      const y = h - pad - ((v - lo) / span) * (h - 2 * pad);
      run.push(`${(i * step).toFixed(1)},${y.toFixed(1)}`);
    });
    flush();
  }
  target.setAttribute("viewBox", `0 0 ${w} ${h}`);
  target.setAttribute("preserveAspectRatio", "none");
  target.replaceChildren(...parts);
}

// ------------------------------------------------------------------ a sweep's landscape

// a perceptual ramp (dark blue -> teal -> yellow), t in 0..1
const STOPS = [[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104], [244, 136, 73], [254, 188, 43], [240, 249, 33]];
export function ramp(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = STOPS[i].map((v, k) => Math.round(v + f * (STOPS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

const fmt = (v) => (typeof v === "number" ? Number(v.toPrecision(6)).toString() : String(v));

// The value a sweep point is judged by, and whether more is better.
export function pointValue(point) {
  if (typeof point.expectation === "number") return { key: "expectation", value: point.expectation, higher: true };
  if (typeof point.energy === "number") return { key: "energy", value: point.energy, higher: false };
  if (typeof point.success_probability === "number") return { key: "success probability", value: point.success_probability, higher: true };
  if (Array.isArray(point.values) && typeof point.values[0] === "number") return { key: "first value", value: point.values[0], higher: true };
  return null;
}

// The points of a sweep (each {point: {axis: value}, ...result}) drawn as a strip (one axis)
// or a grid (two or more: the first two axes, the best value over the others). Returns the SVG.
export function heatmap(points) {
  const judged = points.map((p) => ({ p, v: pointValue(p) })).filter((x) => x.v && x.p.point);
  const root = svg("svg", { class: "heatmap", "data-testid": "heatmap", role: "img" });
  if (!judged.length) return root;
  const axes = Object.keys(judged[0].p.point);
  const higher = judged[0].v.higher;
  const key = judged[0].v.key;
  const better = (a, b) => (higher ? a > b : a < b);
  const xs = axes.length ? [...new Set(judged.map((x) => x.p.point[axes[axes.length > 1 ? 1 : 0]]))].sort((a, b) => a - b) : [0];
  const ys = axes.length > 1 ? [...new Set(judged.map((x) => x.p.point[axes[0]]))].sort((a, b) => a - b) : [null];
  const cells = new Map();
  for (const { p, v } of judged) {
    const xv = axes.length > 1 ? p.point[axes[1]] : p.point[axes[0]];
    const yv = axes.length > 1 ? p.point[axes[0]] : null;
    const id = `${xs.indexOf(xv)},${ys.indexOf(yv)}`;
    const old = cells.get(id);
    if (!old || better(v.value, old.value)) cells.set(id, { value: v.value, point: p.point });
  }
  const values = [...cells.values()].map((c) => c.value);
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  const best = higher ? hi : lo;
  const cw = Math.max(14, Math.min(48, Math.floor(520 / xs.length)));
  const ch = axes.length > 1 ? Math.max(12, Math.min(36, Math.floor(260 / ys.length))) : 28;
  const bars = axes.length === 1 ? 60 : 0;  // one axis: bars above the strip, a profile to read
  const left = axes.length > 1 ? 54 : 8, top = 8 + bars, bottom = 34;
  const width = left + xs.length * cw + 8, height = top + ys.length * ch + bottom;
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.setAttribute("aria-label", `${key} over ${axes.join(" × ")}`);
  root.style.maxWidth = width * 1.6 + "px";
  for (const [id, cell] of cells) {
    const [i, j] = id.split(",").map(Number);
    const rect = svg("rect", {
      x: left + i * cw, y: top + j * ch, width: cw - 1, height: ch - 1, fill: ramp((cell.value - lo) / span),
      "data-testid": "heat-cell", class: cell.value === best ? "best" : "",
    });
    rect.append(svg("title", {}, Object.entries(cell.point).map(([a, v]) => `${a} = ${fmt(v)}`).join(", ") + `: ${key} ${fmt(cell.value)}`));
    root.append(rect);
    if (bars) {
      const h = 4 + ((cell.value - lo) / span) * (bars - 8);
      root.append(svg("rect", { x: left + i * cw + 2, y: top - 2 - h, width: cw - 5, height: h, fill: ramp((cell.value - lo) / span), class: "heat-bar" }));
    }
  }
  const every = Math.ceil(xs.length / 10);
  xs.forEach((v, i) => {
    if (i % every === 0) root.append(svg("text", { x: left + i * cw + cw / 2, y: top + ys.length * ch + 12, "text-anchor": "middle" }, fmt(v)));
  });
  root.append(svg("text", { x: left + (xs.length * cw) / 2, y: top + ys.length * ch + 26, "text-anchor": "middle", class: "axis-name" }, axes[axes.length > 1 ? 1 : 0] || ""));
  if (axes.length > 1) {
    const everyY = Math.ceil(ys.length / 10);
    ys.forEach((v, j) => {
      if (j % everyY === 0) root.append(svg("text", { x: left - 4, y: top + j * ch + ch / 2 + 3, "text-anchor": "end" }, fmt(v)));
    });
    root.append(svg("text", { x: 4, y: top + ys.length * ch + 26, class: "axis-name" }, "↑ " + axes[0]));
  }
  return root;
}

// the heat map's key: the colour ramp from the lowest to the highest value
export function heatKey(points) {
  const judged = points.map(pointValue).filter(Boolean);
  const values = judged.map((v) => v.value);
  const lo = Math.min(...values), hi = Math.max(...values);
  const bar = el("span", { class: "ramp" });
  bar.style.background = `linear-gradient(to right, ${STOPS.map((c) => `rgb(${c.join(",")})`).join(", ")})`;
  const axes = Object.keys(points[0].point || {});
  const rest = axes.length > 2 ? `; each cell is the best over ${axes.slice(2).join(", ")}` : "";
  return el("p", { class: "heat-key" }, `${judged[0].key} `, el("span", { class: "num" }, fmt(lo)), bar,
    el("span", { class: "num" }, fmt(hi)), el("span", { class: "muted" },
      ` (${judged[0].higher ? "higher" : "lower"} is better; the outlined cell is the best${rest})`));
}
