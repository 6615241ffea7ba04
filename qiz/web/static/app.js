// The QIZ dashboard: plain JavaScript modules, no build step, nothing from elsewhere. Talks
// only to this node's /api/ (the NodeAPI operations, see /openapi.json).
"use strict";

import { api, $, el, fillTable, idBox, when, whenCell, iso, duration, size, ms, label, plural, token } from "./util.js";
import { drawMesh, rttClass, sparkline } from "./charts.js";
import { renderDetail, leaveDetail, jobId, reasonOf } from "./detail.js";
import { renderDeploy } from "./deploy.js";

let self = null;  // this node's id

// ------------------------------------------------------------------ the overview

function renderNode(node) {
  self = node.node_id;
  const rows = [
    ["id", node.node_id], ["addresses", (node.addresses || [node.address]).join(", ")],
    ["uptime", duration(node.uptime_s)], ["version", node.version],
    ["DHT", `${node.dht.contacts} contacts, ${node.dht.records} records, ${node.dht.lookups} lookups`],
  ];
  const worker = node.compute && node.compute.worker;
  if (worker) rows.push(["worker", `${worker.qubits} qubits, ${plural(worker.slots, "slot")}, queue ${worker.queue}, ${worker.engine}`]);
  $("#node").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-testid": "node-" + k, class: k === "id" ? "long" : "" }, v)]));
}

// GET /api/peers, the new shape ({node_id, peers: [{node_id, state, connected_at, left_at, ...}]})
// or the old one ({self, peers: [{peer, since}]}) while it changes
function renderPeers(answer) {
  const rows = answer.peers.map((p) => ({
    ...p,
    id: p.node_id ?? p.peer,
    offline: (p.state ?? "online") === "offline",
    connected: p.connected_at ?? p.since,
  }));
  rows.sort((a, b) => (a.offline - b.offline) || String(a.id).localeCompare(String(b.id)));
  drawMesh($("#mesh"), answer.node_id ?? answer.self, rows);
  const online = rows.filter((p) => !p.offline).length;
  $("#mesh-count").textContent = plural(online + 1, "node") + " online" + (rows.length > online ? `, ${rows.length - online} left` : "");
  fillTable($("#peers"), rows.map((p) => {
    const address = (p.listens_at && p.listens_at[0]) || p.address || "–";
    const state = p.offline
      ? el("td", { class: "wrap", "data-testid": "peer-state" }, el("span", { class: "state-offline" }, "offline"), p.left_reason ? el("span", { class: "muted" }, ": " + p.left_reason) : "")
      : el("td", { "data-testid": "peer-state" }, el("span", { class: "state-online" }, "online"), p.path && p.path !== "direct" ? el("span", { class: "muted" }, " (" + p.path + ")") : "");
    const moment = p.offline
      ? whenCell(p.left_at, { prefix: "left ", title: "last seen " + when(p.last_seen_at) })
      : whenCell(p.connected);
    return el("tr", { "data-testid": "peer-row", "data-peer": p.id, "data-state": p.offline ? "offline" : "online", class: p.offline ? "offline" : "" },
      el("td", {}, idBox(p.id)), state, el("td", { class: "addr" }, address),
      el("td", { class: "num " + (rttClass(p.rtt_ms) === "slow" ? "bad" : "") }, p.offline ? "–" : ms(p.rtt_ms, 3)),
      el("td", { class: "num" }, size(p.bytes_sent)), el("td", { class: "num" }, size(p.bytes_received)),
      moment, el("td", { class: "num" }, p.score === null || p.score === undefined ? "–" : p.score.toFixed(3)));
  }), "no peer yet");
}

function renderJobs(jobs) {
  // newest first, whatever order the node lists them in
  const newest = jobs.slice().sort((a, b) => (b.submitted_at ?? b.created) - (a.submitted_at ?? a.created));
  fillTable($("#jobs"), newest.map((j) => {
    const id = jobId(j);
    const done = j.replicas.filter((r) => r.state === "done").length;
    const workers = new Set(j.replicas.map((r) => r.worker)).size;
    const lost = j.replicas.filter((r) => r.state === "lost" || r.state === "failed").length;
    const bar = el("span", { class: "bar" }, el("span"));
    bar.firstChild.style.width = Math.round(j.progress * 100) + "%";
    const submitted = j.submitted_at ?? j.created;
    const ended = ["done", "failed", "cancelled"].includes(j.state);
    const took = j.duration_s !== undefined ? duration(j.duration_s) : ended ? duration((j.finished_at ?? j.updated) - submitted) : "–";
    const row = el("tr", { "data-testid": "job-row", "data-job": id, "data-state": j.state, class: "clickable", title: "show job " + id },
      el("td", {}, idBox(id, { href: "#job/" + id })),
      el("td", {}, j.kind === "sweep" ? "sweep of " + j.over : j.kind),
      el("td", { class: "wrap state-" + j.state, "data-testid": "job-state" }, j.state + (reasonOf(j) ? ": " + reasonOf(j) : "")),
      el("td", { class: "nowrap" }, bar, " " + Math.round(j.progress * 100) + "%"),
      el("td", { class: "num" }, `${j.decided}/${j.tasks}`),
      el("td", {}, `${done} done on ${plural(workers, "worker")}` + (lost ? `, ${lost} lost` : "")),
      whenCell(submitted),
      el("td", { class: "num" }, took));
    row.addEventListener("click", () => { location.hash = "#job/" + id; });
    return row;
  }), "no job submitted through this node yet");
}

function renderResults(items) {
  const newest = items.slice().sort((a, b) => (b.issued_at ?? 0) - (a.issued_at ?? 0));
  fillTable($("#results"), newest.map((a) => {
    const id = a.job_id;
    return el("tr", { "data-testid": "result-row", "data-job": id },
      el("td", {}, idBox(id, { href: "#job/" + id })), el("td", {}, a.kind || ""),
      el("td", { class: a.verified ? "ok" : "bad wrap", "data-testid": "verified" }, a.verified ? "verified (" + a.tests.join(", ") + ")" : "NOT verified: " + a.error),
      el("td", { class: "wrap summary" }, a.summary || ""),
      el("td", { "data-testid": "result-replicas" }, a.workers ? `${plural(a.tasks, "task")} on ${plural(a.workers.length, "worker")}` : ""),
      whenCell(a.issued_at),
      el("td", {}, el("a", { href: "#", "data-job": id, onclick: download }, "download")));
  }), "no verified result yet");
}

async function download(event) {
  event.preventDefault();
  const job = event.target.getAttribute("data-job");
  const response = await fetch("/api/attestations/" + job, { headers: { Authorization: "Bearer " + token } });
  const blob = await response.blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: job.slice(0, 16) + ".att" });
  link.click();
}

// GET /api/store: content this node published or pins; the held bytes and quota from the node's
// status (null store: the pool is off here, and /api/store is not asked, it would answer 503)
function renderStorage(stats, rows) {
  $("#storage-held").textContent = stats
    ? `(holding ${size(stats.bytes_stored)} of ${size(stats.quota_bytes)} in ${plural(stats.columns_held ?? stats.columns ?? 0, "share column")} for the mesh)`
    : "(off on this node)";
  const health = { ok: "ok", degraded: "warn", lost: "bad", unknown: "muted" };
  fillTable($("#storage"), rows.map((c) => el("tr", { "data-testid": "storage-row", "data-cid": c.cid, "data-health": c.health },
    el("td", {}, idBox(c.cid)),
    el("td", { class: "wrap" }, (c.name || "–") + (c.kind === "dir" ? "/" : ""), c.sealed ? el("span", { class: "muted" }, " (sealed)") : "",
      c.kind === "file" && c.size <= MAX_DOWNLOAD ? [" ", el("a", { href: "#", "data-cid": c.cid, "data-name": c.name || "", "data-testid": "storage-download", onclick: downloadContent }, "download")] : ""),
    el("td", { class: "num" }, size(c.size)),
    el("td", { class: health[c.health] || "", "data-testid": "storage-health" }, c.health),
    el("td", { class: "num", "data-testid": "storage-live" }, `${c.live}/${c.n}`, el("span", { class: "muted" }, ` (${c.k} needed)`)),
    el("td", {}, c.published ? (c.pinned ? "publisher" : "publisher, unpinned") : (c.pinned ? "pinned" : "unpinned")))),
  stats ? "nothing published or pinned here yet (qiz store put PATH)" : "the storage pool is off on this node ([store] enabled = false)");
}

// GET /api/store/{cid}/content: a file's checked bytes (at most 16 MiB: qiz.node_api.MAX_DOWNLOAD)
const MAX_DOWNLOAD = 16 * 1024 * 1024;
async function downloadContent(event) {
  event.preventDefault();
  const cid = event.target.getAttribute("data-cid");
  const response = await fetch("/api/store/" + cid + "/content", { headers: { Authorization: "Bearer " + token } });
  if (!response.ok) {
    event.target.textContent = "download failed: " + ((await response.json().catch(() => null))?.error || response.statusText);
    return;
  }
  const link = el("a", { href: URL.createObjectURL(await response.blob()), download: event.target.getAttribute("data-name") || cid.slice(0, 16) });
  link.click();
}

// the score now against the score before its latest hour with events: a fall, a rise, or none
function trendCell(trend) {
  const t = trend || 0;
  const text = Math.abs(t) < 0.0005 ? "–" : (t > 0 ? "↑ " : "↓ ") + Math.abs(t).toFixed(3);
  return el("td", { class: "num", "data-testid": "score-trend", title: "score now less the score before its latest hour with events" }, text);
}

// this node scores itself too (it runs replicas of its own jobs): its row says so
function renderScores(rows) {
  fillTable($("#scores"), rows.map((s) => el("tr", { "data-testid": "score-row", "data-peer": s.node_id },
    el("td", { class: "nowrap" }, idBox(s.node_id), s.node_id === self ? el("span", { class: "muted", "data-testid": "this-node" }, " (this node)") : ""),
    el("td", { class: "num" }, s.score.toFixed(3)), trendCell(s.trend), el("td", { class: "num" }, s.agreed),
    el("td", { class: "num" }, s.disagreed), el("td", { class: "num" }, s.failed),
    // an operator's word, else the misbehaviour still counting against the score
    el("td", { class: "wrap", "data-testid": "score-why" }, s.override ? s.override : (s.reasons || []).join(", ") || "–"))),
    "no peer has been scored yet");
}

function renderBench(bench) {
  fillTable($("#bench"), bench.figures.map((f) => el("tr", { "data-testid": "bench-row" },
    el("td", { class: "wrap", "data-testid": "figure" }, label(f.figure)),
    el("td", { class: "num" }, f.measured === null ? "–" : String(f.measured)),
    el("td", { class: "wrap" }, f.claim_text),
    el("td", { class: "num " + (f.ratio && f.ratio >= 1 ? "ok" : "bad"), "data-testid": "ratio" }, f.ratio ? f.ratio + "×" : "–"))));
}

// GET /api/history: sparklines of the last minutes
function renderHistory(answer) {
  const samples = answer.samples;
  if (!samples.length) return;
  const perMinute = samples.map((s, i) => {
    if (i === 0) return null;
    const dt = s.at - samples[i - 1].at;
    return dt > 0 ? ((s.jobs_done - samples[i - 1].jobs_done) / dt) * 60 : null;
  });
  const last = (values) => [...values].reverse().find((v) => v !== null && v !== undefined);
  const series = [
    ["rtt", samples.map((s) => s.rtt_ms), (v) => ms(v)],
    ["jobs", perMinute, (v) => (v === undefined ? "–" : v.toFixed(1) + " /min")],
    ["cpu", samples.map((s) => s.cpu_percent), (v) => (v === undefined ? "–" : v.toFixed(1) + " %")],
    ["rss", samples.map((s) => s.rss_bytes), (v) => size(v)],
  ];
  for (const [name, values, show] of series) {
    sparkline($("#spark-" + name), values, { min: 0 });
    $("#now-" + name).textContent = show(last(values));
  }
  const span = samples[samples.length - 1].at - samples[0].at;
  $("#activity-span").textContent = `(last ${duration(span)}, every ${answer.interval_s} s)`;
}

// ------------------------------------------------------------------ refreshing and routing

function route() {
  const m = /^#job\/([0-9a-fA-F]{6,64})$/.exec(location.hash);
  return m ? m[1].toLowerCase() : null;
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const job = route();
    $("#overview").hidden = job !== null;
    $("#detail").hidden = job === null;
    if (job !== null) {
      if (self === null) renderNode(await api("node"));
      await renderDetail(job, self);
    } else {
      leaveDetail();
      const [node, peers, jobs, results, scores, history] = await Promise.all([
        api("node"), api("peers"), api("jobs").catch(() => ({ jobs: [] })), api("attestations"), api("scores"),
        api("history").catch(() => ({ samples: [] }))]);
      renderNode(node);
      renderPeers(peers);
      renderJobs(jobs.jobs);
      renderResults(results.attestations);
      renderScores(scores.scores);
      renderHistory(history);
      // the deploy engine needs the pool: without it neither route is asked (they answer 503)
      const pool = node.store ?? null;
      const [stored, deploy] = await Promise.all([
        pool ? api("store") : { content: [] },
        pool ? api("deploy").catch((error) => ({ error: error.message })) : null]);
      renderStorage(pool, stored.content);
      if (!pool) renderDeploy(null, "the deploy engine is off on this node: it needs the storage pool ([store] enabled = false)");
      else if (deploy.error) renderDeploy(null, "the deploy engine is off on this node: " + deploy.error);
      else renderDeploy(deploy);
    }
    const now = Date.now() / 1000;
    $("#status").textContent = "live · " + when(now);
    $("#status").title = "times on this page are this browser's local time (" + iso(now) + " in UTC)";
  } catch (error) {
    $("#status").textContent = "error: " + error.message;
  } finally {
    refreshing = false;
  }
}

function eventText(e) {
  const skip = new Set(["id", "time", "at", "kind"]);
  const fields = Object.entries(e).filter(([k]) => !skip.has(k)).map(([k, v]) => {
    const one = (x) => (typeof x === "string" && x.length > 20 ? x.slice(0, 12) + "…" : JSON.stringify(x));
    const text = Array.isArray(v) ? "[" + v.map(one).join(", ") + "]" : one(v);
    return `${k.replaceAll("_", " ")} ${text}`;
  });
  return `#${e.id} ${when(e.at ?? e.time)} ${e.kind} ` + fields.join(", ");
}

async function followEvents() {
  let after = 0;
  for (;;) {
    try {
      const page = await api(`events?after=${after}&timeout=20`);
      for (const e of page.events) {
        after = e.id;
        $("#events").prepend(el("li", {}, eventText(e)));
      }
      const list = $("#events");
      while (list.children.length > 200) list.lastChild.remove();
      if (page.events.length) refresh();
    } catch (error) {
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

// ------------------------------------------------------------------ the submit form

class FieldError extends Error {
  constructor(field, message) { super(message); this.field = field; }
}

function whole(id, lo, hi) {
  const input = $("#" + id);
  const value = Number(input.value);
  if (input.value.trim() === "" || !Number.isInteger(value) || value < lo || value > hi) {
    throw new FieldError(input, `${input.dataset.label} must be a whole number from ${lo} to ${hi}`);
  }
  return value;
}

function specFromForm() {
  const kind = $("#kind").value;
  if (kind === "json") {
    try {
      return JSON.parse($("#spec").value);
    } catch (error) {
      throw new FieldError($("#spec"), "Spec (JSON) is not valid JSON: " + error.message);
    }
  }
  const replicas = whole("replicas", 1, 7);
  if (kind === "grover") {
    const qubits = whole("qubits", 2, 28);
    const text = $("#marked").value;
    const marked = text.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
    if (!marked.length || marked.some((m) => !Number.isInteger(m) || m < 0 || m >= 2 ** qubits)) {
      throw new FieldError($("#marked"), `Marked states must be whole numbers from 0 to ${2 ** qubits - 1}, separated by commas`);
    }
    return { kind: "grover", params: { qubits, marked }, replicas };
  }
  const graph = $("#graph").value.trim();
  if (!graph) throw new FieldError($("#graph"), "Graph is empty: write random:N,D (e.g. random:12,3) or an edge list");
  const p = whole("p", 1, 64);
  const base = { graph, p };
  if (kind === "qaoa") return { kind: "qaoa", params: base, replicas };
  return { kind: "sweep", replicas, params: { over: "qaoa", shard: 4,
    base: { ...base, gammas: Array(p).fill(0), betas: Array(p).fill(0) },
    axes: { "gammas.0": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "betas.0": [0.1, 0.2, 0.3, 0.4] } } };
}

// The node's spec check names spec paths and repeats the field ("the spec was refused:
// params.graph: params.graph:1: expected ...", "params.graph: graph 'random:4000,3': at most 34
// nodes"); the form speaks of its own fields ("Graph, line 1: expected ...", "Graph: at most 34
// nodes") and marks the field. A JSON spec keeps the paths: its writer wrote them.
const FIELDS = { replicas: "replicas", graph: "graph", p: "p", qubits: "qubits", marked: "marked" };
export function formError(message) {
  const text = message.replace(/^the spec was refused:\s*/, "");
  const m = /^(?:params\.(?:base\.)?)?([a-z_]+)(?:\[(\d+)\])?:\s*(.*)$/is.exec(text);
  if (!m || !FIELDS[m[1]] || $("#kind").value === "json") {
    return new FieldError(null, text.replace(/--([a-z-]+)/g, (_, flag) => flag.replaceAll("-", " ")));
  }
  const input = $("#" + FIELDS[m[1]]);
  let rest = m[3], where = m[2] !== undefined ? ` (value ${Number(m[2]) + 1})` : "";
  for (;;) {  // the field named again inside: "params.graph:1: ", "graph 'random:x': ", "graph: "
    const again = new RegExp(`^(?:params\\.(?:base\\.)?)?${m[1]}(?::(\\d+))?(?:\\s+'[^']*')?:\\s*`, "i").exec(rest);
    if (!again) break;
    if (again[1]) where = `, line ${again[1]}`;
    rest = rest.slice(again[0].length);
  }
  const label = input.dataset.label + where;
  return new FieldError(input, /^must\b/.test(rest) ? `${label} ${rest}` : `${label}: ${rest}`);
}

// a mistake shown stays until the reader changes the kind or edits the field it is about
function clearError(field = null) {
  const marked = [...document.querySelectorAll("#submit-form .invalid")];
  if (field && marked.length && !marked.includes(field)) return;
  for (const n of marked) { n.classList.remove("invalid"); n.removeAttribute("aria-invalid"); }
  const out = $("#submit-result");
  if (out.classList.contains("bad")) { out.textContent = ""; out.className = "muted"; }
}

async function submit(event) {
  event.preventDefault();
  const out = $("#submit-result");
  clearError();
  out.className = "muted";
  out.removeAttribute("data-job");
  try {
    const spec = specFromForm();
    out.textContent = "submitting…";
    let state;
    try {
      state = await api("jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ spec }) });
    } catch (error) {
      throw formError(error.message);
    }
    const id = jobId(state);
    out.replaceChildren("submitted ", el("a", { href: "#job/" + id }, id.slice(0, 12) + "…"));
    out.setAttribute("data-job", id);
    refresh();
  } catch (error) {
    out.className = "bad";
    out.textContent = error.message;
    if (error.field) {
      error.field.classList.add("invalid");
      error.field.setAttribute("aria-invalid", "true");
      error.field.focus();
    }
  }
}

function showFields() {
  const kind = $("#kind").value;
  for (const n of document.querySelectorAll(".qaoa-field")) n.hidden = !(kind === "qaoa" || kind === "sweep");
  for (const n of document.querySelectorAll(".grover-field")) n.hidden = kind !== "grover";
  for (const n of document.querySelectorAll(".json-field")) n.hidden = kind !== "json";
  for (const n of document.querySelectorAll(".not-json")) n.hidden = kind === "json";
}

$("#submit-form").addEventListener("submit", submit);
$("#kind").addEventListener("change", () => { clearError(); showFields(); });
$("#submit-form").addEventListener("input", (event) => { if (event.target.id !== "kind") clearError(event.target); });
$("#detail-download").addEventListener("click", download);
window.addEventListener("hashchange", () => { window.scrollTo(0, 0); refresh(); });
showFields();
refresh();
setInterval(refresh, 1000);
followEvents();
api("bench").then(renderBench).catch(() => {});
