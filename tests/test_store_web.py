"""The storage pool's faces on real node processes (issue 16, item 7): a three-node mesh, a put
with k=2 of n=2 from one node and a get from another, bit-identical; get refusing to overwrite;
status, ls and rm; the HTTP routes with the token; the progress events; the metrics.

Every ``--json`` answer is checked against docs/json/store-*.schema.json (``ok_json``)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qiz.control import control_request
from qiz.crypto.ids import ContentId

from .helpers import (
    CLEAN_ENV,
    NodeProcess,
    eventually,
    node_processes,
    node_status,
    ok_json,
    one_line_error,
    qiz,
)

SIZE = 300_000  # three chunks of 128 KiB, the last one short
NAMES = ("a", "b", "c")


class Mesh:
    def __init__(self, work: Path, nodes: list[NodeProcess]) -> None:
        self.work = work
        self.nodes = dict(zip(NAMES, nodes, strict=True))

    def home(self, name: str) -> str:
        return str(self.work / name)

    def cli(self, name: str, *args: str | Path, cwd: Path | None = None) -> Any:
        return qiz(cwd or self.work, "--home", self.home(name), *args, timeout=120)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("store")
    for name in NAMES:
        ok_json(qiz(work, "--home", name, "init", "--json"))
    with node_processes(work) as start:
        first = start("a", args=["--no-worker"])
        rest = [start(n, peers=[first.bootstrap], args=["--no-worker"]) for n in NAMES[1:]]
        # the publisher needs both others as candidates for its two holders
        eventually(lambda: len((node_status(first) or {}).get("links", [])) == 2, 60, "links")
        yield Mesh(work, [first, *rest])


@pytest.fixture(scope="module")
def stored(mesh: Mesh) -> tuple[str, bytes]:
    """A 300,000-byte file put from node a with --k 2 --n 2: (its content id, its bytes)."""
    data = random.Random(16).randbytes(SIZE)
    source = mesh.work / "in" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(data)
    answer = ok_json(mesh.cli("a", "store", "put", "in/blob.bin", "--k", "2", "--n", "2", "--json"))
    nodes = mesh.nodes
    assert (answer["k"], answer["n"], answer["size"], answer["kind"]) == (2, 2, SIZE, "file")
    assert answer["chunks"] == 3 and answer["sealed_to"] == []
    assert sorted(answer["holders"]) == sorted([nodes["b"].node_id, nodes["c"].node_id])
    ContentId.parse(answer["cid"])
    return answer["cid"], data


def test_put_on_one_node_get_on_another_bit_identical(
    mesh: Mesh, stored: tuple[str, bytes]
) -> None:
    cid, data = stored
    target = mesh.work / "out" / "b.bin"
    target.parent.mkdir()
    answer = ok_json(mesh.cli("b", "store", "get", cid, "-o", "out/b.bin", "--json"))
    assert answer["path"] == str(target) and answer["size"] == SIZE
    assert answer["bad_shares"] == 0 and answer["holders_asked"] >= 1
    assert target.read_bytes() == data
    # no -o: the content's own name, in the command's working directory
    here = mesh.work / "dl"
    here.mkdir()
    result = mesh.cli("c", "store", "get", cid, cwd=here)
    assert result.returncode == 0, result.stderr
    assert (here / "blob.bin").read_bytes() == data
    assert "wrote" in result.stdout and "blob.bin" in result.stdout


def test_get_refuses_to_overwrite_without_force(mesh: Mesh, stored: tuple[str, bytes]) -> None:
    cid, data = stored
    kept = mesh.work / "kept.bin"
    kept.write_bytes(b"mine")
    line = one_line_error(mesh.cli("b", "store", "get", cid, "-o", kept, "--json"))
    assert "kept.bin exists" in line and "--force" in line
    assert kept.read_bytes() == b"mine"
    # the node refuses too, where the command could not know the name: nothing replaced
    here = mesh.work / "again"
    here.mkdir()
    (here / "blob.bin").write_bytes(b"mine too")
    line = one_line_error(mesh.cli("b", "store", "get", cid, cwd=here))
    assert "blob.bin" in line
    assert (here / "blob.bin").read_bytes() == b"mine too"
    assert sorted(p.name for p in here.iterdir()) == ["blob.bin"]  # no temporary left behind
    ok_json(mesh.cli("b", "store", "get", cid, "-o", kept, "--force", "--json"))
    assert kept.read_bytes() == data


def test_status_ls_and_rm(mesh: Mesh, stored: tuple[str, bytes]) -> None:
    cid, _ = stored
    nodes = mesh.nodes
    status = ok_json(mesh.cli("a", "store", "status", cid, "--json"))
    assert (status["cid"], status["k"], status["n"], status["chunks"]) == (cid, 2, 2, 3)
    assert sorted(s["index"] for s in status["shares"]) == [0, 1]
    assert {s["holder"] for s in status["shares"]} == {nodes["b"].node_id, nodes["c"].node_id}
    assert all(s["state"] == "ok" for s in status["shares"])
    assert (status["live"], status["health"]) == (2, "ok")
    human = mesh.cli("a", "store", "status", cid)
    assert human.returncode == 0, human.stderr
    assert (
        nodes["b"].node_id[:16] in human.stdout and "health: ok, 2 of 2 shares live" in human.stdout
    )
    listing = ok_json(mesh.cli("a", "store", "ls", "--json"))["content"]
    row = next(r for r in listing if r["cid"] == cid)
    assert (row["name"], row["published"], row["size"], row["sealed"]) == (
        "blob.bin",
        True,
        SIZE,
        False,
    )
    # a second content, removed again: gone from the listing, the first one kept
    extra = mesh.work / "in" / "extra.txt"
    extra.write_text("to be removed\n")
    other = ok_json(mesh.cli("a", "store", "put", extra, "--k", "1", "--n", "2", "--json"))["cid"]
    removed = ok_json(mesh.cli("a", "store", "rm", other, "--json"))
    assert removed["cid"] == other
    left = [r["cid"] for r in ok_json(mesh.cli("a", "store", "ls", "--json"))["content"]]
    assert other not in left and cid in left


def test_pin_and_unpin_on_another_node(mesh: Mesh, stored: tuple[str, bytes]) -> None:
    cid, _ = stored
    pinned = ok_json(mesh.cli("c", "store", "pin", cid, "--json"))
    assert (pinned["cid"], pinned["pinned"], pinned["live"]) == (cid, True, 2)
    listing = ok_json(mesh.cli("c", "store", "ls", "--json"))["content"]
    row = next(r for r in listing if r["cid"] == cid)
    assert (row["pinned"], row["published"], row["name"]) == (True, False, "blob.bin")
    unpinned = ok_json(mesh.cli("c", "store", "unpin", cid, "--json"))
    assert (unpinned["cid"], unpinned["pinned"]) == (cid, False)
    listed = mesh.cli("c", "store", "ls")
    assert listed.returncode == 0 and "unpinned" in listed.stdout, listed.stderr


def test_an_unknown_id_is_not_found(mesh: Mesh) -> None:
    unknown = str(ContentId.of(b"nobody stored this"))
    line = one_line_error(mesh.cli("b", "store", "get", unknown, "-o", "nothing.bin", "--json"))
    assert re.search(r"not found after \d+ holders? asked", line), line
    assert not (mesh.work / "nothing.bin").exists()


def test_progress_events_name_the_transfer(mesh: Mesh) -> None:
    a = mesh.nodes["a"]
    home = a.cwd / a.home

    def events(after: int) -> dict[str, Any]:
        # the long poll waits 0 s: what happened so far, at once
        return asyncio.run(control_request(home, "events", 30, after=after, wait=0))["result"]

    start = events(0)["last"]
    source = mesh.work / "in" / "progress.bin"
    source.write_bytes(random.Random(7).randbytes(200_000))
    put = a.request("store_put", 60, path=str(source), k=1, n=2, transfer="t-progress")
    assert put["ok"], put
    moves = [
        e
        for e in events(start)["events"]
        if e["kind"] == "store.progress" and e["transfer"] == "t-progress"
    ]
    assert moves and moves[-1]["op"] == "put"
    assert moves[-1]["done"] == moves[-1]["total"]
    assert all(e["total"] >= e["done"] >= 0 for e in moves)


# ---------------------------------------------------------------- HTTP and metrics


def http(node: NodeProcess, method: str, path: str, *, token: bool = True) -> tuple[int, Any]:
    assert node.api is not None
    headers = {"Content-Type": "application/json"}
    if token:
        secret = (node.cwd / node.home / "api.token").read_text().strip()
        headers["Authorization"] = f"Bearer {secret}"
    request = urllib.request.Request(
        node.api.rstrip("/") + path,
        method=method,
        data=b"{}" if method == "POST" else None,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    if body.startswith((b"{", b"[")):
        return status, json.loads(body)
    return status, body.decode() if path == "/metrics" else body


def test_http_routes_with_the_token(mesh: Mesh, stored: tuple[str, bytes]) -> None:
    cid, data = stored
    a = mesh.nodes["a"]
    status, listing = http(a, "GET", "/api/store")
    assert status == 200 and cid in [r["cid"] for r in listing["content"]]
    status, one = http(a, "GET", f"/api/store/{cid}")
    assert status == 200 and one["cid"] == cid and one["health"] == "ok"
    assert http(a, "GET", "/api/store", token=False)[0] == 401
    status, error = http(a, "GET", "/api/store/" + cid[:-1] + ("a" if cid[-1] != "a" else "b"))
    assert status == 400 and "checksum" in error["error"]
    status, collected = http(mesh.nodes["b"], "POST", "/api/store/gc")
    assert status == 200 and collected["freed_bytes"] >= 0 and collected["columns"] >= 0
    # what was collected is gone: a second pass finds nothing more to free
    status, again = http(mesh.nodes["b"], "POST", "/api/store/gc")
    assert status == 200 and (again["freed_bytes"], again["columns"]) == (0, 0)
    # a file's bytes, checked, as an attachment: nothing is written on the node's disk
    assert http(mesh.nodes["c"], "GET", f"/api/store/{cid}/content") == (200, data)
    # put and get write files where they are told: never over HTTP
    assert http(a, "POST", "/api/store/put")[0] in (404, 405)
    status, node = http(a, "GET", "/api/node")
    assert status == 200 and node["store"]["bytes_stored"] >= 0


def test_metrics_show_what_a_holder_holds(mesh: Mesh, stored: tuple[str, bytes]) -> None:
    status, text = http(mesh.nodes["b"], "GET", "/metrics")
    assert status == 200
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("qiz_store_")
    }
    assert values["qiz_store_columns_held"] >= 1  # b holds a column of the stored content
    assert values["qiz_store_bytes_stored"] >= SIZE / 2
    assert values["qiz_store_quota_bytes"] > 0
    assert "qiz_store_repairs_total" in values and "qiz_store_bad_shares_total" in values


# ---------------------------------------------------------------- the progress bar, the dashboard

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(mesh: Mesh, *args: str) -> tuple[int, str]:
    """A ``qiz`` command run on a pseudo-terminal (util-linux ``script``): its exit code and
    what the terminal showed, escape sequences removed."""
    command = shlex.join([sys.executable, "-m", "qiz", *map(str, args)])
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=mesh.work,
        env=CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, ESCAPES.sub("", result.stdout.replace("\r", "\n"))


def test_a_terminal_shows_a_bar_fed_by_the_nodes_progress(
    mesh: Mesh, stored: tuple[str, bytes]
) -> None:
    cid, data = stored
    code, shown = on_a_terminal(
        mesh, "--home", mesh.home("c"), "store", "get", cid, "-o", "tty.bin"
    )
    assert code == 0, shown
    # the total comes only from the node's store.progress events; the last one is drawn
    assert re.search(r"^get .* 293\.0/293\.0 KiB", shown, re.MULTILINE), shown
    assert (mesh.work / "tty.bin").read_bytes() == data
    # --json on a terminal: the one JSON object and nothing else
    code, shown = on_a_terminal(
        mesh, "--home", mesh.home("c"), "store", "get", cid, "-o", "tty.bin", "--force", "--json"
    )
    assert code == 0, shown
    lines = [line for line in shown.splitlines() if line.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["cid"] == cid, shown


def test_the_dashboard_shows_the_stored_content(mesh: Mesh, stored: tuple[str, bytes]) -> None:
    from playwright.sync_api import sync_playwright

    cid, data = stored
    url = ok_json(mesh.cli("a", "dashboard", "--json"))["url"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless=new", "--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on(
                "response",
                lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            page.goto(url)
            row = page.locator(f"[data-testid=storage-row][data-cid='{cid}']")
            row.wait_for(timeout=20_000)
            assert row.get_attribute("data-health") == "ok"
            assert row.locator("[data-testid=storage-live]").inner_text().startswith("2/2")
            assert "blob.bin" in row.inner_text() and "293.0 KiB" in row.inner_text()
            held = page.locator("[data-testid=storage-held]").inner_text()
            assert re.fullmatch(r"\(holding .+ of .+ in \d+ share columns? for the mesh\)", held), (
                held
            )
            # its download link hands over the checked bytes, named after the content
            with page.expect_download() as caught:
                row.locator("[data-testid=storage-download]").click()
            assert caught.value.suggested_filename == "blob.bin"
            assert Path(caught.value.path()).read_bytes() == data
            assert not problems, problems
        finally:
            browser.close()
