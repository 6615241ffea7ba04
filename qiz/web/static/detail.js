// One job in detail (#job/ID): its spec (GET /api/jobs/ID's "spec", for any job, attested or
// not; else what its attestation says), its result's key figures once attested (the results of
// GET /api/jobs/ID/result, the node's one-line summary from GET /api/attestations), its timeline
// (GET /api/jobs/ID/logs), each replica's state and reason, and for a finished sweep its
// landscape as a heat map.
"use strict";

import { api, ApiError, $, el, fillTable, idBox, when, iso, duration, plural } from "./util.js";
import { heatmap, heatKey, pointValue } from "./charts.js";
import { readAttestation, hex } from "./cbor.js";

const attested = new Map();  // job id -> what its attestation says (it never changes)
const summaries = new Map();  // job id -> its row of GET /api/attestations (verified, summary)
let shown = null;  // the job id on screen

export const jobId = (j) => j.job_id;
// why a job or a replica ended as it did ("reason"; "error" in answers of older nodes)
export const reasonOf = (x) => x.reason ?? x.error ?? null;

// what the spec's parameters say, as [label, text] rows a person reads
function parameterRows(kind, params) {
  if (!params) return [];
  const value = (v) => {
    if (typeof v === "string") return v.includes("\n") ? `${v.split("\n").length} lines of text` : v;
    if (Array.isArray(v)) return v.length > 8 ? `${v.length} values: ${v.slice(0, 3).join(", ")} … ${v[v.length - 1]}` : v.join(", ");
    if (v && typeof v === "object") return Object.entries(v).map(([k, x]) => `${k} ${value(x)}`).join("; ");
    return String(v);
  };
  if (kind === "sweep") {
    const rows = [["runs at each point", params.over]];
    for (const [k, v] of Object.entries(params.base || {})) rows.push([`base: ${k}`, value(v)]);
    for (const [axis, values] of Object.entries(params.axes || {})) rows.push([`axis: ${axis}`, value(values)]);
    if (params.shard) rows.push(["points per task", params.shard]);
    return rows;
  }
  return Object.entries(params).map(([k, v]) => [k, value(v)]);
}

function sameBytes(a, b) {
  return a && b && a.length === b.length && a.every((x, i) => x === b[i]);
}

function submitterOf(status, att, self) {
  const given = status.spec ? status.spec.submitter : status.submitter;
  if (given) {
    if (given === self) return el("span", {}, idBox(given), el("span", { class: "muted" }, " (this node)"));
    return given.startsWith("qizn") ? idBox(given) : given;
  }
  if (att && att.coordinatorKey && att.spec.submitter) {
    return sameBytes(att.spec.submitter, att.coordinatorKey) ? el("span", {}, idBox(self), el("span", { class: "muted" }, " (this node)"))
      : `another node (key ${hex(att.spec.submitter.subarray(0, 6))}…)`;
  }
  return el("span", { class: "muted" }, "not known to this node");
}

function renderSpec(status, att, self) {
  // the node's copy of the spec (any job), else the attested one (older nodes, done jobs only)
  const spec = status.spec ?? (att ? att.spec : null);
  const params = spec ? spec.params : status.params;
  const deadline = status.deadline_at ?? status.deadline;
  const submitted = status.submitted_at ?? status.created;
  const reason = reasonOf(status);
  const rows = [
    ["kind", status.kind === "sweep" ? `sweep of ${status.over}` : status.kind],
    ["state", el("span", { class: "state-" + status.state, "data-testid": "detail-state" }, status.state + (reason ? ": " + reason : ""))],
    ["replicas", `${status.replicas_wanted ?? spec?.replicas} per task, quorum ${status.quorum ?? spec?.quorum}`],
    ["tasks", `${status.decided} of ${status.tasks} decided`],
    ...(status.duration_s !== null && status.duration_s !== undefined ? [["took", duration(status.duration_s)]] : []),
    ["seed", status.seed ?? spec?.seed ?? "none (independent randomness per replica)"],
    ["submitted", when(submitted)],
    ["deadline", when(deadline) + (spec && spec.deadline_s ? ` (${duration(spec.deadline_s)} after submission)` : "")],
    ["submitter", submitterOf(status, att, self)],
  ];
  if (att && att.issued) rows.push(["attested", `${when(att.issued)} (${[...new Set(att.tests)].join(", ")})`]);
  const paramRows = parameterRows(status.kind, params);
  if (!params) rows.push(["parameters", el("span", { class: "muted" }, "not known to this node")]);
  $("#detail-spec").replaceChildren(...[...rows, ...paramRows].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

// ------------------------------------------------------------------ the result's key figures

const num = (v, digits = 10) => (typeof v === "number" ? Number(v.toPrecision(digits)).toString() : "–");
const percent = (v) => (typeof v === "number" ? (v * 100).toFixed(2) + " %" : "–");

function topCounts(counts, shots, n) {
  const total = shots || Object.values(counts).reduce((a, b) => a + b, 0);
  return Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k, v]) => `${k}: ${v} (${((v / total) * 100).toFixed(1)} %)`).join(", ");
}

// what a person looks for in each kind's result (the first task's, as qiz job result prints)
export function keyFigures(kind, results) {
  const r = Array.isArray(results) ? results[0] : null;
  if (kind === "sweep") {
    const points = (results || []).flat();
    return points.length ? [["points", points.length]] : [];
  }
  if (!r || typeof r !== "object") return [];
  const rows = [];
  if (kind === "vqe" || ("energy" in r && !("counts" in r))) {
    rows.push(["energy", num(r.energy)]);
    if (typeof r.exact === "number") {
      rows.push(["exact ground energy", num(r.exact)]);
      const gap = r.energy - r.exact;
      rows.push(["above exact by", `${num(gap, 4)}` + (r.exact ? ` (${Math.abs((gap / r.exact) * 100).toFixed(2)} %)` : "")]);
    }
    if ("converged" in r) rows.push(["optimizer", (r.converged ? "converged" : "did not converge") + (r.evaluations ? ` after ${plural(r.evaluations, "evaluation")}` : "")]);
    return rows;
  }
  if ("approximation_ratio" in r || (kind === "qaoa" && "expectation" in r)) {
    rows.push(["expected cut", num(r.expectation, 7)]);
    if (typeof r.approximation_ratio === "number") rows.push(["approximation ratio", num(r.approximation_ratio, 4)]);
    if ("best_cut" in r) rows.push(["best cut sampled", `${num(r.best_cut)}` + (r.best_bitstring ? ` (${r.best_bitstring})` : "")]);
    if (typeof r.optimum === "number") rows.push(["optimum", num(r.optimum)]);
    if (r.evaluations) rows.push(["optimizer", `${plural(r.evaluations, "evaluation")}`]);
    return rows;
  }
  if (typeof r.success_probability === "number") rows.push(["success probability", `${num(r.success_probability, 6)} (${percent(r.success_probability)})`]);
  if (r.iterations) rows.push(["Grover iterations", r.iterations]);
  if (r.counts && typeof r.counts === "object") {
    rows.push(["shots", r.shots ?? Object.values(r.counts).reduce((a, b) => a + b, 0)]);
    rows.push(["top outcomes", topCounts(r.counts, r.shots, kind === "sampler" ? 8 : 3)]);
  }
  if ("expectation" in r && !rows.length) rows.push(["expectation", num(r.expectation)]);
  if (Array.isArray(r.values)) rows.push(["values", r.values.slice(0, 8).map((v) => num(v)).join(", ")]);
  return rows;
}

function renderResult(status, att, view) {
  const card = $("#result-card");
  const box = $("#detail-result");
  card.hidden = status.state !== "done" && !att;
  if (card.hidden) return;
  if (!att) { box.replaceChildren(el("dt", {}, "result"), el("dd", { class: "muted" }, "reading the attestation…")); return; }
  const rows = keyFigures(status.kind, att.results);
  if (view) {
    rows.push(["check", el("span", { class: view.verified ? "ok" : "bad" }, view.verified ? `verified (${view.tests.join(", ")})` : "NOT verified: " + reasonOf(view))]);
    if (view.summary) rows.push(["summary", el("span", { class: "muted" }, view.summary)]);
  }
  box.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-testid": "figure-" + k.replaceAll(" ", "-") }, v)]));
}

function renderReplicas(status) {
  const rows = status.replicas.map((r) => el("tr", { "data-testid": "replica-row", "data-state": r.state },
    el("td", { class: "num" }, r.task), el("td", {}, idBox(r.worker)),
    el("td", { class: "state-" + r.state }, r.state), el("td", { class: "num" }, Math.round((r.progress || 0) * 100) + "%"),
    el("td", { class: reasonOf(r) ? "bad wrap" : "muted" }, reasonOf(r) || "–")));
  fillTable($("#detail-replicas"), rows, "no replica placed yet");
}

function renderTimeline(logs) {
  const list = $("#detail-timeline");
  if (logs === null) {
    list.replaceChildren(el("li", { class: "muted", "data-testid": "no-timeline" }, "no timeline: this node keeps no log for the job"));
    return;
  }
  const start = logs.entries.length ? logs.entries[0].at : 0;
  list.replaceChildren(...logs.entries.map((e) => el("li", { "data-testid": "timeline-entry", "data-event": e.event },
    el("span", { class: "at", title: iso(e.at) }, when(e.at), " ", el("span", { class: "muted" }, `+${duration(e.at - start)}`)),
    el("span", { class: "event ev-" + e.event }, e.event.replaceAll("_", " ")),
    e.task !== null && e.task !== undefined ? el("span", { class: "muted" }, `task ${e.task}`) : "",
    e.worker ? idBox(e.worker) : "",
    el("span", { class: "detail" }, e.detail || ""))));
  if (!logs.entries.length) list.replaceChildren(el("li", { class: "muted" }, "nothing logged yet"));
}

function renderLandscape(status, att) {
  const box = $("#detail-landscape");
  const card = $("#landscape-card");
  card.hidden = status.kind !== "sweep";
  if (status.kind !== "sweep") return;
  if (!att) {
    box.replaceChildren(el("p", { class: "muted" }, status.state === "done" ? "reading the results…" : "the landscape appears when the sweep is done"));
    return;
  }
  const points = (att.results || []).flat();
  const judged = points.map(pointValue).filter(Boolean);
  if (!judged.length) { box.replaceChildren(el("p", { class: "muted" }, "these results carry no value to draw")); return; }
  const best = points.reduce((a, p) => {
    const v = pointValue(p);
    if (!v) return a;
    return !a || (v.higher ? v.value > a.v.value : v.value < a.v.value) ? { p, v } : a;
  }, null);
  const text = Object.entries(best.p.point).map(([k, v]) => `${k} = ${v}`).join(", ");
  box.replaceChildren(heatmap(points), heatKey(points),
    el("p", { "data-testid": "best-point" }, `best of ${points.length} points: ${best.v.key} ${best.v.value} at ${text}`));
}

async function attestationOf(id, status) {
  if (attested.has(id)) return attested.get(id);
  if (status.state !== "done") return null;
  try {
    const answer = await api(`jobs/${id}/result`);
    const att = answer.attestation ? readAttestation(answer.attestation) : null;
    if (att && answer.results) att.results = answer.results;
    attested.set(id, att);
    return att;
  } catch (error) {
    console.warn("the attestation could not be read (tried again at the next refresh):", error.message);
    return null;
  }
}

// the node's check of the attestation and its one-line summary (GET /api/attestations)
async function summaryOf(id, status) {
  if (summaries.has(id)) return summaries.get(id);
  if (status.state !== "done") return null;
  const answer = await api("attestations").catch(() => ({ attestations: [] }));
  const view = answer.attestations.find((a) => a.job_id === id) ?? null;
  if (view) summaries.set(id, view);
  return view;
}

async function logsOf(id) {
  try {
    return await api(`jobs/${id}/logs`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;  // a node without job logs
    throw error;
  }
}

export async function renderDetail(id, self) {
  if (shown !== id) {
    shown = id;
    $("#detail-id").replaceChildren(idBox(id));
    for (const n of ["#detail-spec", "#detail-result", "#detail-timeline", "#detail-landscape"]) $(n).replaceChildren();
    $("#result-card").hidden = true;
    fillTable($("#detail-replicas"), []);
    $("#detail-error").textContent = "";
    $("#detail").removeAttribute("data-job");
  }
  let status;
  try {
    status = await api(`jobs/${id}`);
  } catch (error) {
    $("#detail-error").textContent = error.status === 404 ? `no job ${id} was submitted through this node` : error.message;
    return;
  }
  const full = jobId(status);
  const [logs, att, view] = await Promise.all([logsOf(full).catch(() => null), attestationOf(full, status), summaryOf(full, status)]);
  if (shown !== id) return;  // the reader moved on meanwhile
  if ($("#detail").getAttribute("data-job") !== full) {
    $("#detail").setAttribute("data-job", full);
    $("#detail-id").replaceChildren(idBox(full));
  }
  renderSpec(status, att, self);
  renderResult(status, att, view);
  renderReplicas(status);
  renderTimeline(logs);
  renderLandscape(status, att);
  const link = $("#detail-download");
  link.hidden = !status.attested && status.state !== "done";
  link.setAttribute("data-job", full);
}

export function leaveDetail() { shown = null; }
