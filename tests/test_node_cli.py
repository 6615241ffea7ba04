"""Real node processes driven by the CLI: ``node start|status|stop`` and ``ping`` on loopback.

Every node runs as its own ``python -m qiz`` process on 127.0.0.1:0 and reports the address it
got in its ready line; each test kills the process groups it started, however it ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from qiz import peer_memory
from qiz.cli.node_cmds import NO_PEERS
from qiz.node import LOCK_FILE
from qiz.procs import NodeProcess

from .helpers import (
    eventually,
    node_processes,
    node_state,
    node_status,
    ok_json,
    one_line_error,
    qiz,
    qiz_init,
)
from .json_shapes import check_shape

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A directory with homes A, B and C (relative paths keep the control sockets short)."""
    work = tmp_path_factory.mktemp("nodes")
    return work, qiz_init(work, "A", "B", "C")


def assert_stopped_cleanly(node: NodeProcess, work: Path) -> None:
    """Exit 0, nothing on stdout but the ready line, no traceback, the control socket removed."""
    assert node.wait(20) == 0, node.tail()
    out, err = node.output()
    (line,) = out.splitlines()
    ready = json.loads(line)
    check_shape("node start", ready)
    assert ready["event"] == "ready" and ready["ok"] is True, (out, err)
    assert "Traceback" not in err, err
    assert not (work / node.home / "node.sock").exists()


def test_two_node_processes_link_ping_and_stop(homes: tuple[Path, dict[str, str]]) -> None:
    work, ids = homes
    with node_processes(work) as start:
        a = start("A")
        b = start("B", [a.bootstrap])
        # the ready line carries the address the system chose for :0, as status does
        for node, name in ((a, "A"), (b, "B")):
            assert node.node_id == ids[name]
            assert node.address.startswith("127.0.0.1:") and not node.address.endswith(":0")
            status = eventually(lambda node=node: node_status(node), 15, f"{name} to answer")
            assert (status["node_id"], status["address"]) == (ids[name], node.address)
            assert status["api_url"] == node.api

        def linked(node: NodeProcess, peer: str) -> bool:
            status = node_state(node)
            return status is not None and [link["node_id"] for link in status["links"]] == [peer]

        eventually(lambda: linked(a, ids["B"]) and linked(b, ids["A"]), 15, "A and B linked")
        for node in (a, b):
            (link,) = node_status(node)["links"]  # type: ignore[index]
            assert link["state"] == "online" and link["direction"] in ("in", "out")
            assert link["path"] == "direct" and link["left_at"] is None

        ping = ok_json(qiz(work, "--home", "A", "ping", b.address, "--count", "3", "--json"))
        assert ping["node_id"] == ids["B"]
        assert ping["address"] == b.address
        assert len(ping["rtt_ms"]) == 3 and all(r > 0 for r in ping["rtt_ms"])
        assert ping["handshake_ms"] > 0
        pinned = ok_json(qiz(work, "--home", "B", "ping", a.bootstrap, "-c", "1", "--json"))
        assert pinned["node_id"] == ids["A"] and len(pinned["rtt_ms"]) == 1

        # 'node stop' returns once the node has let go of its home: a start right after it
        # finds the home free; and B, started again without --peer, rejoins A by memory
        stop = qiz(work, "--home", "B", "node", "stop")
        assert (stop.returncode, stop.stdout) == (0, "stopped\n"), stop.stderr
        assert lock_is_free(work / "B")
        assert_stopped_cleanly(b, work)
        assert peer_memory.load(work / "B") == [f"{ids['A']}@{a.address}"]
        again = start("B")
        eventually(lambda: linked(again, ids["A"]), 15, "B to rejoin A by memory")

        stop = qiz(work, "--home", "A", "node", "stop", "--no-wait", "--json")
        assert ok_json(stop)["stopped"] is False
        assert_stopped_cleanly(a, work)
        again.proc.send_signal(signal.SIGTERM)
        assert_stopped_cleanly(again, work)
        one_line_error(qiz(work, "--home", "A", "node", "status"))  # gone for good


def lock_is_free(home: Path) -> bool:
    """Whether no process holds the home's lock (the one a starting node takes)."""
    fd = os.open(home / LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_the_human_start_line_names_the_chosen_address(homes: tuple[Path, dict[str, str]]) -> None:
    """Without --json, the first line says where the node listens (port 0 resolved)."""
    work, ids = homes
    with node_processes(work) as start:
        node = start("C", ready=False, as_json=False)  # a home that never had a peer
        line = node.stdout.wait_for(lambda text: "listening on" in text and text, 60)
        assert line and line.startswith(f"node {ids['C']} listening on 127.0.0.1:"), line
        assert node.stdout.wait_for(lambda text: NO_PEERS in text, 60)
        assert not line.endswith(":0")
        node.proc.send_signal(signal.SIGINT)
        assert node.wait(20) == 0
        out, err = node.output()
        assert "node stopped" in out
        # each start-up line once: the log on stderr does not repeat what stdout says
        assert out.count("listening on") == 1 and "listening on" not in err, (out, err)


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_a_node_started_with_sigint_ignored_still_stops_cleanly(
    homes: tuple[Path, dict[str, str]],
    start_node: Callable[..., NodeProcess],
    stop_with: signal.Signals,
) -> None:
    """A shell's background job starts with SIGINT ignored; both signals still stop the node
    cleanly (its handlers replace the inherited disposition)."""
    work, _ = homes
    node = start_node("B", cwd=work, ignore_sigint=True)
    assert eventually(lambda: node_status(node), 15, "the node to answer")
    node.proc.send_signal(stop_with)
    assert_stopped_cleanly(node, work)


def test_status_and_stop_without_a_running_node(homes: tuple[Path, dict[str, str]]) -> None:
    work, _ = homes
    line = one_line_error(qiz(work, "--home", "A", "node", "status", "--json"))
    assert "no node is running" in line
    one_line_error(qiz(work, "--home", "A", "node", "stop"))
    # no home at all: say so, as 'qiz id' does, not "start the node"
    for command in (("node", "status"), ("node", "stop"), ("peers",)):
        line = one_line_error(qiz(work, "--home", "h/zz", *command))
        assert line == "qiz: error: no QIZ home at h/zz; create it with: qiz --home h/zz init"


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
    with node_processes(work) as start:
        first = start("B")
        # A second node for the same home is refused and leaves the first one reachable.
        second = qiz(work, "--home", "B", "node", "start", "--listen", "127.0.0.1:0")
        assert "already running" in one_line_error(second)
        assert node_status(first)["node_id"] == ids["B"]  # type: ignore[index]

        # A node killed with SIGKILL leaves a stale socket: status says no node runs there,
        # and the next node started in that home replaces the socket.
        first.kill()
        assert (work / "B" / "node.sock").exists()
        line = one_line_error(qiz(work, "--home", "B", "node", "status"))
        assert "no node is" in line or "not running" in line, line
        again = start("B")
        assert node_status(again)["node_id"] == ids["B"]  # type: ignore[index]
        assert ok_json(qiz(work, "--home", "B", "node", "stop", "--json"))["stopped"] is True
        assert_stopped_cleanly(again, work)
