"""One API, two carriers: the control socket and the HTTP API serve the same operations (one
dispatch table) with the same answers and the same errors; events are pushed as links come and
go; a stale control socket after a crash reads as "not running"."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qiz.compute.service import ComputeConfig
from qiz.control import CONTROL_SOCKET, NodeNotRunning, control_request
from qiz.events import EventKind
from qiz.identity import NodeIdentity
from qiz.node import ControlSocketError, Node
from qiz.node_api import OPERATIONS, NodeAPI
from qiz.qmp.manager import ManagerConfig
from qiz.resolve.discovery import LanDiscovery
from qiz.web.server import serve_api

from .helpers import async_eventually, run

FAST = ManagerConfig(keepalive_interval=0.2)


async def http(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    assert node.web is not None
    headers = {"Authorization": f"Bearer {node.web.token}"}  # type: ignore[attr-defined]
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, node.web.url + path.lstrip("/"), headers=headers, json=body) as r,
    ):
        return r.status, json.loads(await r.text())


async def two_nodes(tmp_path: Path) -> tuple[Node, Node]:
    (tmp_path / "a").mkdir()
    a = Node(NodeIdentity.generate(), control_dir=tmp_path / "a", http=serve_api(0), config=FAST)
    await a.start()
    b = Node(NodeIdentity.generate(), peers=[a.address], config=FAST)
    await b.start()
    await asyncio.wait_for(b.joined.wait(), 20)
    await async_eventually(lambda: len(a.links.peers) == 1, what="a sees b")
    return a, b


def test_every_operation_answers_alike_over_the_socket_and_over_http(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = await two_nodes(tmp_path)
        try:
            home = tmp_path / "a"
            for name in ("peers", "routing", "scores", "records"):
                op = OPERATIONS[name]
                assert op.method == "GET"
                reply = await control_request(home, name)
                status, body = await http(a, "GET", op.path)  # type: ignore[arg-type]
                assert reply["ok"] and status == 200
                volatile = {
                    "rtt_ms",
                    "bytes_sent",
                    "bytes_received",
                    "last_seen",
                    "last_seen_at",
                    "expires",
                }

                def stable(value: Any, volatile: set[str] = volatile) -> Any:
                    if isinstance(value, dict):
                        return {k: stable(v) for k, v in value.items() if k not in volatile}
                    if isinstance(value, list):
                        return [stable(v) for v in value]
                    return value

                assert stable(reply["result"]) == stable(body), name
            reply = await control_request(home, "status")
            status, body = await http(a, "GET", "/api/node")
            assert reply["result"]["node_id"] == body["node_id"] == str(a.node_id)
            assert [link["node_id"] for link in body["links"]] == [str(b.node_id)]
            # the same refusal, with the same status, on both carriers
            reply = await control_request(home, "job_list")
            status, body = await http(a, "GET", "/api/jobs")
            assert not reply["ok"] and reply["status"] == status == 503
            assert reply["error"] == body["error"]
            reply = await control_request(home, "events", after="soon")
            status, body = await http(a, "GET", "/api/events?after=soon")
            assert reply == {"ok": False, "error": "after must be an integer", "status": 400}
            assert (status, body) == (400, {"error": "after must be an integer"})
            reply = await control_request(home, "no_such_thing")
            assert not reply["ok"] and "unknown operation" in reply["error"]
            # a name published over the socket resolves over both
            reply = await control_request(home, "name_publish", label="lab", value="v1", ttl=600)
            assert reply["ok"], reply
            reply = await control_request(home, "name_resolve", name=f"{a.node_id}/lab")
            assert reply["ok"] and reply["result"]["value"] == "v1"
            status, body = await http(a, "GET", f"/api/names/{a.node_id}/lab")
            assert (status, body["value"]) == (200, "v1")
        finally:
            await b.stop()
            await a.stop()

    run(scenario(), timeout=60)


def test_links_push_their_events_with_one_sequence(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = await two_nodes(tmp_path)
        try:
            await b.stop()
            await async_eventually(
                lambda: any(e["kind"] == EventKind.PEER_UNLINKED for e in a.event_log.since(0)[0]),
                what="the unlinked event",
            )
            events, missed = a.event_log.since(0)
            assert not missed
            ids = [e["id"] for e in events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            mine = [e for e in events if e.get("peer") == str(b.node_id)]
            assert [e["kind"] for e in mine] == ["peer.linked", "peer.unlinked"]
            # the DHT pushes its own events into the same sequence
            assert any(e["kind"] == "lookup.done" for e in b.event_log.since(0)[0])
        finally:
            await a.stop()

    run(scenario(), timeout=60)


def test_a_stale_socket_reads_as_not_running_and_a_new_node_replaces_it(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    left_behind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_behind.bind(str(home / CONTROL_SOCKET))  # bound, never listening: as after kill -9
    left_behind.close()
    with pytest.raises(NodeNotRunning, match="stale"):
        asyncio.run(control_request(home, "status"))
    with pytest.raises(NodeNotRunning, match="no node is running"):
        asyncio.run(control_request(tmp_path, "status"))

    async def restart() -> None:
        node = Node(NodeIdentity.generate(), control_dir=home)
        await node.start()
        try:
            reply = await control_request(home, "status")
            assert reply["ok"] and reply["result"]["node_id"] == str(node.node_id)
        finally:
            await node.stop()
        assert not (home / CONTROL_SOCKET).exists()

    run(restart())


def test_errors_paths_and_files_are_carried_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug answers 500 in JSON on both carriers; text that cannot be encoded is a clear 400;
    the path beats the body; the owner-only operations are not on HTTP."""

    async def scenario() -> None:
        home = tmp_path / "c"
        home.mkdir()
        node = Node(
            NodeIdentity.generate(),
            control_dir=home,
            http=serve_api(0),
            config=FAST,
            compute=ComputeConfig(worker=False),
        )
        await node.start()
        try:
            await asyncio.wait_for(node.joined.wait(), 20)

            def broken(self: object) -> None:
                raise RuntimeError("boom")

            monkeypatch.setattr(NodeAPI, "routing", broken)
            reply = await control_request(home, "routing")
            status, body = await http(node, "GET", "/api/routing")
            assert reply == {
                "ok": False,
                "error": "internal error: RuntimeError: boom",
                "status": 500,
            }
            assert (status, body) == (500, {"error": reply["error"]})
            monkeypatch.undo()

            status, body = await http(node, "POST", "/api/jobs", {"spec": {"kind": "\ud800"}})
            assert status == 400 and "not valid Unicode" in body["error"]

            status, body = await http(node, "POST", "/api/jobs/aaaa/cancel", {"job": "bbbb"})
            assert status == 404 and "'aaaa'" in body["error"], body

            reply = await control_request(home, "name_publish", label="lab/v2", value="x", ttl=60)
            assert reply["status"] == 400 and "may not contain '/'" in reply["error"]
            for method, path in (("POST", "/api/node/stop"), ("POST", "/api/names")):
                status, _ = await http(node, method, path, {})
                assert status in (404, 405), (method, path)  # owner-only: the socket carries them
            assert not node.stop_requested.is_set()
        finally:
            await node.stop()

    run(scenario(), timeout=60)


def test_stop_answers_a_waiting_long_poll_instead_of_waiting_for_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        home = tmp_path / "d"
        home.mkdir()
        node = Node(NodeIdentity.generate(), control_dir=home, http=serve_api(0), config=FAST)
        await node.start()
        await asyncio.wait_for(node.joined.wait(), 20)  # its join's events are all in
        after = node.event_log.last_id
        poll = asyncio.ensure_future(http(node, "GET", f"/api/events?after={after}&timeout=30"))
        socket_poll = asyncio.ensure_future(control_request(home, "events", 60.0, after=after))
        await async_eventually(lambda: node.event_log.waiting == 2, what="both polls to wait")
        await node.stop()  # bounded by run()'s timeout, well under the polls' 30 s
        status, body = await poll
        assert status == 200 and body["events"] == []
        reply = await socket_poll
        assert reply["ok"] or "closed" in reply.get("error", ""), reply

    run(scenario(), timeout=20)


def test_one_node_per_home_even_while_the_first_is_stopping(tmp_path: Path) -> None:
    """The home's lock, not a probe of the socket, decides: a node still stopping keeps its
    home until it is done, so the next one can never lose its socket to it."""
    home = tmp_path / "e"
    home.mkdir()

    class SlowFace:
        url = "http://127.0.0.1:1/"

        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def stop(self) -> None:
            await self.release.wait()

    face = SlowFace()

    async def start_slow(node: Node) -> SlowFace:
        return face

    async def scenario() -> None:
        first = Node(NodeIdentity.generate(), control_dir=home, http=start_slow)
        await first.start()
        second = Node(NodeIdentity.generate(), control_dir=home)
        with pytest.raises(ControlSocketError, match="already running"):
            await second.start()
        stopping = asyncio.ensure_future(first.stop())
        await async_eventually(lambda: first.event_log.closed, what="the first to be stopping")
        with pytest.raises(ControlSocketError, match="already running"):
            await second.start()
        face.release.set()
        await stopping
        third = Node(NodeIdentity.generate(), control_dir=home)
        await third.start()
        try:
            reply = await control_request(home, "status")
            assert reply["result"]["node_id"] == str(third.node_id)
        finally:
            await third.stop()

    run(scenario())


def test_a_failed_start_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "f"
    home.mkdir()

    seen: list[str] = []

    async def no_multicast(self: LanDiscovery) -> None:
        seen.append(self.address())  # where the node listened, for the check below
        raise OSError(19, "No such device")

    monkeypatch.setattr(LanDiscovery, "start", no_multicast)

    async def scenario() -> None:
        node = Node(NodeIdentity.generate(), control_dir=home, http=serve_api(0), lan={})
        with pytest.raises(ControlSocketError, match="LAN discovery"):
            await node.start()
        assert not (home / CONTROL_SOCKET).exists()
        host, port = seen[0].rsplit(":", 1)
        with pytest.raises(OSError):
            await asyncio.open_connection(host, int(port))  # the listener is closed
        assert node.web is not None
        with pytest.raises(aiohttp.ClientConnectorError):
            await http(node, "GET", "/api/node")  # and so is the HTTP API
        monkeypatch.undo()
        again = Node(NodeIdentity.generate(), control_dir=home)  # the home is free again
        await again.start()
        await again.stop()

    run(scenario())
