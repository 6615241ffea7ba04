// The QIZ dashboard: plain JavaScript, no build step. Talks only to this node's /api/.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("token")) {
  sessionStorage.setItem("qiz-token", params.get("token"));
  history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
}
const token = sessionStorage.getItem("qiz-token") || "";
const $ = (sel) => document.querySelector(sel);
const short = (id) => (id || "").slice(0, 14) + "…";

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token, ...(options.headers || {}) };
  const response = await fetch("/api/" + path, { ...options, headers });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k === "title" || k === "href" || k === "download") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function fillTable(selector, rows) {
  const body = $(selector + " tbody");
  body.replaceChildren(...rows);
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  return (n / (1 << 20)).toFixed(1) + " MiB";
}

function rttClass(ms) {
  if (ms === null || ms === undefined) return "none";
  return ms < 1 ? "fast" : ms < 5 ? "mid" : "slow";
}

function renderNode(node) {
  const rows = [
    ["id", node.node_id], ["addresses", (node.addresses || [node.address]).join(", ")],
    ["uptime", node.uptime_s.toFixed(0) + " s"], ["version", node.version],
    ["DHT", `${node.dht.contacts} contacts, ${node.dht.records} records, ${node.dht.lookups} lookups`],
  ];
  const worker = node.compute && node.compute.worker;
  if (worker) rows.push(["worker", `${worker.qubits} qubits, ${worker.slots} slots, queue ${worker.queue}, ${worker.engine}`]);
  $("#node").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-testid": "node-" + k }, v)]));
}

function renderMesh(self, peers) {
  const svg = $("#mesh");
  const ns = "http://www.w3.org/2000/svg";
  const make = (tag, attrs) => { const n = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; };
  const cx = 210, cy = 150, r = 110;
  const colors = { fast: "#3ddc97", mid: "#f6c453", slow: "#ff6b6b", none: "#8a97a5" };
  const parts = [];
  const nodes = [{ id: self, x: cx, y: cy, self: true }];
  peers.forEach((p, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, peers.length) - Math.PI / 2;
    nodes.push({ id: p.peer, x: cx + r * Math.cos(a), y: cy + r * Math.sin(a), rtt: p.rtt_ms });
  });
  for (const n of nodes.slice(1)) {
    parts.push(make("line", { x1: cx, y1: cy, x2: n.x, y2: n.y, stroke: colors[rttClass(n.rtt)], "stroke-width": 2.5 }));
    if (n.rtt !== null && n.rtt !== undefined) {
      const t = make("text", { x: (cx + n.x) / 2 + 4, y: (cy + n.y) / 2 - 4 }); t.textContent = n.rtt.toFixed(2) + " ms"; parts.push(t);
    }
  }
  for (const n of nodes) {
    const g = make("g", { "data-testid": "mesh-node", "data-id": n.id });
    const title = make("title", {}); title.textContent = n.id; g.append(title);
    g.append(make("circle", { cx: n.x, cy: n.y, r: n.self ? 14 : 10, fill: n.self ? "#5cc8ff" : "#2b3947", stroke: "#5cc8ff" }));
    const label = make("text", { x: n.x + 14, y: n.y + 4 }); label.textContent = (n.self ? "this node " : "") + short(n.id);
    g.append(label);
    parts.push(g);
  }
  svg.replaceChildren(...parts);
  $("#mesh-count").textContent = `${nodes.length} nodes`;
  fillTable("#peers", peers.map((p) => el("tr", { "data-testid": "peer-row" },
    el("td", { class: "id", title: p.peer }, short(p.peer)), el("td", {}, (p.listens_at && p.listens_at[0]) || p.address),
    el("td", { class: rttClass(p.rtt_ms) === "slow" ? "bad" : "" }, p.rtt_ms === null ? "–" : p.rtt_ms.toFixed(3) + " ms"),
    el("td", {}, bytes(p.bytes_sent)), el("td", {}, bytes(p.bytes_received)),
    el("td", {}, new Date(p.since * 1000).toLocaleTimeString()), el("td", {}, p.score === null ? "–" : p.score.toFixed(3)))));
}

function renderJobs(jobs) {
  fillTable("#jobs", jobs.slice().reverse().map((j) => {
    const where = {};
    for (const r of j.replicas) where[short(r.worker)] = (where[short(r.worker)] || 0) + (r.state === "done" ? 1 : 0);
    const lost = j.replicas.filter((r) => r.state === "lost").length;
    const bar = el("span", { class: "bar" }, el("span", { style: "" }));
    bar.firstChild.style.width = Math.round(j.progress * 100) + "%";
    return el("tr", { "data-testid": "job-row", "data-job": j.job, "data-state": j.state },
      el("td", { class: "id", title: j.job }, j.job.slice(0, 12)),
      el("td", {}, j.kind === "sweep" ? "sweep/" + j.over : j.kind),
      el("td", { class: "state-" + j.state, "data-testid": "job-state" }, j.state + (j.error ? ": " + j.error : "")),
      el("td", {}, bar, " " + Math.round(j.progress * 100) + "%"),
      el("td", {}, `${j.decided}/${j.tasks}`),
      el("td", {}, Object.entries(where).map(([w, n]) => `${w} ${n}`).join(", ") + (lost ? ` (${lost} lost)` : "")));
  }));
}

function renderResults(items) {
  fillTable("#results", items.slice().reverse().map((a) => el("tr", { "data-testid": "result-row", "data-job": a.job },
    el("td", { class: "id", title: a.job }, a.job.slice(0, 12)), el("td", {}, a.kind || ""),
    el("td", { class: a.verified ? "ok" : "bad", "data-testid": "verified" }, a.verified ? "verified (" + a.tests.join(", ") + ")" : "NOT verified: " + a.error),
    el("td", {}, a.summary || ""), el("td", {}, a.workers ? a.workers.length + " workers" : ""),
    el("td", {}, el("a", { href: "#", "data-job": a.job, onclick: download }, "download")))));
}

async function download(event) {
  event.preventDefault();
  const job = event.target.getAttribute("data-job");
  const response = await fetch("/api/attestations/" + job, { headers: { Authorization: "Bearer " + token } });
  const blob = await response.blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: job.slice(0, 16) + ".att" });
  link.click();
}

function renderScores(rows) {
  fillTable("#scores", rows.map((s) => el("tr", {}, el("td", { class: "id", title: s.peer }, short(s.peer)),
    el("td", {}, s.score.toFixed(3)), el("td", {}, s.agreed), el("td", {}, s.disagreed), el("td", {}, s.failed))));
}

function renderBench(bench) {
  const unit = (f) => f.endsWith("_gb_s") ? " GB/s" : f.endsWith("_ms") || f.endsWith("_ms_median") ? " ms" : "";
  fillTable("#bench", bench.figures.map((f) => el("tr", {},
    el("td", {}, f.figure.replaceAll("_", " ")), el("td", {}, f.measured === null ? "–" : f.measured + unit(f.figure)),
    el("td", {}, f.claim_text), el("td", { class: f.ratio && f.ratio >= 1 ? "ok" : "bad" }, f.ratio ? f.ratio + "x" : "–"))));
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const [node, peers, jobs, results, scores] = await Promise.all([
      api("node"), api("peers"), api("jobs"), api("attestations"), api("scores")]);
    renderNode(node);
    renderMesh(peers.self, peers.peers);
    renderJobs(jobs.jobs);
    renderResults(results.attestations);
    renderScores(scores.scores);
    $("#status").textContent = "live · " + new Date().toLocaleTimeString();
  } catch (error) {
    $("#status").textContent = "error: " + error.message;
  } finally {
    refreshing = false;
  }
}

async function followEvents() {
  let after = 0;
  for (;;) {
    try {
      const page = await api(`events?after=${after}&timeout=20`);
      for (const e of page.events) {
        after = e.id;
        const text = `#${e.id} ${new Date(e.time * 1000).toLocaleTimeString()} ${e.kind} ` +
          Object.entries(e).filter(([k]) => !["id", "time", "kind"].includes(k)).map(([k, v]) => `${k}=${typeof v === "string" && v.length > 20 ? v.slice(0, 12) + "…" : JSON.stringify(v)}`).join(" ");
        $("#events").prepend(el("li", {}, text));
      }
      if (page.events.length) refresh();
    } catch (error) {
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

function specFromForm() {
  const kind = $("#kind").value;
  const replicas = Number($("#replicas").value);
  if (kind === "json") return JSON.parse($("#spec").value);
  if (kind === "grover") {
    const marked = $("#marked").value.split(",").map((x) => Number(x.trim()));
    return { kind: "grover", params: { qubits: Number($("#qubits").value), marked }, replicas };
  }
  const base = { graph: $("#graph").value, p: Number($("#p").value) };
  if (kind === "qaoa") return { kind: "qaoa", params: base, replicas };
  const p = base.p;
  return { kind: "sweep", replicas, params: { over: "qaoa", shard: 4,
    base: { ...base, gammas: Array(p).fill(0), betas: Array(p).fill(0) },
    axes: { "gammas.0": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "betas.0": [0.1, 0.2, 0.3, 0.4] } } };
}

function showFields() {
  const kind = $("#kind").value;
  for (const n of document.querySelectorAll(".qaoa-field")) n.hidden = !(kind === "qaoa" || kind === "sweep");
  for (const n of document.querySelectorAll(".grover-field")) n.hidden = kind !== "grover";
  for (const n of document.querySelectorAll(".json-field")) n.hidden = kind !== "json";
}

async function submit(event) {
  event.preventDefault();
  const out = $("#submit-result");
  try {
    const state = await api("jobs", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ spec: specFromForm() }) });
    out.textContent = "submitted " + state.job.slice(0, 12);
    out.setAttribute("data-job", state.job);
    refresh();
  } catch (error) {
    out.textContent = "refused: " + error.message;
  }
}

$("#submit-form").addEventListener("submit", submit);
$("#kind").addEventListener("change", showFields);
showFields();
refresh();
setInterval(refresh, 1000);
followEvents();
api("bench").then(renderBench).catch(() => {});
