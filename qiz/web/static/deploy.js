// The Deploy card: the bundles installed on this node and the channels it publishes, from
// GET /api/deploy (qiz deploy ls). Names and versions come from bundles and peers, reasons and
// errors quote them: everything is written as text through el(), never as markup.
"use strict";

import { $, el, fillTable, idBox, whenCell, plural } from "./util.js";

// the supervisor's states (qiz/deploy/supervisor_core.py) and the colour each is shown in
const STATE_CLASS = {
  running: "state-running", healthy: "ok", starting: "state-running", submitted: "ok",
  backoff: "warn", stopping: "warn", "rolling-back": "warn",
  failed: "bad", exited: "muted", stopped: "muted",
};
const UP = new Set(["running", "healthy", "starting", "backoff", "submitted"]);

function versionCell(b) {
  const installed = (b.installed || []).join(", ");
  return el("td", { class: "wrap", "data-testid": "deploy-version", title: installed ? "installed: " + installed : undefined },
    el("b", {}, b.current ?? "–"),
    b.previous ? el("span", { class: "muted" }, " (previous " + b.previous + ")") : "");
}

function stateCell(b) {
  const state = b.state ?? "stopped";
  return el("td", { class: "wrap", "data-testid": "deploy-state" },
    el("span", { class: STATE_CLASS[state] || "", "data-testid": "deploy-state-name" }, state),
    b.reason ? el("span", { class: "muted", "data-testid": "deploy-reason" }, ": " + b.reason) : "",
    b.job ? [" ", el("span", { class: "muted" }, "job "), idBox(b.job, { href: "#job/" + b.job })] : "");
}

// versions rolled back from, never installed again (the installer's marks; the supervisor's
// rollbacks since the node started are among them)
function badCell(b) {
  const bad = b.bad || [];
  return el("td", { class: "wrap " + (bad.length ? "warn" : "muted"), "data-testid": "deploy-bad" },
    bad.length ? bad.join(", ") : "none");
}

function followCell(b) {
  return el("td", { "data-testid": "deploy-following" },
    b.following ? "following" : el("span", { class: "muted" }, "installed once"),
    b.keep_running ? "" : el("span", { class: "muted" }, ", kept stopped"));
}

// the last look at the channel: when, and the error if it failed (it may quote the peer)
function refreshCell(b) {
  const last = b.last_refresh;
  if (!last) return el("td", { class: "muted" }, "–");
  const cell = whenCell(last.at);
  cell.setAttribute("data-testid", "deploy-refresh");
  if (!last.ok) cell.append(el("div", { class: "bad wrap", "data-testid": "deploy-refresh-error" }, "failed: " + (last.error || "?")));
  return cell;
}

function bundleRow(b) {
  return el("tr", { "data-testid": "deploy-row", "data-name": b.name, "data-state": b.state ?? "stopped" },
    el("td", { class: "wrap", "data-testid": "deploy-name" }, b.name),
    el("td", {}, b.channel ? idBox(b.channel, { testid: "deploy-channel" }) : el("span", { class: "muted" }, "–")),
    versionCell(b), stateCell(b),
    el("td", { class: "num", "data-testid": "deploy-pid" }, b.pid ?? "–"),
    el("td", { class: "num " + (b.restarts ? "warn" : ""), "data-testid": "deploy-restarts" }, b.restarts ?? 0),
    badCell(b), followCell(b), refreshCell(b));
}

function channelRow(c) {
  const versions = c.versions || [];
  return el("tr", { "data-testid": "channel-row", "data-name": c.name },
    el("td", { class: "wrap", "data-testid": "channel-name" }, c.name),
    el("td", {}, idBox(c.channel, { testid: "channel-id" })),
    el("td", { class: "wrap", "data-testid": "channel-versions" },
      versions.length ? [versions.slice(0, -1).join(", ") + (versions.length > 1 ? ", " : ""), el("b", { title: "the newest" }, versions[versions.length - 1])]
        : el("span", { class: "muted" }, "none")),
    el("td", {}, c.tree ? idBox(c.tree) : el("span", { class: "muted" }, "not pushed"),
      c.error ? el("div", { class: "bad wrap", "data-testid": "channel-error" }, c.error) : ""));
}

// answer: GET /api/deploy ({bundles, channels}); off: why there is none (the pool is off here,
// or the node said no), in which case both tables say so
export function renderDeploy(answer, off = null) {
  const bundles = answer ? answer.bundles : [];
  const channels = answer ? answer.channels : [];
  const up = bundles.filter((b) => UP.has(b.state)).length;
  $("#deploy-count").textContent = off
    ? "(off on this node)"
    : `(${plural(bundles.length, "bundle")} installed, ${up} running; ${plural(channels.length, "channel")} published)`;
  fillTable($("#deploy-bundles"), bundles.map(bundleRow),
    off || "no bundle installed here yet (qiz deploy follow OWNER/deploy/NAME, or qiz deploy install OWNER/deploy/NAME)");
  fillTable($("#deploy-channels"), channels.map(channelRow),
    off || "this node publishes no channel yet (qiz deploy publish DIR)");
}
