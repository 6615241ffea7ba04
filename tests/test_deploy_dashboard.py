"""The dashboard's Deploy card in a real browser (issue 17, item 6): Debian's chromium, headless,
as tests/test_dashboard_browser.py drives it, over three ``qiz node start`` processes.

Node a publishes a channel (versions 1 and 2) and follows it itself: its card shows the bundle
(version, previous, state, pid, restarts, following, last refresh) and the channel with both
versions; after a rollback, the current version 1 and version 2 marked bad. Node b, which has
done nothing with the engine, says what to run. The card fits at 1280 and 1920 px.

What reaches the card from bundles and peers: names and versions (the manifest parser refuses
anything but ``[a-z0-9._-]`` and ``[A-Za-z0-9._+-]``, so no markup), and free text: the
supervisor's reason, a failed refresh's error and a channel's error, which may quote what a
peer sent. The page writes all of it as text; rendering hostile values into every field in the
browser shows it (no element made, no script run, the text shown as it came)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qiz.deploy.bundle import check_name, check_version
from qiz.deploy.errors import BundleError

from . import test_dashboard_browser as dashboard
from .helpers import NodeProcess, deploy_mesh, eventually, ok_json, qiz

pytestmark = pytest.mark.timeout(120)
NAMES = ("a", "b", "c")
APP = """\
import time
print("up", flush=True)
while True:
    time.sleep(1)
"""
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>&amp;'


def bundle(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "app.py").write_text(APP)
    (directory / "qiz-bundle.toml").write_text(
        f'name = "hello"\nversion = "{version}"\ncommand = ["{sys.executable}", "app.py"]\n'
    )
    return directory


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, NodeProcess]]]:
    work = tmp_path_factory.mktemp("deploy-dash")
    with deploy_mesh(work, NAMES) as nodes:
        yield work, nodes


def done(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer.get("ok"), answer
    return answer.get("result", answer)


def test_names_and_versions_cannot_hold_markup() -> None:
    for check in (check_name, check_version):
        with pytest.raises(BundleError):
            check(HOSTILE)
        with pytest.raises(BundleError):
            check("a<b")


def test_the_deploy_card_shows_bundles_and_channels(
    mesh: tuple[Path, dict[str, NodeProcess]],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    work, nodes = mesh
    a = nodes["a"]
    channel = f"{a.node_id}/deploy/hello"
    done(a.request("deploy_publish", 120, path=str(bundle(work / "v1", "1"))))
    done(a.request("deploy_follow", 120, channel=channel))
    done(a.request("deploy_publish", 120, path=str(bundle(work / "v2", "2"))))

    def status() -> dict[str, Any]:
        return done(a.request("deploy_status", 30, name="hello"))

    eventually(
        lambda: status()["current"] == "2" and status()["state"] == "running", 60, "v2 running"
    )
    pid = status()["pid"]
    urls = {n: ok_json(qiz(work, "--home", n, "dashboard", "--json"))["url"] for n in ("a", "b")}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=dashboard.CHROMIUM, args=dashboard.CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": dashboard.WIDTHS[0], "height": 1000})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on(
                "response",
                lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )

            # a node that has done nothing with the engine says what to run
            page.goto(urls["b"])
            bundles, channels = (
                page.get_by_test_id("deploy-bundles"),
                page.get_by_test_id("deploy-channels"),
            )
            expect(bundles).to_contain_text("qiz deploy follow OWNER/deploy/NAME", timeout=20_000)
            expect(channels).to_contain_text("qiz deploy publish DIR")
            expect(page.get_by_test_id("deploy-count")).to_have_text(
                "(0 bundles installed, 0 running; 0 channels published)"
            )

            # the publisher, which follows its own channel: the bundle and the channel
            page.goto(urls["a"])
            row = page.locator("[data-testid=deploy-row][data-name=hello]")
            expect(row).to_have_attribute("data-state", "running", timeout=20_000)
            expect(row.get_by_test_id("deploy-version")).to_have_text("2 (previous 1)")
            expect(row.get_by_test_id("deploy-version")).to_have_attribute(
                "title", "installed: 1, 2"
            )
            expect(row.get_by_test_id("deploy-state-name")).to_have_text("running")
            expect(row.get_by_test_id("deploy-pid")).to_have_text(str(pid))
            expect(row.get_by_test_id("deploy-restarts")).to_have_text("0")
            expect(row.get_by_test_id("deploy-bad")).to_have_text("none")
            expect(row.get_by_test_id("deploy-following")).to_have_text("following")
            expect(row.get_by_test_id("deploy-refresh")).to_contain_text(" UTC")
            assert row.get_by_test_id("deploy-channel").get_attribute("title") == channel
            published = page.locator("[data-testid=channel-row][data-name=hello]")
            expect(published.get_by_test_id("channel-versions")).to_have_text("1, 2")
            assert published.get_by_test_id("channel-id").inner_text() == channel
            expect(page.get_by_test_id("deploy-count")).to_have_text(
                "(1 bundle installed, 1 running; 1 channel published)"
            )
            for width in dashboard.WIDTHS:
                page.set_viewport_size({"width": width, "height": 1000})
                assert page.evaluate(dashboard.OVERFLOWS) == [], width

            # a rollback: back on 1, 2 marked bad (and following does not take it again)
            # (the command line: playwright's loop runs here, the control request's cannot)
            ok_json(qiz(work, "--home", "a", "deploy", "rollback", "hello", "--json"))
            expect(row.get_by_test_id("deploy-version")).to_have_text(
                re.compile(r"^1( |$)"), timeout=20_000
            )
            expect(row.get_by_test_id("deploy-bad")).to_have_text("2")
            expect(row).to_have_attribute("data-state", "running", timeout=20_000)

            # hostile text in every field the card shows: written as text, nothing run
            shown = page.evaluate(
                """bad => import("/static/deploy.js").then((m) => {
                  m.renderDeploy({
                    bundles: [{name: bad, channel: bad, current: bad, previous: bad,
                               installed: [bad], bad: [bad], state: bad, pid: null,
                               restarts: 0, reason: bad, rolled_back: [bad], following: true,
                               keep_running: true, job: null,
                               last_refresh: {at: 0, ok: false, error: bad}}],
                    channels: [{name: bad, channel: bad, versions: [bad, bad], tree: null,
                                error: bad}]});
                  const card = document.querySelector("#deploy-card");
                  return {made: card.querySelectorAll("img, script").length,
                          pwned: window.pwned ?? null,
                          text: card.textContent.split(bad).length - 1};
                })""",
                HOSTILE,
            )
            # name, channel, current, previous, state, reason, bad, refresh error; the
            # channel's name, id, two versions and error
            assert shown["made"] == 0 and shown["pwned"] is None, shown
            assert shown["text"] >= 12, shown
            # the next refresh puts the node's answer back
            expect(row.get_by_test_id("deploy-bad")).to_have_text("2", timeout=10_000)
            assert page.evaluate("window.pwned ?? null") is None
            assert not problems, problems
        finally:
            browser.close()
