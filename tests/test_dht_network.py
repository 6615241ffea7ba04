"""The DHT over real QMP links on loopback: a 30-node mesh resolving every id and names,
bad records refused on store and in lookups, and a third of the mesh killed."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from qiz import wire
from qiz.crypto.ids import ServiceName
from qiz.identity import NodeIdentity, PeerRecord
from qiz.node import Node
from qiz.qmp.rpc import RpcError
from qiz.resolve.dht import FIND_VALUE, STORE, DhtConfig
from qiz.resolve.records import RecordKind, make_name_record

from .helpers import async_eventually, manager, run, start_mesh, stop_all

MESH = 30


def make(peers: list[str] | None = None, **dht) -> Node:
    config = DhtConfig(request_timeout=1.0, **dht)
    return Node(NodeIdentity.generate(), peers=peers, config=manager(), dht_config=config)


def make_at(peers: list[str] | None, _index: int) -> Node:
    """For :func:`tests.helpers.start_mesh`: every node made alike, one bootstrap address."""
    return make(peers)


def test_thirty_nodes_resolve_everyone_and_names_then_survive_losing_a_third() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(MESH, make_at)
        try:
            # every node resolves every other by id
            for node in nodes:
                results = await asyncio.gather(
                    *(node.dht.resolve_peer(other.node_id) for other in nodes if other is not node)
                )
                assert {str(r.node_id) for r in results} == {
                    str(o.node_id) for o in nodes if o is not node
                }
            # names: five owners publish, everyone resolves them
            owners = nodes[1:6]
            for i, owner in enumerate(owners):
                await owner.publish_name("svc", f"127.0.0.1:{9000 + i}", 600)
            for node in nodes:
                for i, owner in enumerate(owners):
                    answer = await node.resolve_name(owner.node_id, "svc")
                    assert answer["value"] == f"127.0.0.1:{9000 + i}"
            # a republished name with a higher sequence number wins everywhere
            await owners[0].publish_name("svc", "127.0.0.1:9999", 600)
            fresh = await nodes[-1].dht.resolve_name(owners[0].node_id, "svc", use_cache=False)
            assert fresh.value == "127.0.0.1:9999"
            # a cached answer lasts its TTL (60 s), then the node asks the DHT again
            cached = await nodes[-2].resolve_name(owners[0].node_id, "svc")
            assert cached["value"] == "127.0.0.1:9000"
            nodes[-2].dht.clock = lambda: time.time() + 61
            assert (await nodes[-2].resolve_name(owners[0].node_id, "svc"))["value"] == (
                "127.0.0.1:9999"
            )
            nodes[-2].dht.clock = time.time
            # kill a third (including the bootstrap node); the rest still resolve each other
            rnd = random.Random(3)
            killed = [nodes[0], *rnd.sample(nodes[1:], MESH // 3 - 1)]  # the bootstrap node too
            await stop_all(killed)
            alive = [n for n in nodes if n not in killed]
            for node in alive[:8]:
                for other in alive:
                    if other is not node:
                        record = await node.dht.resolve_peer(other.node_id)
                        assert record.node_id == other.node_id
                answer = await node.resolve_name(owners[1].node_id, "svc")
                assert answer["value"] == "127.0.0.1:9001"
            nodes = alive
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=240)


def test_bad_records_are_refused_on_store_and_in_lookups() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(6, make_at)
        try:
            owner, storer, resolver, evil = nodes[1], nodes[2], nodes[3], nodes[4]
            now = time.time()
            name = ServiceName.of(owner.node_id, "db")
            good = make_name_record(owner.identity, "db", "v2", seq=2, now=now, ttl=600)
            older = make_name_record(owner.identity, "db", "v1", seq=1, now=now, ttl=600)
            expired = make_name_record(owner.identity, "db", "old", seq=3, now=now - 1000, ttl=10)
            fields = wire.decode(good, max_size=8192)
            fields["value"] = "evil"
            forged = wire.encode(fields)
            del fields["sig"]
            unsigned = wire.encode(fields)
            mallory = NodeIdentity.generate()
            impostor = make_name_record(mallory, "db", "evil", seq=9, now=now, ttl=600)

            rpc = await resolver.connect(storer.address, storer.node_id)
            assert (await rpc.call(STORE, {"kind": "name", "raw": good}))["result"] == "stored"
            for bad, code in (
                (forged, "bad-record"),
                (unsigned, "bad-record"),
                (expired, "bad-record"),
                (older, "older-record"),
            ):
                with pytest.raises(RpcError) as info:
                    await rpc.call(STORE, {"kind": "name", "raw": bad})
                assert info.value.code == code
            # the impostor's record is valid for *its* name, never for the owner's
            assert mallory.node_id != owner.node_id
            held = storer.dht.store.get(RecordKind.NAME, name.digest, time.time())
            assert [r.raw for r in held] == [good]

            # A malicious node answers lookups with every bad record it can make.
            def evil_find_value(ctx, body):  # plain, as the honest handler: as quick
                contacts = evil.dht._contacts_out(body["key"], ctx.peer_id.digest)
                return {
                    "records": [forged, unsigned, expired, older, impostor],
                    "contacts": contacts,
                }

            evil.handlers[FIND_VALUE] = evil_find_value
            await owner.dht.publish(good, RecordKind.NAME)
            before = resolver.dht.counters["invalid_records"]
            for _ in range(3):
                answer = await resolver.resolve_name(owner.node_id, "db")
                assert answer["value"] == "v2" and answer["seq"] == 2
            assert resolver.dht.counters["invalid_records"] > before

            # peer records: a forged one is refused too
            record = PeerRecord.create(owner.identity, [owner.address], seq=1, now=now)
            bad_peer = bytearray(record.raw)
            bad_peer[-9] ^= 1
            with pytest.raises(RpcError) as info:
                await rpc.call(STORE, {"kind": "peer", "raw": bytes(bad_peer)})
            assert info.value.code == "bad-record"
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=120)


def test_lan_discovery_links_nodes_with_no_bootstrap_address() -> None:
    """Two nodes, no peers configured: multicast beacons (kept on this host) introduce them,
    and the handshake, not the beacon, proves who answered."""

    async def scenario() -> None:
        lan = {
            "interface": "127.0.0.1",
            "ttl": 0,
            "port": 17_000 + random.randrange(2000),
            "interval": 0.2,
        }
        a = Node(NodeIdentity.generate(), config=manager(), lan=lan)
        b = Node(NodeIdentity.generate(), config=manager(), lan=lan)
        await a.start()
        await b.start()
        try:
            await async_eventually(
                lambda: b.node_id in a.links.peers or a.node_id in b.links.peers,
                10,
                "a beacon to link the two nodes",
            )
            record = await a.dht.resolve_peer(b.node_id)
            assert record.addresses == (b.address,)
        finally:
            await a.stop()
            await b.stop()

    run(scenario(), timeout=60)


def test_beacons_are_hints_and_garbage_is_ignored() -> None:
    from qiz.resolve.discovery import decode_beacon, encode_beacon

    assert decode_beacon(encode_beacon(bytes(32), "127.0.0.1:1")) == (bytes(32), "127.0.0.1:1")
    for bad in (
        b"",
        b"\xff",
        wire.encode({"v": 1, "id": b"x", "addr": "127.0.0.1:1"}),
        wire.encode({"v": 1, "id": bytes(32), "addr": "example.com:1"}),
    ):
        assert decode_beacon(bad) is None


def test_maintenance_republishes_and_expires_on_a_controlled_clock() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(4, make_at)
        try:
            owner = nodes[1]
            await owner.publish_name("job", "x", 7200)
            holder = nodes[2]
            name = ServiceName.of(owner.node_id, "job").digest
            assert holder.dht.store.get(RecordKind.NAME, name, time.time())
            base = time.time()
            holder.dht.clock = lambda: base + 3700  # an hour later: due for republishing
            done = await holder.dht.maintain_once()
            assert done["republished"] >= 1 and done["expired"] == 0
            holder.dht.clock = lambda: base + 7300  # past the record's TTL
            done = await holder.dht.maintain_once()
            assert done["expired"] >= 1
            assert not holder.dht.store.get(RecordKind.NAME, name, base + 7300)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=60)


def test_malformed_replies_and_lying_hints_do_not_stall_or_poison() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(5, make_at)
        try:
            victim, evil, honest = nodes[1], nodes[2], nodes[3]
            honest_entry = victim.dht.table.get(honest.node_id.digest)
            assert honest_entry is not None
            real_address = honest_entry.address

            async def bad_find_node(ctx, body):
                return {"contacts": 5}  # not a list

            async def lying_find_value(ctx, body):
                # the honest node's id at an address where nobody listens
                return {"records": 7, "contacts": [[honest.node_id.digest, "127.0.0.1:9"]]}

            evil.handlers["dht/1.find_node"] = bad_find_node
            evil.handlers["dht/1.find_value"] = lying_find_value
            # no stall: every lookup returns (the scenario's own timeout bounds them), and the
            # honest node is still resolved to where it really is
            for _ in range(3):
                await victim.dht.lookup(NodeIdentity.generate().node_id.digest)
                record = await victim.dht.resolve_peer(honest.node_id, use_cache=False)
                assert record.addresses == (real_address,)
            entry = victim.dht.table.get(honest.node_id.digest)
            assert entry is not None and entry.address == real_address  # neither moved nor evicted
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=60)


def test_one_signer_cannot_fill_a_nodes_store() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(3, make_at)
        try:
            storer, client_node = nodes[1], nodes[2]
            storer.dht.config.max_records_per_holder = 5
            rpc = await client_node.connect(storer.address, storer.node_id)
            now = time.time()
            codes = []
            for i in range(8):
                raw = make_name_record(client_node.identity, f"n{i}", "v", seq=1, now=now, ttl=60)
                try:
                    await rpc.call(STORE, {"kind": "name", "raw": raw})
                    codes.append("ok")
                except RpcError as exc:
                    codes.append(exc.code)
            assert "store-full" in codes
            held = storer.dht.store.count_holder(client_node.node_id.digest)
            assert held <= 5
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=60)
