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

pytestmark = pytest.mark.timeout(300)
TAG = "QIZ_TEST_DEMO"  # inherited by every process the demo starts, worker processes too


@contextlib.contextmanager
def demo_process(
    tmp_path: Path, *args: str, ignore_sigint: bool = False
) -> Iterator[tuple[subprocess.Popen, LineReader, str]]:
    """``python ARGS`` in a process group of its own with a tag in its environment, its
    stderr read line by line; on the way out its group is killed, then anything still
    carrying the tag (the demo's nodes run in a group of their own)."""
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=tmp_path,
        env={**CLEAN_ENV, TAG: tag},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        process_group=0,
        preexec_fn=child_setup(ignore_sigint=ignore_sigint),  # noqa: PLW1509 - prctl looked up before
    )
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


def test_demo_keep_serves_the_dashboard_until_stopped(tmp_path: Path) -> None:
    with demo_process(tmp_path, "-m", "qiz", "demo", "--keep") as (proc, stderr, tag):
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
