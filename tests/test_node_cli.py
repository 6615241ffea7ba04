"""Real node processes driven by the CLI: ``node start|status|stop`` and ``ping`` on loopback.

Every node runs as its own ``python -m qiz`` process on 127.0.0.1; each test kills whatever it
started, however it ends.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.timeout(120)

_RUNS = itertools.count()
_CLEAN_ENV = {
    k: v for k, v in os.environ.items() if k not in ("QIZ_HOME", "QIZ_PASSPHRASE", "QIZ_DEBUG")
}


def qiz(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qiz", *args],
        cwd=cwd,
        env=_CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line and "\n" not in line, result.stderr
    assert line.startswith("qiz: ") and "internal error" not in line, line
    return line


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class NodeProcess:
    """One ``qiz node start`` process, its output in files (a pipe could fill and block it)."""

    def __init__(self, cwd: Path, home: str, listen: str, peers: list[str], *extra: str) -> None:
        self.cwd, self.home, self.listen = cwd, home, listen
        self.log = cwd / f"{home}-{next(_RUNS)}"
        self._out: IO[bytes] = self.log.with_suffix(".out").open("wb")
        self._err: IO[bytes] = self.log.with_suffix(".err").open("wb")
        args = ["--home", home, "node", "start", "--listen", listen, *extra]
        for peer in peers:
            args += ["--peer", peer]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qiz", *args],
            cwd=cwd,
            env=_CLEAN_ENV,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
        )

    def status(self) -> dict | None:
        """``node status --json``, or None while the node does not answer yet."""
        if self.proc.poll() is not None:
            raise AssertionError(f"node {self.home} exited early: {self.output()}")
        result = qiz(self.cwd, "--home", self.home, "node", "status", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    def output(self) -> tuple[str, str]:
        self._out.flush()
        self._err.flush()
        return (
            self.log.with_suffix(".out").read_text(errors="replace"),
            self.log.with_suffix(".err").read_text(errors="replace"),
        )

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()
        self._err.close()


@contextlib.contextmanager
def node_processes() -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []

    def start(*args: Any) -> NodeProcess:
        node = NodeProcess(*args)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.kill()


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A directory with homes A and B (relative paths keep the control sockets short)."""
    work = tmp_path_factory.mktemp("nodes")
    ids = {name: ok_json(qiz(work, "--home", name, "init", "--json"))["node_id"] for name in "AB"}
    return work, ids


def test_two_node_processes_link_ping_and_stop(homes: tuple[Path, dict[str, str]]) -> None:
    work, ids = homes
    port_a, port_b = free_port(), free_port()
    addr_a, addr_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    with node_processes() as start:
        a = start(work, "A", addr_a, [addr_b])
        b = start(work, "B", addr_b, [f"{ids['A']}@{addr_a}"])
        status_a = wait_for(a.status, 15, "node A to answer")
        status_b = wait_for(b.status, 15, "node B to answer")
        assert (status_a["node_id"], status_a["address"]) == (ids["A"], addr_a)
        assert (status_b["node_id"], status_b["address"]) == (ids["B"], addr_b)

        def linked(node: NodeProcess, peer: str) -> bool:
            status = node.status()
            return status is not None and [link["peer"] for link in status["links"]] == [peer]

        wait_for(lambda: linked(a, ids["B"]) and linked(b, ids["A"]), 15, "A and B linked")
        for node in (a, b):
            (link,) = node.status()["links"]  # type: ignore[index]
            assert link["established"] and link["direction"] in ("in", "out")

        ping = ok_json(qiz(work, "--home", "A", "ping", addr_b, "--count", "3", "--json"))
        assert ping["peer"] == ids["B"]
        assert ping["address"] == addr_b
        assert len(ping["rtt_ms"]) == 3 and all(r > 0 for r in ping["rtt_ms"])
        assert ping["handshake_ms"] > 0
        pinned = ok_json(
            qiz(work, "--home", "B", "ping", f"{ids['A']}@{addr_a}", "-c", "1", "--json")
        )
        assert pinned["peer"] == ids["A"] and len(pinned["rtt_ms"]) == 1

        stop = qiz(work, "--home", "A", "node", "stop")
        assert stop.returncode == 0, stop.stderr
        assert a.wait(10) == 0
        b.proc.send_signal(signal.SIGTERM)
        assert b.wait(10) == 0
        for node in (a, b):
            out, err = node.output()
            assert "node stopped" in out, (out, err)
            assert "Traceback" not in err, err
            assert not (work / node.home / "node.sock").exists()
        one_line_error(qiz(work, "--home", "A", "node", "status"))  # gone for good


def test_status_and_stop_without_a_running_node(homes: tuple[Path, dict[str, str]]) -> None:
    work, _ = homes
    line = one_line_error(qiz(work, "--home", "A", "node", "status", "--json"))
    assert "no node is running" in line
    one_line_error(qiz(work, "--home", "A", "node", "stop"))
    one_line_error(qiz(work, "--home", "nowhere", "node", "status"))


def test_start_with_a_bad_listen_address(homes: tuple[Path, dict[str, str]]) -> None:
    work, _ = homes
    result = qiz(work, "--home", "A", "node", "start", "--listen", "bogus")
    assert "--listen" in one_line_error(result)
    result = qiz(work, "--home", "A", "node", "start", "--listen", "127.0.0.1:0", "--peer", "x")
    assert "--peer" in one_line_error(result)
    assert not (work / "A" / "node.sock").exists()


def test_ping_with_nothing_listening(homes: tuple[Path, dict[str, str]]) -> None:
    work, _ = homes
    result = qiz(work, "--home", "A", "ping", "127.0.0.1:1", "--count", "1")
    assert result.stdout == ""
    assert "127.0.0.1:1" in one_line_error(result)
    one_line_error(qiz(work, "--home", "A", "ping", "not-an-address"))


def test_one_node_per_home(homes: tuple[Path, dict[str, str]]) -> None:
    work, ids = homes
    with node_processes() as start:
        first = start(work, "B", f"127.0.0.1:{free_port()}", [])
        wait_for(first.status, 15, "the first node to answer")
        # A second node for the same home is refused and leaves the first one reachable.
        second = qiz(work, "--home", "B", "node", "start", "--listen", f"127.0.0.1:{free_port()}")
        assert "already running" in one_line_error(second)
        assert first.status()["node_id"] == ids["B"]  # type: ignore[index]

        # A node that died without cleaning up leaves a stale socket, which the next replaces.
        first.proc.kill()
        first.wait(10)
        assert (work / "B" / "node.sock").exists()
        again = start(work, "B", f"127.0.0.1:{free_port()}", [])
        assert wait_for(again.status, 15, "the new node to answer")["node_id"] == ids["B"]
        assert ok_json(qiz(work, "--home", "B", "node", "stop", "--json")) == {"stopped": True}
        assert again.wait(10) == 0
        assert "node stopped" in again.output()[0]
