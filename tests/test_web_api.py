"""The local HTTP API against real running nodes (aiohttp on 127.0.0.1, real TCP): the token,
Host and Origin checks refuse what they must; jobs submitted through the API finish and their
attestations verify; a job's events come in its order with increasing ids and long-poll;
metrics and OpenAPI are served."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import aiohttp

from qiz.compute.attest import verify_file
from qiz.compute.service import ComputeConfig
from qiz.event_log import EventLog
from qiz.events import EventBus, EventKind
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.resolve.dht import DhtConfig
from qiz.web.server import serve_api
from qiz.web.token import load_or_create_token

from .helpers import async_eventually, manager, run, start_mesh


def make(peers: list[str] | None, _index: int) -> Node:
    """A node serving its HTTP API on 127.0.0.1:0, with one worker slot."""
    return Node(
        NodeIdentity.generate(),
        listen="127.0.0.1:0",
        peers=peers,
        config=manager(),
        dht_config=DhtConfig(request_timeout=1.0),
        compute=ComputeConfig(slots=1, poll_after=1.0, warm_up=False),
        http=serve_api(0),
    )


async def mesh(size: int) -> list[Node]:
    nodes = await start_mesh(size, make)
    for node in nodes:  # every capacity record is in the DHT before the first job
        await node.compute.publish_capacity()
    return nodes


async def call(
    client: aiohttp.ClientSession, node: Node, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {node.web.token}", **kwargs.pop("headers", {})}
    async with client.request(method, node.web.url + path, headers=headers, **kwargs) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


def test_the_guard_refuses_missing_tokens_foreign_hosts_and_origins() -> None:
    async def scenario() -> None:
        (node,) = await mesh(1)
        port = node.web.port
        try:
            async with aiohttp.ClientSession() as client:
                assert (await call(client, node, "GET", "api/node"))[0] == 200
                async with client.get(node.web.url + "api/node") as r:
                    assert r.status == 401 and "token" in (await r.json())["error"]
                async with client.get(node.web.url + "api/node?token=wrong") as r:
                    assert r.status == 401
                async with client.get(node.web.url + f"api/node?token={node.web.token}") as r:
                    assert r.status == 200
                async with client.get(node.web.url + "metrics") as r:
                    assert r.status == 401
                for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", "10.0.0.1"):
                    status, body = await call(
                        client, node, "GET", "api/node", headers={"Host": host}
                    )
                    assert status == 403 and "DNS rebinding" in body["error"], host
                for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
                    assert (await call(client, node, "GET", "api/node", headers={"Host": host}))[
                        0
                    ] == 200
                status, body = await call(
                    client, node, "GET", "api/jobs", headers={"Origin": "http://evil.example"}
                )
                assert status == 403 and "Origin" in body["error"]
                same = {"Origin": f"http://127.0.0.1:{port}"}
                assert (await call(client, node, "GET", "api/jobs", headers=same))[0] == 200
                # a form post (no JSON) from any page is refused before it reaches a handler
                status, body = await call(
                    client,
                    node,
                    "POST",
                    "api/jobs",
                    data="spec=x",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert status == 415
                # the page itself needs no token, but the Host check holds there too
                async with client.get(node.web.url) as r:
                    assert r.status == 200 and "QIZ" in await r.text()
                    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                async with client.get(node.web.url, headers={"Host": "evil.example"}) as r:
                    assert r.status == 403
                async with client.get(node.web.url + "static/..%2fserver.py") as r:
                    assert r.status == 404
            assert node.compute.coordinator.list() == []
        finally:
            await node.stop()

    run(scenario(), timeout=60)


def test_jobs_through_the_api_events_metrics_and_openapi() -> None:
    async def scenario() -> None:
        nodes = await mesh(3)
        node = nodes[0]
        try:
            async with aiohttp.ClientSession() as client:
                status, peers = await call(client, node, "GET", "api/peers")
                assert status == 200 and len(peers["peers"]) == 2
                status, routing = await call(client, node, "GET", "api/routing")
                assert {c["node_id"] for c in routing["contacts"]} == {
                    str(n.node_id) for n in nodes[1:]
                }
                status, records = await call(client, node, "GET", "api/records")
                assert any(r["kind"] == "peer" for r in records["records"])
                _, first = await call(client, node, "GET", "api/events?after=0&timeout=0")
                after = first["last"]

                # bad specs: 400 with the field named, nothing created
                status, body = await call(
                    client,
                    node,
                    "POST",
                    "api/jobs",
                    json={"spec": {"kind": "qaoa", "params": {"graph": "random:8,3"}}},
                )
                assert status == 400 and "params.p: is required" in body["error"]
                status, body = await call(client, node, "POST", "api/jobs", json={"kind": "qaoa"})
                assert status == 400 and "expected" in body["error"]
                assert (await call(client, node, "GET", "api/jobs"))[1]["jobs"] == []

                spec = {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 1}, "replicas": 2}
                status, state = await call(client, node, "POST", "api/jobs", json={"spec": spec})
                assert status == 201 and state["state"] == "running"
                job = state["job_id"]
                # long poll: returns as soon as events exist, ids increase
                _, page = await call(client, node, "GET", f"api/events?after={after}&timeout=10")
                ids = [e["id"] for e in page["events"]]
                assert ids and ids == sorted(ids) and ids[0] > after

                async def finished() -> dict | None:
                    _, state = await call(client, node, "GET", f"api/jobs/{job[:10]}")
                    return state if state["state"] != "running" else None

                state = await async_eventually(finished, 60, "the job to finish")
                assert state["state"] == "done", state
                # one job's status carries its spec's summary (the list does not)
                assert state["spec"]["params"] == spec["params"] and state["reason"] is None
                assert state["spec"]["quorum"] == 2 and state["spec"]["submitter"] == str(
                    node.node_id
                )
                # links and lookups have events of their own, interleaved with the job's: only
                # the events of this one job come in an order the test can know
                _, page = await call(client, node, "GET", f"api/events?after={after}&timeout=0")
                mine = [e for e in page["events"] if e.get("job") == job]
                kinds = [e["kind"] for e in mine]
                assert kinds[0] == "job.submitted" and kinds[-1] == "job.done", kinds
                assert "replica.placed" in kinds and "task.decided" in kinds, kinds
                assert kinds.index("replica.placed") < kinds.index("task.decided"), kinds
                assert [e["id"] for e in mine] == sorted(e["id"] for e in mine)
                _, atts = await call(client, node, "GET", "api/attestations")
                (entry,) = atts["attestations"]
                assert entry["job_id"] == job and entry["verified"] and len(entry["workers"]) == 2
                async with client.get(
                    node.web.url + f"api/attestations/{job}",
                    headers={"Authorization": f"Bearer {node.web.token}"},
                ) as r:
                    assert r.content_type == "application/cbor"
                    assert verify_file(await r.read()).job_id.hex() == job
                status, body = await call(client, node, "POST", f"api/jobs/{job}/cancel", json={})
                assert status == 200 and body["state"] == "done"  # finished jobs stay finished
                status, body = await call(client, node, "GET", "api/jobs/ffff")
                assert status == 404 and "no job submitted here starts with" in body["error"]
                status, body = await call(client, node, "GET", "api/nothing-here")
                assert status == 404 and body["error"] == "Not Found"  # JSON, like the rest
                status, body = await call(client, node, "DELETE", "api/jobs")
                assert status == 405 and "error" in body
                _, scores = await call(client, node, "GET", "api/scores")
                assert len(scores["scores"]) >= 1

                status, text = await call(client, node, "GET", "metrics")
                assert status == 200
                for family in (
                    "qiz_links 2.0",
                    'qiz_links_by_path{path="direct"} 2.0',
                    'qiz_links_by_path{path="relayed"} 0.0',
                    'qiz_reachability{state="public"}',
                    "qiz_relay_bytes_forwarded_total 0.0",
                    'qiz_punches_total{outcome="direct"} 0.0',
                    'qiz_jobs{state="done"} 1.0',
                    "qiz_dht_lookup_seconds_count",
                    'qiz_handshakes_total{result="ok"}',
                    'qiz_frames_dropped_total{reason="replayed_or_too_old"}',
                    "qiz_task_simulator_seconds_count",
                    'qiz_peer_score_bucket{le="0.05"}',
                    'qiz_trust_events_total{reason="agreed"}',
                    'qiz_trust_events_total{reason="bad_share"} 0.0',
                ):
                    assert family in text, family
                _, bench = await call(client, node, "GET", "api/bench")
                names = {f["figure"] for f in bench["figures"]}
                assert {
                    "encryption_gb_s",
                    "key_exchange_ms",
                    "authentication_ms",
                    "latency_ms",
                } <= names
                assert all(f["measured"] is None or f["measured"] > 0 for f in bench["figures"])

                async with client.get(node.web.url + "openapi.json") as r:
                    openapi = await r.json()
            documented = set(openapi["paths"])
            served = {
                r.resource.canonical
                for r in node.web.app().router.routes()
                if r.resource is not None
            }
            assert served - {"/static/{name}", "/openapi.json"} <= documented
        finally:
            for n in nodes:
                await n.stop()

    run(scenario(), timeout=120)


def test_the_event_log_long_polls_and_reports_missed_events() -> None:
    async def scenario() -> None:
        bus = EventBus()
        log = EventLog(bus, size=3)
        assert await log.wait(0, 0) == ([], False)
        waiter = asyncio.ensure_future(log.wait(0, 5))
        await asyncio.sleep(0)  # the waiter runs up to its wait
        assert not waiter.done()  # nothing yet: it waits (a long poll), it does not return
        event = bus.emit(EventKind.PEER_LINKED, n=1)
        events, missed = await waiter
        assert [e["n"] for e in events] == [1] and not missed
        assert events[0]["id"] == event.seq and events[0]["kind"] == "peer.linked"
        for n in range(2, 7):
            bus.emit(EventKind.PEER_LINKED, n=n)
        events, missed = log.since(1)
        assert [e["id"] for e in events] == [4, 5, 6] and missed
        assert log.since(6) == ([], False)

    run(scenario(), timeout=10)


def test_the_token_is_kept_in_the_home_with_mode_0600(tmp_path) -> None:
    token = load_or_create_token(tmp_path)
    assert len(token) >= 32 and load_or_create_token(tmp_path) == token
    assert (tmp_path / "api.token").stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(None) != load_or_create_token(None)
    assert (
        json.loads((resources.files("qiz.web") / "openapi.json").read_text())["openapi"] == "3.1.0"
    )
