"""``qiz demo --keep``: the five nodes stay up after the report, the printed dashboard URL
answers, and Ctrl-C stops everything (the demo itself checks that nothing is left running)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .test_node_cli import _CLEAN_ENV

pytestmark = pytest.mark.timeout(240)


def test_demo_keep_serves_the_dashboard_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiz", "demo", "--keep"],
        cwd=tmp_path,
        env=_CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 180
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if "keeps running (--keep):" in line:
                url = line.split("(--keep):", 1)[1].strip()
                break
        assert url and "?token=" in url, "no dashboard URL was printed"
        base, token = url.split("?token=")
        with urllib.request.urlopen(f"{base}api/jobs?token={token}", timeout=10) as response:
            jobs = json.load(response)["jobs"]
        assert {j["state"] for j in jobs} == {"done"} and len(jobs) == 2
        with urllib.request.urlopen(base, timeout=10) as response:
            assert b"QIZ" in response.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    with pytest.raises(OSError):
        urllib.request.urlopen(base, timeout=3)
