// What every part of the dashboard shares: the API call, element building, readable formats
// (local ISO-like times, sizes with units, labels for raw keys) and ids that fit their cell.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("qiz-token", params.get("token"));
  history.replaceState(null, "", location.pathname + location.hash);  // the token leaves the address bar
}
export const token = sessionStorage.getItem("qiz-token") || "";
export const $ = (sel, root = document) => root.querySelector(sel);

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// GET or POST /api/PATH with the token; the answer's JSON, or an ApiError with the HTTP status.
export async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token, ...(options.headers || {}) };
  const response = await fetch("/api/" + path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || response.statusText);
  return body;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || ["title", "href", "download", "role", "type"].includes(k)) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

export function fillTable(table, rows, empty) {
  const body = table.tBodies[0];
  const columns = table.tHead ? table.tHead.rows[0].cells.length : 1;
  if (!rows.length && empty) rows = [el("tr", { class: "empty" }, el("td", { colSpan: columns }, empty))];
  body.replaceChildren(...rows);
}

// ------------------------------------------------------------------ formats

const pad = (n) => String(n).padStart(2, "0");

// the browser's zone, said beside every time: "UTC", or its offset ("UTC+01:00")
export function zone(epoch = Date.now() / 1000) {
  const offset = -new Date(epoch * 1000).getTimezoneOffset();
  if (offset === 0) return "UTC";
  const a = Math.abs(offset);
  return `UTC${offset > 0 ? "+" : "-"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

// an epoch in seconds as the local "YYYY-MM-DD HH:MM:SS" and its zone ("... UTC",
// "... UTC+01:00"): the CLI prints ISO 8601 in UTC, the page local time that says so
export function when(epoch) {
  if (epoch === null || epoch === undefined) return "–";
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone(epoch)}`;
}

// the same moment as ISO 8601 in UTC, as the CLI prints it (for titles: one to compare)
export function iso(epoch) {
  if (epoch === null || epoch === undefined) return "";
  return new Date(Math.floor(epoch) * 1000).toISOString().replace(".000Z", "Z");
}

// a moment in a table cell: date, time and zone, which may break only after the date (a title
// with the CLI's UTC form); "prefix" goes before it ("left ")
export function whenCell(epoch, { prefix = "", title } = {}) {
  const text = when(epoch);
  const parts = text.length > 10 ? [text.slice(0, 10), text.slice(11)] : [text];
  return el("td", { class: "moment", title: title ?? iso(epoch) },
    el("span", { class: "nowrap" }, prefix + parts[0]), parts[1] ? " " : "", parts[1] ? el("span", { class: "nowrap" }, parts[1]) : "");
}

// a duration as the CLI writes it (qiz/cli/human.py duration): 850 ms, 12.3 s, 4m05s, 2h03m, 3d04h
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return (seconds * 1000).toFixed(0) + " ms";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const whole = Math.floor(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)}m${pad(whole % 60)}s`;
  if (whole < 86400) return `${Math.floor(whole / 3600)}h${pad(Math.floor((whole % 3600) / 60))}m`;
  return `${Math.floor(whole / 86400)}d${pad(Math.floor((whole % 86400) / 3600))}h`;
}

// "1 node", "2 nodes"
export const plural = (n, word, many = word + "s") => `${n} ${n === 1 ? word : many}`;

export function size(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
}

export function ms(value, digits = 2) {
  return value === null || value === undefined ? "–" : value.toFixed(digits) + " ms";
}

// labels for the raw keys the API answers with
const LABELS = {
  encryption_gb_s: "encryption, GB/s",
  key_exchange_ms: "key exchange, ms",
  authentication_ms: "authentication, ms",
  latency_ms: "link latency, ms",
  dht_lookup_ms_median: "DHT lookup (median), ms",
};
export function label(key) {
  if (LABELS[key]) return LABELS[key];
  const m = /^(.*)_(gb_s|ms|s|bytes|percent)$/.exec(key);
  const unit = m && { gb_s: "GB/s", ms: "ms", s: "s", bytes: "bytes", percent: "%" }[m[2]];
  const words = (m ? m[1] : key).replaceAll("_", " ");
  return (words.charAt(0).toUpperCase() + words.slice(1)) + (unit ? ", " + unit : "");
}

// ------------------------------------------------------------------ ids

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = el("textarea", { value: text, class: "offscreen" });
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

// two overlapping sheets: drawn, so no font needs the glyph
function copyIcon() {
  return svg("svg", { viewBox: "0 0 16 16", width: "12", height: "12", "aria-hidden": "true" },
    svg("rect", { x: "5", y: "1.5", width: "9", height: "10", rx: "1.5" }),
    svg("rect", { x: "2", y: "4.5", width: "9", height: "10", rx: "1.5" }));
}

// When each id's "copied" mark ends: the tables are redrawn every second, so the mark lives
// here, not on a button that the next refresh replaces.
const COPIED_MS = 1500;
const copiedUntil = new Map();

function markCopied(button, id) {
  const left = (copiedUntil.get(id) ?? 0) - Date.now();
  if (left <= 0) { copiedUntil.delete(id); return; }
  button.classList.add("copied");
  button.title = "copied";
  setTimeout(() => { button.classList.remove("copied"); button.title = "copy " + id; }, left);
}

// A long id that fits its cell: ellipsized by CSS (the text is whole, so it can be found and
// selected), the full id on hover, and a button that copies it.
export function idBox(id, { href, testid } = {}) {
  if (!id) return el("span", { class: "muted" }, "–");
  const text = href ? el("a", { class: "id", href, title: id, "data-testid": testid }, id)
    : el("span", { class: "id", title: id, "data-testid": testid }, id);
  const button = el("button", { type: "button", class: "copy", title: "copy " + id, "aria-label": "copy the full id" }, copyIcon());
  markCopied(button, id);  // copied just before this redraw: still says so
  button.addEventListener("click", async (event) => {
    event.stopPropagation();
    event.preventDefault();
    if (await copyText(id)) {
      copiedUntil.set(id, Date.now() + COPIED_MS);
      markCopied(button, id);
      return;
    }
    button.classList.add("failed");
    button.title = "could not copy: select the id and copy it";
    setTimeout(() => { button.classList.remove("failed"); button.title = "copy " + id; }, COPIED_MS);
  });
  return el("span", { class: "idbox" }, text, button);
}
