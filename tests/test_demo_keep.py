"""``qiz demo --keep``: the five nodes stay up after the report, the printed dashboard URL
answers, and Ctrl-C or SIGTERM stops everything, also when SIGINT was inherited ignored (the
demo itself checks that nothing is left running; so does the test). And a demo killed with
SIGKILL leaves none of its node processes behind: they die with it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qiz.procs import LineReader, child_setup, kill_group, processes_with_env

from .helpers import CLEAN_ENV, eventually
from .json_shapes import check_answer

pytestmark = pytest.mark.timeout(300)
TAG = "QIZ_TEST_DEMO"  # inherited by every process the demo starts, worker processes too


@contextlib.contextmanager
def demo_process(
    cwd: Path, *args: str, ignore_sigint: bool = False, stdout: Path | None = None
) -> Iterator[tuple[subprocess.Popen, LineReader, str]]:
    """``python ARGS`` in a process group of its own with a tag in its environment, its
    stderr read line by line (its stdout into ``stdout``, if given); on the way out its group
    is killed, then anything still carrying the tag (the demo's nodes run in a group of their
    own)."""
    tag = uuid.uuid4().hex
    out = stdout.open("wb") if stdout is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env={**CLEAN_ENV, TAG: tag},
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.PIPE,
        process_group=0,
        preexec_fn=child_setup(ignore_sigint=ignore_sigint),  # noqa: PLW1509 - prctl looked up before
    )
    if stdout is not None:
        out.close()  # the child has its own copy
    assert proc.stderr is not None
    try:
        yield proc, LineReader(proc.stderr), tag
    finally:
        kill_group(proc.pid)
        proc.wait(10)
        for pid in processes_with_env(TAG, tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def after(marker: str) -> Callable[[str], str | None]:
    """A line matcher: the text after ``marker``, on a line that has it."""
    return lambda line: line.split(marker, 1)[1].strip() if marker in line else None


def test_demo_reports_then_keeps_serving_the_dashboard_until_stopped(tmp_path: Path) -> None:
    """One full demo (the slowest thing the suite runs), ``--keep --json``: the mesh stays up
    after its work, its dashboard answers, Ctrl-C stops every node, and then the JSON report
    is printed and checked against its schema and the demo's claims."""
    cwd, report = tmp_path / "cwd", tmp_path / "report.json"
    cwd.mkdir()
    command = ("-m", "qiz", "demo", "--keep", "--json")
    with demo_process(cwd, *command, stdout=report) as (proc, stderr, tag):
        url = stderr.wait_for(after("keeps running (--keep):"), 240)
        assert url and "?token=" in url, "no dashboard URL:\n" + "\n".join(stderr.lines)
        base, token = url.split("?token=")
        with urllib.request.urlopen(f"{base}api/jobs?token={token}", timeout=10) as response:
            jobs = json.load(response)["jobs"]
        # the sweep, the VQE and the kernel job (and the pair again if the demo's freeze came
        # after they were done: qiz/demo_mesh.py), all done
        kinds = sorted(j["kind"] for j in jobs)
        assert {j["state"] for j in jobs} == {"done"} and len(jobs) in (3, 5, 7), kinds
        assert kinds.count("kernel") == 1 and kinds.count("vqe") == kinds.count("sweep")
        with urllib.request.urlopen(base, timeout=10) as response:
            assert b"QIZ" in response.read()
        assert len(processes_with_env(TAG, tag)) >= 5  # the demo and its surviving nodes
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0, "\n".join(stderr.lines)
        assert "stopping the mesh" in stderr.lines
        assert processes_with_env(TAG, tag) == []  # the demo waited for every one
    with pytest.raises(OSError):
        urllib.request.urlopen(base, timeout=3)
    data = json.loads(report.read_text())
    check_answer(["demo", "--json"], json.dumps(data))
    assert data.pop("ok") is True
    check_demo_report(data, cwd)


def check_demo_report(data: dict, cwd: Path) -> None:
    """What `qiz demo --json` reports: the local part, the five-process mesh's jobs, the
    deployment, the relayed node, and nothing left running or behind in its folder."""
    assert data["alice"].startswith("qizn1")
    assert data["bob"].startswith("qizn1")
    assert data["alice"] != data["bob"]
    assert len(data["refused"]) == 3
    quantum = data["quantum"]
    assert set(quantum["ghz_counts"]) == {"000", "111"}
    teleport = quantum["teleport"]  # two mid-circuit measurements: at most 4 histories
    assert teleport["states"] <= 4 and teleport["method"] == "dynamic"
    assert abs(teleport["p_one"] - 0.75) < 0.05
    assert quantum["qaoa"]["best_cut_sampled"] <= quantum["qaoa"]["optimum"]
    assert quantum["vqe"]["h2_error_mHa"] < 1.6
    grover = quantum["grover"]
    assert grover["success_probability"] == pytest.approx(grover["analytic_probability"])
    values = {a["value"] for a in quantum["placement"].values()}
    assert all(a["feasible"] for a in quantum["placement"].values())
    assert min(values) == quantum["placement"]["exact"]["value"]
    mesh = data["mesh"]  # the main job: five node processes
    assert len(mesh["nodes"]) == 5 and len(mesh["resolved"]) == 4
    assert mesh["name"]["value"].startswith("qaoa sweeps at 127.0.0.1:")
    sweep, vqe = mesh["jobs"]["qaoa-sweep"], mesh["jobs"]["vqe"]
    killed = mesh["killed"]["name"]
    assert killed != "node0"
    assert killed in sweep["replicas_lost"] or killed in vqe["replicas_lost"]
    # a worker killed mid-sweep may have finished some tasks first: only those carry its claims
    signed = killed in sweep["signed_by_workers"]
    assert signed == (sweep["replicas_done"].get(killed, 0) > 0), sweep
    assert sweep["verified"] and vqe["verified"] and sweep["points"] == 64
    assert sweep["best_expected_cut"] <= sweep["exact_max_cut"]
    assert vqe["energy_error"] < 1e-5
    kernel = mesh["jobs"]["quantum-kernel"]  # row blocks across the workers, as computed here
    assert kernel["verified"] and kernel["tasks"] == 3 and kernel["max_deviation"] <= 1e-10
    assert len(kernel["signed_by_workers"]) >= 2
    # a bundle published by node0, verified, installed and run by two other live nodes
    deployed = mesh["deployed"]
    assert deployed["channel"] == f"{mesh['nodes'][0]['node_id']}/deploy/hello-mesh"
    assert [r["said"] for r in deployed["running"]] == ["hello from hello-mesh 1.0.0"] * 2
    assert all(r["version"] == "1.0.0" and r["pid"] for r in deployed["running"])
    assert killed not in {r["node"] for r in deployed["running"]}
    # a node nobody may dial: reached by id through one of its relays, then directly
    relayed = mesh["relayed"]
    assert relayed["relays"] and relayed["reached_at"].startswith("relay:")
    assert relayed["reached_at"].removeprefix("relay:") in " ".join(relayed["relays"])
    assert relayed["link_ms"] is not None  # a new link, not one it already had
    assert mesh["left_running"] == 0
    assert list(cwd.iterdir()) == []


def test_sigterm_stops_a_demo_started_with_sigint_ignored_mid_run(tmp_path: Path) -> None:
    """A shell's background job inherits SIGINT ignored: SIGTERM must still end the demo, here
    while its jobs run (the same handler serves the --keep wait, tested above with Ctrl-C),
    through its cleanup: every node stopped, the command saying it was interrupted."""
    with demo_process(tmp_path, "-m", "qiz", "demo", "--keep", ignore_sigint=True) as (
        proc,
        stderr,
        tag,
    ):
        url = stderr.wait_for(after("dashboard of node0 (open it to watch):"), 240)
        assert url, "the mesh did not come up:\n" + "\n".join(stderr.lines)
        assert len(processes_with_env(TAG, tag)) >= 5  # the demo and its nodes
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 130, "\n".join(stderr.lines)
        assert any("interrupted" in line for line in stderr.lines), stderr.lines
        assert processes_with_env(TAG, tag) == []  # the demo stopped every node first
    with pytest.raises(OSError):
        urllib.request.urlopen(url.split("?")[0], timeout=3)


def test_the_nodes_die_with_a_demo_killed_by_sigkill(tmp_path: Path) -> None:
    """No cleanup code runs in a SIGKILLed demo: its nodes go because the kernel tells them
    (PR_SET_PDEATHSIG), and their worker processes go with them."""
    code = "from qiz.demo_mesh import run_mesh_demo; run_mesh_demo(keep=True)"
    with demo_process(tmp_path, "-c", code) as (proc, stderr, tag):
        url = stderr.wait_for(after("dashboard of node0 (open it to watch):"), 120)
        assert url, "the mesh did not come up:\n" + "\n".join(stderr.lines)
        nodes = [pid for pid in processes_with_env(TAG, tag) if pid != proc.pid]
        assert len(nodes) >= 5, nodes  # five nodes (and maybe their worker processes)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        eventually(lambda: processes_with_env(TAG, tag) == [], 30, "the nodes to die")
        with pytest.raises(OSError):
            urllib.request.urlopen(url.split("?")[0], timeout=3)
