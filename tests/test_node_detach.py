"""``qiz node start --detach``: back once the node is ready, the node keeps running on its own,
a second start is refused without touching the first node's log, a node that cannot start says
why in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import eventually, ok_json, one_line_error


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qiz", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_detached_node_runs_until_stopped(tmp_path: Path, tagged_env: dict[str, str]) -> None:
    ok_json(cli(tmp_path, tagged_env, "--home", "a", "init", "--json"))
    ready = ok_json(
        cli(
            tmp_path, tagged_env,
            "--home", "a", "node", "start", "--listen", "127.0.0.1:0", "--no-worker",
            "--detach", "--json",
        )
    )  # fmt: skip
    assert ready["node_id"].startswith("qizn1") and ready["pid"] > 0
    # the command has returned; the node answers on its own
    status = ok_json(cli(tmp_path, tagged_env, "--home", "a", "node", "status", "--json"))
    assert status["node_id"] == ready["node_id"]
    log = Path(tmp_path / "a" / "node.log")
    before = log.read_bytes()
    assert b'"event": "ready"' in before

    again = cli(tmp_path, tagged_env, "--home", "a", "node", "start", "--detach")
    line = one_line_error(again, 2)
    assert "already running" in line and "node stop" in line
    assert log.read_bytes().startswith(before)  # the running node's log was left alone

    ok_json(cli(tmp_path, tagged_env, "--home", "a", "node", "stop", "--json"))
    eventually(lambda: not _alive(ready["pid"]), timeout=30, what="the node to exit")


def test_a_node_that_cannot_start_says_why(tmp_path: Path, tagged_env: dict[str, str]) -> None:
    locked = {**tagged_env, "QIZ_PASSPHRASE": "right one"}
    ok_json(cli(tmp_path, locked, "--home", "b", "init", "--json"))
    wrong = {**tagged_env, "QIZ_PASSPHRASE": "wrong one"}
    line = one_line_error(cli(tmp_path, wrong, "--home", "b", "node", "start", "--detach"), 2)
    assert "passphrase" in line
    busy = cli(tmp_path, locked, "--home", "b", "node", "start", "--listen", "256.0.0.1:1",
               "--detach")  # fmt: skip
    assert "--listen" in one_line_error(busy, 2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
