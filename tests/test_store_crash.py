"""kill -9 during a put, during a share receipt and during a get (issue 16, item 8): no partial
file is ever served or left as if complete, every index passes ``PRAGMA integrity_check``, and
the next run completes the work. Real ``qiz node start`` processes on 127.0.0.1; the kills land
while bytes are moving (the test waits until a holder's ``.part`` file or a get's temporary has
grown), never at a fixed time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import NodeProcess, eventually, node_processes, ok_json, qiz, qiz_popen

HOLDERS = 4
SIZE = 24 << 20  # big enough that a kill lands while the bytes move


def parts(node: NodeProcess) -> list[Path]:
    root = node.cwd / node.home / "store" / "parts"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def part_bytes(node: NodeProcess) -> int:
    total = 0
    for path in parts(node):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def temp_bytes(work: Path) -> int:
    """Bytes in the get temporaries beside the targets in ``work``."""
    total = 0
    for path in work.glob(".qiz-get-*"):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` every millisecond (a get can end between two slower polls); False
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.001)
    return False


def integrity(node: NodeProcess) -> None:
    for name in ("store.sqlite", "owner.sqlite"):
        path = node.cwd / node.home / "store" / name
        if path.exists():
            with sqlite3.connect(path) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Path, list[NodeProcess], object]]:
    with node_processes(tmp_path) as start:
        for name in ["own", "get", *(f"h{i}" for i in range(HOLDERS))]:
            qiz(tmp_path, "--home", name, "init")
        first = start("h0", args=["--no-worker"])
        nodes = [first] + [
            start(name, peers=[first.address], args=["--no-worker"])
            for name in ["own", "get", *(f"h{i}" for i in range(1, HOLDERS))]
        ]
        yield tmp_path, nodes, start


def test_kill_a_holder_mid_receipt_then_the_owner_mid_put_then_a_getter_mid_get(
    mesh: tuple[Path, list[NodeProcess], object],
) -> None:
    work, nodes, start = mesh
    h0, own, get, *others = nodes
    holders = [h0, *others]
    source = work / "data.bin"
    source.write_bytes(os.urandom(SIZE))
    digest = sha256_of(source)

    # 1. a holder is killed while it receives its share: the put goes on with the others and
    #    the owner rebuilds that column elsewhere; the holder restarts with nothing half-held
    put = qiz_popen(
        work, "--home", "own", "store", "put", str(source), "--k", "2", "--n", "3", "--json"
    )
    victim = eventually(
        lambda: next((h for h in holders if part_bytes(h) > 1 << 20), None),
        timeout=60,
        what="a holder receiving bytes",
    )
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    out, err = put.communicate(timeout=120)
    assert put.returncode == 0, err
    cid = ok_json(subprocess.CompletedProcess(put.args, 0, out, err))["cid"]
    restarted = start(victim.name, peers=[own.address], args=["--no-worker"])
    holders = [restarted if h is victim else h for h in holders]
    assert parts(restarted) == []  # the half-received share is gone, never served
    integrity(restarted)
    status = ok_json(qiz(work, "--home", "own", "store", "status", cid, "--json"))
    assert status["live"] == 3, status
    assert str(restarted.node_id) not in {
        s["holder"] for s in status["shares"] if s["state"] == "ok"
    }

    # 2. the owner is killed mid-put: nothing is recorded as stored; the next put completes
    second = work / "second.bin"
    second.write_bytes(os.urandom(SIZE))
    put = qiz_popen(work, "--home", "own", "store", "put", str(second), "--k", "2", "--n", "3")
    eventually(
        lambda: any(part_bytes(h) > 1 << 20 for h in holders if h.alive()),
        timeout=60,
        what="holders receiving bytes",
    )
    os.killpg(own.proc.pid, signal.SIGKILL)
    own.proc.wait(10)
    put.communicate(timeout=30)
    assert put.returncode != 0
    own = start("own", peers=[holders[-1].address], args=["--no-worker"])
    integrity(own)
    listed = ok_json(qiz(work, "--home", "own", "store", "ls", "--json"))
    assert [row["cid"] for row in listed["content"]] == [cid]  # only the first, whole put
    status = qiz(work, "--home", "own", "node", "status")
    assert status.returncode == 0, status.stderr
    assert "store    1 content of its own; holds 0 columns" in status.stdout, status.stdout
    again = ok_json(
        qiz(work, "--home", "own", "store", "put", str(second), "--k", "2", "--n", "3", "--json")
    )

    # 3. a getter is killed mid-get: no target appears; the next get completes it. A get of
    #    24 MiB takes a tenth of a second here, so the getter is frozen the moment its
    #    temporary grows, and the get is started again if it had finished by then.
    target = work / "out.bin"
    for _attempt in range(5):
        target.unlink(missing_ok=True)
        fetch = qiz_popen(work, "--home", "get", "store", "get", again["cid"], "-o", str(target))
        wait_for(lambda f=fetch: temp_bytes(work) > 1 << 20 or f.poll() is not None, 60)
        os.killpg(get.proc.pid, signal.SIGSTOP)
        if temp_bytes(work) > 1 << 20 and not target.exists():
            break
        os.killpg(get.proc.pid, signal.SIGCONT)  # too late: the get ended; try again
        fetch.communicate(timeout=30)
    else:
        raise AssertionError("every get ended before the test could kill it")
    os.killpg(get.proc.pid, signal.SIGKILL)
    get.proc.wait(10)
    fetch.communicate(timeout=30)
    assert not target.exists()
    start("get", peers=[own.address], args=["--no-worker"])
    ok_json(qiz(work, "--home", "get", "store", "get", again["cid"], "-o", str(target), "--json"))
    assert sha256_of(target) == sha256_of(second)
    assert not list(work.glob(".qiz-get-*"))  # the killed get's temporary was cleaned
    for node in nodes:
        if node.alive():
            integrity(node)
    assert digest == sha256_of(source)
