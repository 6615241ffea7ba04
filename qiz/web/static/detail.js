// One job in detail (#job/ID): its spec, its timeline (GET /api/jobs/ID/logs), each replica's
// state and error (GET /api/jobs/ID), and for a finished sweep its landscape as a heat map
// (the results of its attestation, GET /api/jobs/ID/result).
"use strict";

import { api, ApiError, $, el, fillTable, idBox, when, duration } from "./util.js";
import { heatmap, heatKey, pointValue } from "./charts.js";
import { readAttestation, hex } from "./cbor.js";

const attested = new Map();  // job id -> what its attestation says (it never changes)
let shown = null;  // the job id on screen

export const jobId = (j) => j.job_id ?? j.job;

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

function renderSpec(status, att, self) {
  const spec = att ? att.spec : null;
  const params = status.params ?? (spec && spec.params);
  let submitter = status.submitter ?? null;
  if (!submitter && spec && att.coordinatorKey) {
    submitter = sameBytes(spec.submitter, att.coordinatorKey) ? self : `another node (key ${hex(spec.submitter.subarray(0, 6))}…)`;
  }
  const submitted = status.submitted_at ?? status.created;
  const rows = [
    ["kind", status.kind === "sweep" ? `sweep of ${status.over}` : status.kind],
    ["state", el("span", { class: "state-" + status.state, "data-testid": "detail-state" }, status.state + (status.error ? ": " + status.error : ""))],
    ["replicas", `${status.replicas_wanted} per task, quorum ${status.quorum}`],
    ["tasks", `${status.decided} of ${status.tasks} decided`],
    ...(status.duration_s !== null && status.duration_s !== undefined ? [["took", duration(status.duration_s)]] : []),
    ["seed", status.seed ?? "none (independent randomness per replica)"],
    ["submitted", when(submitted)],
    ["deadline", when(status.deadline_at ?? status.deadline)],
    ["submitter", submitter && submitter.startsWith("qizn") ? idBox(submitter) : submitter ?? "shown once the job is attested"],
  ];
  if (att && att.issued) rows.push(["attested", `${when(att.issued)} (${[...new Set(att.tests)].join(", ")})`]);
  const paramRows = parameterRows(status.kind, params);
  if (!params) rows.push(["parameters", "shown once the job is attested"]);
  $("#detail-spec").replaceChildren(...[...rows, ...paramRows].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function renderReplicas(status) {
  const rows = status.replicas.map((r) => el("tr", { "data-testid": "replica-row", "data-state": r.state },
    el("td", { class: "num" }, r.task), el("td", {}, idBox(r.worker)),
    el("td", { class: "state-" + r.state }, r.state), el("td", { class: "num" }, Math.round((r.progress || 0) * 100) + "%"),
    el("td", { class: r.error ? "bad wrap" : "muted" }, r.error || "–")));
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
    el("span", { class: "at", title: when(e.at) }, when(e.at).slice(11), el("span", { class: "muted" }, ` +${duration(e.at - start)}`)),
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
    for (const n of ["#detail-spec", "#detail-timeline", "#detail-landscape"]) $(n).replaceChildren();
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
  const [logs, att] = await Promise.all([logsOf(full).catch(() => null), attestationOf(full, status)]);
  if (shown !== id) return;  // the reader moved on meanwhile
  if ($("#detail").getAttribute("data-job") !== full) {
    $("#detail").setAttribute("data-job", full);
    $("#detail-id").replaceChildren(idBox(full));
  }
  renderSpec(status, att, self);
  renderReplicas(status);
  renderTimeline(logs);
  renderLandscape(status, att);
  const link = $("#detail-download");
  link.hidden = !status.attested && status.state !== "done";
  link.setAttribute("data-job", full);
}

export function leaveDetail() { shown = null; }
