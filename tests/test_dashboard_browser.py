"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright (no browser
download: ``executable_path`` points at /usr/bin/chromium). Two node processes on loopback.

From the page: the mesh and this node; the submit form's mistakes said in the form's words (the
node's spec paths and repeated field names left out) and gone once the field is edited or the
kind changed; a sweep submitted, watched until done and its attestation verified; the job's
detail view (spec, per-replica table, timeline with dated moments and their zone, the
landscape's heat map) by a click and by its ``#job/ID`` route; a QAOA job's key figures; a
cancelled job's spec (never attested: the node's copy);
this node marked among the peer scores; counts in the singular when there is one;
the layout at 1280 and 1920 px (nothing wider than its card, nothing wider than the window,
the results' replicas column and the whitepaper's ratio column on screen); a copied id; the
node's recent activity drawn; a peer that stops shown offline, with why; no console error and
no failed request but the deliberate mistakes. ``make test`` installs chromium.

Set ``QIZ_SCREENSHOT=path.png`` to keep the overview's screenshot at 1280 px (docs/dashboard.png
is made this way).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from .helpers import eventually, node_processes, node_state, ok_json, qiz, qiz_init

pytestmark = pytest.mark.timeout(300)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # the test may run as root in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
]
WIDTHS = (1280, 1920)
JOB_ID = re.compile(r"^[0-9a-f]{64}$")

# Every visible card, table and scroll box whose content is wider than itself, every element of
# a card (drawings' insides aside) that reaches out of its card, and the page if it is wider
# than the window: what a reader would find clipped or would have to scroll sideways for.
OVERFLOWS = """() => {
  const bad = [];
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth) {
    bad.push(`page ${page.scrollWidth} > ${page.clientWidth}`);
  }
  const shown = (e) => e.getClientRects().length > 0;
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
    (typeof e.className === "string" && e.className ? "." + e.className.replaceAll(" ", ".") : "");
  for (const e of document.querySelectorAll(".card, .card table, .scroll, .detail-head")) {
    if (shown(e) && e.scrollWidth > e.clientWidth) {
      bad.push(`${name(e)} ${e.scrollWidth} > ${e.clientWidth}`);
    }
  }
  for (const card of document.querySelectorAll(".card")) {
    if (!shown(card)) continue;
    const box = card.getBoundingClientRect();
    for (const e of card.querySelectorAll("*")) {
      if (e instanceof SVGElement && e.tagName !== "svg") continue;
      const r = e.getBoundingClientRect();
      if (r.width && (r.right > box.right + 0.5 || r.left < box.left - 0.5)) {
        bad.push(`${name(e)} in ${name(card)}: ${r.left}..${r.right} vs ${box.left}..${box.right}`);
      }
    }
  }
  return bad;
}"""


def inside(page: Any, selector: str, container: str) -> bool:
    """The first ``selector`` lies wholly inside the window and inside its ``container``."""
    return page.evaluate(
        """([sel, outer]) => {
          const e = document.querySelector(sel), r = e.getBoundingClientRect();
          const c = e.closest(outer).getBoundingClientRect();
          return r.width > 0 && r.left >= c.left && r.right <= c.right && r.right <= innerWidth;
        }""",
        [selector, container],
    )


def test_the_dashboard_runs_a_sweep_shows_its_detail_and_fits_two_widths(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert shutil.which(CHROMIUM), "Debian's chromium is missing: 'make test' installs it"
    work = tmp_path
    ids = qiz_init(work, "A", "B")
    with node_processes(work) as start:
        a = start("A", args=["--slots", "1", "--api-port", "0"])
        b = start("B", [a.bootstrap], args=["--slots", "1"])

        def linked() -> bool:
            status = node_state(a)
            return bool(status) and len(status["links"]) >= 1

        eventually(linked, 30, "A linked to B")
        url = ok_json(qiz(work, "--home", "A", "dashboard", "--json"))["url"]
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        base = url.split("?")[0]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(
                    viewport={"width": WIDTHS[0], "height": 1000},
                    permissions=["clipboard-read", "clipboard-write"],
                )
                page = context.new_page()
                errors: list[str] = []
                failed: list[tuple[int, str, str]] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on(
                    "console",
                    lambda m: errors.append(m.text) if m.type == "error" else None,
                )
                page.on(
                    "response",
                    lambda r: (
                        failed.append((r.status, r.request.method, r.url))
                        if r.status >= 400
                        else None
                    ),
                )
                page.goto(url)

                # the mesh and this node
                nodes = page.locator("[data-testid=mesh-node]")
                expect(nodes).to_have_count(2, timeout=20_000)
                assert {nodes.nth(i).get_attribute("data-id") for i in range(2)} == set(
                    ids.values()
                )
                expect(page.get_by_test_id("node-id")).to_have_text(ids["A"])
                assert "token" not in page.url  # the page moved it out of the address bar
                peer = page.locator(f"[data-testid=peer-row][data-peer='{ids['B']}']")
                expect(peer).to_have_attribute("data-state", "online")

                # the form's mistakes, in the form's words
                result = page.get_by_test_id("submit-result")
                page.get_by_test_id("kind").select_option("qaoa")
                page.get_by_test_id("replicas").fill("20")
                page.get_by_test_id("submit-job").click()
                expect(result).to_have_text("Replicas must be a whole number from 1 to 7")
                expect(page.get_by_test_id("replicas")).to_have_class("invalid")
                page.get_by_test_id("kind").select_option("grover")  # a new kind: a clean form
                expect(result).to_have_text("")
                expect(page.get_by_test_id("replicas")).not_to_have_class("invalid")
                page.get_by_test_id("kind").select_option("qaoa")
                page.get_by_test_id("replicas").fill("2")
                page.get_by_test_id("graph").fill("nonsense")
                page.get_by_test_id("submit-job").click()  # refused by the node's spec check
                expect(result).to_have_text(
                    "Graph, line 1: expected 'u v' or 'u v weight'", timeout=20_000
                )
                expect(page.get_by_test_id("graph")).to_have_class("invalid")
                page.get_by_test_id("graph").press("End")
                page.get_by_test_id("graph").press("Backspace")  # an edit: the mistake goes
                expect(result).to_have_text("")
                expect(page.get_by_test_id("graph")).not_to_have_class("invalid")
                # the node's other wordings, in the form's words (no request: no node needed)
                said = page.evaluate(
                    """msgs => import("/static/app.js")
                       .then(m => msgs.map(t => m.formError(t).message))""",
                    [
                        "the spec was refused: params.graph: graph 'random:4000,3': "
                        "at most 34 nodes (one qubit each)",
                        "the spec was refused: params.p: must be a whole number from 1 to 64",
                        "the spec was refused: params.base.graph: params.base.graph:2: "
                        "nodes must be integers from 0 to 33",
                    ],
                )
                assert said == [
                    "Graph: at most 34 nodes (one qubit each)",
                    "QAOA layers (p) must be a whole number from 1 to 64",
                    "Graph, line 2: nodes must be integers from 0 to 33",
                ], said

                # a sweep, from the page, until its attestation is verified
                page.get_by_test_id("kind").select_option("sweep")
                page.get_by_test_id("graph").fill("random:8,3")
                page.get_by_test_id("submit-job").click()
                expect(result).to_contain_text("submitted", timeout=20_000)
                job = result.get_attribute("data-job")
                assert job and len(job) == 64
                others: dict[str, str] = {}
                for kind in ("grover", "qaoa"):  # two more, for the overview's sake
                    page.get_by_test_id("kind").select_option(kind)
                    page.get_by_test_id("submit-job").click()
                    expect(result).not_to_have_attribute("data-job", others.get("grover", job))
                    expect(result).to_have_attribute("data-job", JOB_ID, timeout=20_000)
                    others[kind] = str(result.get_attribute("data-job"))
                assert len(set(others.values()) - {job}) == 2
                row = page.locator(f"[data-testid=job-row][data-job='{job}']")
                expect(row).to_have_attribute("data-state", "done", timeout=120_000)
                verified = page.locator(f"[data-testid=result-row][data-job='{job}']")
                expect(verified.get_by_test_id("verified")).to_contain_text(
                    "verified (exact)", timeout=20_000
                )
                expect(verified.get_by_test_id("result-replicas")).to_have_text(
                    "8 tasks on 2 workers"
                )
                expect(page.locator("[data-testid=job-row][data-state=done]")).to_have_count(
                    3, timeout=60_000
                )
                expect(page.locator("#events li").first).to_be_visible()
                expect(page.get_by_test_id("ratio").first).to_be_visible(timeout=30_000)
                figures = page.get_by_test_id("figure").all_inner_texts()
                assert "encryption, GB/s" in figures and not any("_" in f for f in figures)
                expect(page.locator("#spark-rss polyline")).to_have_count(1, timeout=20_000)
                expect(page.get_by_test_id("now-cpu")).to_contain_text("%")
                expect(page.get_by_test_id("mesh-count")).to_have_text("2 nodes online")
                me = page.locator(f"[data-testid=score-row][data-peer='{ids['A']}']")
                expect(me.get_by_test_id("this-node")).to_have_text("(this node)")
                took = page.locator("[data-testid=job-row] td:last-child").all_inner_texts()
                assert not any(" min" in t for t in took), took  # the CLI's 1m01s, 12.3 s

                # an id is shortened on screen, whole on hover, and copied whole
                cell = row.locator(".idbox").first
                assert cell.locator(".id").get_attribute("title") == job
                cell.locator("button.copy").click()
                expect(cell.locator("button.copy")).to_have_class("copy copied")
                assert page.evaluate("navigator.clipboard.readText()") == job

                # the overview fits at both widths
                for width in WIDTHS:
                    page.set_viewport_size({"width": width, "height": 1000})
                    assert page.evaluate(OVERFLOWS) == [], width
                    assert inside(page, "[data-testid=result-replicas]", ".card"), width
                    assert inside(page, "[data-testid=ratio]", ".card"), width
                page.set_viewport_size({"width": WIDTHS[0], "height": 1000})
                keep = os.environ.get("QIZ_SCREENSHOT")
                if keep:
                    page.screenshot(path=keep, full_page=True)

                # the detail view, by a click on the job's row
                row.locator("td").nth(2).click()
                detail = page.get_by_test_id("job-detail")
                expect(detail).to_be_visible()
                expect(detail).to_have_attribute("data-job", job, timeout=10_000)
                assert page.url.endswith("#job/" + job)
                expect(page.get_by_test_id("overview")).to_be_hidden()
                expect(page.get_by_test_id("detail-state")).to_have_text("done")
                spec = page.get_by_test_id("detail-spec")
                expect(spec).to_contain_text("sweep of qaoa")
                expect(spec).to_contain_text("2 per task, quorum 2")
                expect(spec).to_contain_text("random:8,3")
                expect(spec).to_contain_text(ids["A"][:12])  # the submitter: this node
                replicas = page.locator("[data-testid=replica-row]")
                expect(replicas).to_have_count(16)  # 8 tasks, 2 replicas each
                assert set(replicas.evaluate_all("rows => rows.map(r => r.dataset.state)")) == {
                    "done"
                }
                timeline = page.get_by_test_id("timeline")
                expect(timeline.locator("[data-event=submitted]")).to_have_count(1)
                expect(timeline.locator("[data-event=done]")).to_have_count(1)
                moment = timeline.locator("[data-event=done] .at").inner_text()
                assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC([+-]\d\d:\d\d)? ", moment)
                heat = page.get_by_test_id("heatmap")
                expect(heat).to_be_visible(timeout=10_000)
                expect(heat.locator("[data-testid=heat-cell]")).to_have_count(32)  # 8 x 4
                expect(page.get_by_test_id("best-point")).to_contain_text("gammas.0 =")
                for width in reversed(WIDTHS):
                    page.set_viewport_size({"width": width, "height": 1000})
                    assert page.evaluate(OVERFLOWS) == [], width

                # ... and by its route, with a prefix of its id
                page.get_by_test_id("back").click()
                expect(page.get_by_test_id("overview")).to_be_visible()
                page.goto(f"{base}#job/{job[:12]}")
                expect(detail).to_have_attribute("data-job", job, timeout=10_000)

                # a QAOA job's result: its key figures and the node's check of them
                page.goto(f"{base}#job/{others['qaoa']}")
                expect(detail).to_have_attribute("data-job", others["qaoa"], timeout=10_000)
                figures = page.get_by_test_id("detail-result")
                expect(figures.get_by_test_id("figure-approximation-ratio")).to_have_text(
                    re.compile(r"^0\.\d+$|^1$"), timeout=10_000
                )
                expect(figures.get_by_test_id("figure-expected-cut")).to_be_visible()
                expect(figures.get_by_test_id("figure-check")).to_have_text("verified (exact)")

                # a job cancelled long before it could finish: never attested, its spec shown
                page.get_by_test_id("back").click()
                page.get_by_test_id("kind").select_option("json")
                page.get_by_test_id("spec").fill(
                    '{"kind": "vqe", "params": {"hamiltonian": "tfim:16", "ansatz": "hea:8"},'
                    ' "replicas": 2}'
                )
                page.get_by_test_id("submit-job").click()
                expect(result).to_have_attribute("data-job", JOB_ID, timeout=20_000)
                slow = str(result.get_attribute("data-job"))
                ok_json(qiz(work, "--home", "A", "job", "cancel", slow, "--json"))
                page.goto(f"{base}#job/{slow}")
                expect(detail).to_have_attribute("data-job", slow, timeout=10_000)
                expect(page.get_by_test_id("detail-state")).to_contain_text("cancelled")
                expect(spec).to_contain_text("tfim:16")
                expect(spec).to_contain_text("hea:8")
                expect(spec).to_contain_text("(this node)")  # the submitter
                expect(page.get_by_test_id("detail-result")).to_be_hidden()
                page.get_by_test_id("back").click()

                # a peer that stops stays on the page, offline, with when and why
                ok_json(qiz(work, "--home", "B", "node", "stop", "--json"))
                b.wait(30)
                expect(peer).to_have_attribute("data-state", "offline", timeout=20_000)
                expect(peer.get_by_test_id("peer-state")).to_contain_text("offline")
                expect(peer).to_contain_text("left ")
                node_b = page.locator(f"[data-testid=mesh-node][data-id='{ids['B']}']")
                expect(node_b).to_have_attribute("data-state", "offline")
                expect(page.get_by_test_id("mesh-count")).to_have_text("1 node online, 1 left")

                # a favicon, and nothing failed but the two deliberate mistakes
                icon = page.evaluate(
                    """fetch(document.querySelector("link[rel=icon]").href)
                       .then(r => [r.status, r.headers.get("content-type")])"""
                )
                assert icon == [200, "image/svg+xml"]
                assert [(s, m) for s, m, _ in failed] == [(400, "POST")], failed
                assert all(u.endswith("/api/jobs") for _, _, u in failed), failed
                unexpected = [e for e in errors if "status of 400" not in e]
                assert unexpected == [], unexpected
            finally:
                browser.close()
        jobs = ok_json(qiz(work, "--home", "A", "job", "list", "--json"))["jobs"]
        assert job in {j["job_id"] for j in jobs}
