"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright (no browser
download: ``executable_path`` points at /usr/bin/chromium). Three node processes on loopback;
the page shows the three nodes, a job is submitted from the page and watched until it is done
and its attestation verified. ``make test`` installs chromium; without it this test fails.

Set ``QIZ_SCREENSHOT=path.png`` to keep the screenshot (docs/dashboard.png is made this way).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .helpers import eventually, node_processes, node_status, ok_json, qiz

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


def test_the_dashboard_shows_three_nodes_and_runs_a_job_from_the_page(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert shutil.which(CHROMIUM), "Debian's chromium is missing: 'make test' installs it"
    work = tmp_path
    ids = {name: ok_json(qiz(work, "--home", name, "init", "--json"))["node_id"] for name in "ABC"}
    with node_processes(work) as start:
        a = start("A", args=["--slots", "1", "--api-port", "0"])
        for name in "BC":
            start(name, [a.bootstrap], args=["--slots", "1"])

        def linked() -> bool:
            status = node_status(a)
            return bool(status) and len(status["links"]) >= 2

        eventually(linked, 30, "A linked to B and C")
        url = ok_json(qiz(work, "--home", "A", "dashboard", "--json"))["url"]
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        assert url.startswith(a.api)  # the URL its ready line reported
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url)
                nodes = page.locator("[data-testid=mesh-node]")
                expect(nodes).to_have_count(3, timeout=20_000)
                shown = {nodes.nth(i).get_attribute("data-id") for i in range(3)}
                assert shown == set(ids.values())
                expect(page.get_by_test_id("node-id")).to_have_text(ids["A"])
                assert "token" not in page.url  # the page moved it out of the address bar
                expect(page.locator("[data-testid=peer-row]")).to_have_count(2)

                page.get_by_test_id("kind").select_option("sweep")
                page.get_by_test_id("graph").fill("random:10,3")
                page.get_by_test_id("replicas").fill("2")
                page.get_by_test_id("submit-job").click()
                expect(page.get_by_test_id("submit-result")).to_contain_text(
                    "submitted", timeout=20_000
                )
                job = page.get_by_test_id("submit-result").get_attribute("data-job")
                assert job and len(job) == 64
                row = page.locator(f"[data-testid=job-row][data-job='{job}']")
                expect(row).to_have_attribute("data-state", "done", timeout=120_000)
                result = page.locator(f"[data-testid=result-row][data-job='{job}']")
                expect(result.get_by_test_id("verified")).to_contain_text(
                    "verified (exact)", timeout=20_000
                )
                expect(page.locator("#events li").first).to_be_visible()
                expect(page.locator("#bench tbody tr").first).to_be_visible(timeout=30_000)
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                keep = os.environ.get("QIZ_SCREENSHOT")
                if keep:
                    shutil.copy(shot, keep)
                assert errors == [], errors
            finally:
                browser.close()
        jobs = ok_json(qiz(work, "--home", "A", "job", "list", "--json"))["jobs"]
        assert [j["job"] for j in jobs] == [job] and jobs[0]["state"] == "done"
