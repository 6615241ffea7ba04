"""The sans-IO resolution core: routing table, iterative lookup with disjoint paths, record
validation -- and the simulator driving them at 10,000 nodes."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz import wire
from qiz.crypto.ids import ContentId, ServiceName
from qiz.identity import NodeIdentity, PeerRecord
from qiz.resolve.keyspace import bucket_index, distance
from qiz.resolve.lookup import Lookup, State
from qiz.resolve.records import (
    RecordError,
    RecordKind,
    make_name_record,
    make_provider_record,
    validate,
)
from qiz.resolve.routing import Contact, RoutingTable, address_prefix
from qiz.sim.network import Behaviour, NetConfig
from qiz.sim.scenarios import Targets, build, corrupt, resolve_many, summarize

NOW = 1_800_000_000.0
keys = st.binary(min_size=32, max_size=32)


def key(i: int) -> bytes:
    return hashlib.sha3_256(b"key %d" % i).digest()


def addr(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:7450"


# ------------------------------------------------------------------ routing table


def test_bucket_index_is_common_prefix_length() -> None:
    a = bytes(32)
    assert bucket_index(a, a) == -1
    assert bucket_index(a, b"\x80" + bytes(31)) == 0
    assert bucket_index(a, bytes(31) + b"\x01") == 255


def test_full_bucket_keeps_old_contacts_and_asks_for_a_ping() -> None:
    table = RoutingTable(bytes(32), k=3, enforce_prefix_limits=False)
    far = [b"\x80" + bytes([i]) + bytes(30) for i in range(5)]  # all in bucket 0
    for i, node in enumerate(far[:3]):
        assert table.add(node, addr(i), NOW).added
    result = table.add(far[3], addr(3), NOW)
    assert not result.added and result.ping is not None and result.ping.node_id == far[0]
    # The oldest answers: it stays. It fails: the waiting newcomer takes its place.
    table.add(far[0], addr(0), NOW + 1)
    assert far[0] in table and far[3] not in table
    table.failed(far[1])  # one failed request is not enough (a busy or slow node)...
    assert far[1] in table
    table.failed(far[1])
    table.failed(far[1])  # ...three are: the waiting newcomer takes its place
    assert far[1] not in table and far[3] in table


def test_failures_evict_after_the_limit() -> None:
    table = RoutingTable(bytes(32), k=3, max_failures=2, enforce_prefix_limits=False)
    node = b"\x01" + bytes(31)
    table.add(node, addr(1), NOW)
    table.failed(node)
    assert node in table
    table.failed(node)
    assert node not in table


def test_prefix_limits_resist_one_network_filling_the_table() -> None:
    table = RoutingTable(bytes(32), per_prefix_bucket=2, per_prefix_table=3)
    same_net = [b"\x80" + bytes([i]) + bytes(30) for i in range(5)]
    added = [table.add(n, f"203.0.113.{i + 1}:7450", NOW).added for i, n in enumerate(same_net)]
    assert added == [True, True, False, False, False]
    other = [bytes([0x40, i]) + bytes(30) for i in range(3)]
    added = [table.add(n, f"203.0.113.{50 + i}:7450", NOW).added for i, n in enumerate(other)]
    assert added == [True, False, False]  # the table-wide limit of 3 per /24
    assert table.add(b"\x20" + bytes(31), "198.51.100.1:7450", NOW).added
    # Loopback is exempt: a local mesh of many nodes is not an eclipse.
    local = RoutingTable(bytes(32), per_prefix_bucket=1, per_prefix_table=1)
    assert all(local.add(n, f"127.0.0.1:{7000 + i}", NOW).added for i, n in enumerate(same_net[:3]))


def test_address_prefix() -> None:
    assert address_prefix("192.0.2.77:1") == "192.0.2.0/24"
    assert address_prefix("[2001:db8:1:2::5]:1") == "2001:db8:1::/48"


@settings(max_examples=40, deadline=None)
@given(me=keys, others=st.lists(keys, min_size=1, max_size=120, unique=True), target=keys)
def test_closest_matches_brute_force(me: bytes, others: list[bytes], target: bytes) -> None:
    table = RoutingTable(me, k=20, enforce_prefix_limits=False)
    for i, node in enumerate(others):
        table.add(node, addr(i), NOW)
    kept = [c.node_id for c in table.contacts()]
    expected = sorted(kept, key=lambda n: distance(n, target))[:20]
    assert [c.node_id for c in table.closest(target)] == expected
    assert all(len(b.contacts) <= 20 for b in table.buckets.values())


# ------------------------------------------------------------------ lookups


def small_world(n: int = 300) -> dict[bytes, RoutingTable]:
    """Every node has seen every other in random order: k-buckets keep what Kademlia keeps."""
    ids = [key(i) for i in range(n)]
    tables = {}
    rnd = random.Random(4)
    for me in ids:
        table = RoutingTable(me, k=8, enforce_prefix_limits=False)
        for j in rnd.sample(range(n), n):
            table.add(ids[j], addr(j), NOW)
        tables[me] = table
    return tables


def run_lookup(tables: dict[bytes, RoutingTable], origin: bytes, target: bytes, **kw) -> Lookup:
    lookup = Lookup(target, tables[origin].closest(target, 8), self_id=origin, k=8, **kw)
    while not lookup.done:
        batch = lookup.next_requests()
        assert batch, "a lookup that is not done must have something to ask"
        for contact in batch:
            lookup.on_response(contact.node_id, tables[contact.node_id].closest(target, 8))
    return lookup


@pytest.mark.parametrize("paths", [1, 4])
def test_lookup_finds_the_true_closest_nodes(paths: int) -> None:
    tables = small_world()
    ids = list(tables)
    for t in range(20):
        target = key(10_000 + t)
        lookup = run_lookup(tables, ids[t], target, paths=paths)
        truth = sorted((i for i in ids if i != ids[t]), key=lambda n: distance(n, target))[:8]
        found = [c.node_id for c in lookup.closest(8)]
        assert found[:3] == truth[:3]
        assert lookup.rounds <= 6


def test_disjoint_paths_never_share_a_node() -> None:
    """Every node is queried by one path at most, and a path only asks nodes it heard of
    from its own seeds or answers (S/Kademlia)."""
    tables = small_world()
    ids = list(tables)
    lookup = run_lookup(tables, ids[0], key(99_999), paths=4)
    asked = lookup.asked_by()
    assert len(asked) == lookup.messages  # nobody asked twice
    for path in lookup.paths:
        for candidate in path.candidates:
            if candidate.state is not State.FRESH:
                assert asked[candidate.contact.node_id] == path.index
                assert candidate.contact.node_id in path.heard


def test_failures_do_not_stall_a_lookup() -> None:
    tables = small_world()
    ids = list(tables)
    dead = set(ids[100:200])
    target = key(4242)
    lookup = Lookup(target, tables[ids[0]].closest(target, 8), self_id=ids[0], k=8)
    while not lookup.done:
        for contact in lookup.next_requests():
            if contact.node_id in dead:
                lookup.on_failure(contact.node_id)
            else:
                lookup.on_response(contact.node_id, tables[contact.node_id].closest(target, 8))
    assert lookup.closest() and not any(c.node_id in dead for c in lookup.closest())


# ------------------------------------------------------------------ records


@pytest.fixture(scope="module")
def owner() -> NodeIdentity:
    return NodeIdentity.generate()


def test_name_records(owner: NodeIdentity) -> None:
    raw = make_name_record(owner, "api", "127.0.0.1:8080", seq=3, now=NOW, ttl=600)
    name = ServiceName.of(owner.node_id, "api")
    record = validate(RecordKind.NAME, raw, key=name.digest, now=NOW)
    assert record.value == "127.0.0.1:8080" and record.seq == 3
    newer = validate(
        RecordKind.NAME,
        make_name_record(owner, "api", "x", seq=4, now=NOW, ttl=600),
        key=name.digest,
        now=NOW,
    )
    assert newer.supersedes(record) and not record.supersedes(newer)
    with pytest.raises(RecordError, match="expired"):
        validate(RecordKind.NAME, raw, key=name.digest, now=NOW + 601)
    with pytest.raises(RecordError, match="key"):
        validate(RecordKind.NAME, raw, key=ServiceName.of(owner.node_id, "web").digest, now=NOW)
    fields = wire.decode(raw, max_size=8192)
    fields["sig"] = fields["sig"][:-1] + bytes([fields["sig"][-1] ^ 1])
    with pytest.raises(RecordError, match="signature"):
        validate(RecordKind.NAME, wire.encode(fields), key=name.digest, now=NOW)
    fields = wire.decode(raw, max_size=8192)
    fields["value"] = "127.0.0.1:6666"
    with pytest.raises(RecordError, match="signature"):
        validate(RecordKind.NAME, wire.encode(fields), key=name.digest, now=NOW)
    with pytest.raises(RecordError):
        make_name_record(owner, "api", "x", seq=1, now=NOW, ttl=10**9)


def test_someone_else_cannot_sign_my_name(owner: NodeIdentity) -> None:
    mallory = NodeIdentity.generate()
    raw = make_name_record(mallory, "api", "evil", seq=99, now=NOW, ttl=600)
    with pytest.raises(RecordError, match="key"):
        validate(RecordKind.NAME, raw, key=ServiceName.of(owner.node_id, "api").digest, now=NOW)


def test_provider_records(owner: NodeIdentity) -> None:
    cid = ContentId.of(b"chunk")
    raw = make_provider_record(owner, cid, ["127.0.0.1:7000"], now=NOW, ttl=600)
    record = validate(RecordKind.PROVIDER, raw, key=cid.digest, now=NOW)
    assert record.holder == owner.node_id.digest and record.value == ("127.0.0.1:7000",)
    with pytest.raises(RecordError, match="key"):
        validate(RecordKind.PROVIDER, raw, key=ContentId.of(b"other").digest, now=NOW)


def test_peer_records_under_the_wrong_key(owner: NodeIdentity) -> None:
    raw = PeerRecord.create(owner, ["127.0.0.1:1"], seq=1, now=NOW).raw
    assert validate(RecordKind.PEER, raw, key=owner.node_id.digest, now=NOW).seq == 1
    with pytest.raises(RecordError, match="key"):
        validate(RecordKind.PEER, raw, key=bytes(32), now=NOW)


# ------------------------------------------------------------------ simulation at scale


@pytest.fixture(scope="module")
def big_net():
    net = build(10_000, seed=7, config=NetConfig(rtt=0.050, jitter=0.010))
    targets = Targets(net, 12)
    targets.join_tables()
    targets.publish()
    return net, targets


def test_simulated_10000_nodes_without_adversaries(big_net) -> None:
    net, targets = big_net
    results = resolve_many(net, targets, lookups=150, paths=1)
    summary = summarize(net, results, malicious=0.0, paths=1)
    assert summary.success == 1.0
    assert summary.latency_p95 < 0.5
    assert summary.rounds_p95 <= 4


def test_simulated_10000_nodes_with_20_percent_adversaries(big_net) -> None:
    net, targets = big_net
    corrupt(net, 0.20, protect=set(targets.latest), seed=11)
    try:
        results = resolve_many(net, targets, lookups=150, paths=4)
        summary = summarize(net, results, malicious=0.2, paths=4)
        assert summary.success >= 0.99
        assert sum(s.invalid_records for s, _ in results) > 0  # forged records were refused
        # silent nodes are hedged past and given up on at their adaptive timeout (simulated
        # time): none makes a lookup wait the 2 s request timeout
        assert summary.latency_p95 < 0.5
        assert all(s.latency < net.config.timeout for s, _ in results)
    finally:
        for node in net.nodes.values():
            node.behaviour = Behaviour.HONEST


# ------------------------------------------------------------------ the record store


def test_store_orders_by_sequence_and_expires_on_the_clock(tmp_path, owner: NodeIdentity) -> None:
    from qiz.resolve.store import PutResult, RecordStore

    store = RecordStore(tmp_path / "records.sqlite")
    name = ServiceName.of(owner.node_id, "api").digest
    v1 = validate(
        RecordKind.NAME,
        make_name_record(owner, "api", "a", seq=1, now=NOW, ttl=100),
        key=name,
        now=NOW,
    )
    v2 = validate(
        RecordKind.NAME,
        make_name_record(owner, "api", "b", seq=2, now=NOW, ttl=100),
        key=name,
        now=NOW,
    )
    assert store.put(v2, NOW) is PutResult.STORED
    assert store.put(v1, NOW) is PutResult.OLDER
    assert store.put(v2, NOW) is PutResult.UNCHANGED
    assert [r.seq for r in store.get(RecordKind.NAME, name, NOW)] == [2]
    assert store.due_for_republish(NOW + 50, interval=60) == []
    assert [r.seq for r in store.due_for_republish(NOW + 61, interval=60)] == [2]
    store.mark_published(v2, NOW + 61)
    assert store.due_for_republish(NOW + 62, interval=60) == []
    assert store.get(RecordKind.NAME, name, NOW + 101) == []
    assert store.expire(NOW + 101) == 1 and len(store) == 0
    store.close()
    # WAL on disk: a reopened store keeps what was stored.
    again = RecordStore(tmp_path / "records.sqlite")
    again.put(v2, NOW)
    again.close()
    assert len(RecordStore(tmp_path / "records.sqlite")) == 1


def test_providers_keep_one_record_per_holder(owner: NodeIdentity) -> None:
    from qiz.resolve.store import RecordStore

    store = RecordStore()
    cid = ContentId.of(b"data")
    other = NodeIdentity.generate()
    for who in (owner, other, owner):
        raw = make_provider_record(who, cid, ["127.0.0.1:1"], now=NOW, ttl=100)
        store.put(validate(RecordKind.PROVIDER, raw, key=cid.digest, now=NOW), NOW)
    assert len(store.get(RecordKind.PROVIDER, cid.digest, NOW)) == 2


# ------------------------------------------------------------------ churn in the simulator


def test_lookups_survive_churn_in_simulation() -> None:
    net = build(2000, seed=21, config=NetConfig(rtt=0.05, jitter=0.01, timeout=0.5))
    targets = Targets(net, 6)
    targets.join_tables()
    targets.publish()
    rnd = random.Random(5)
    protected = set(targets.latest)
    for node in rnd.sample([n for n in net.nodes.values() if n.node_id not in protected], 600):
        node.alive = False  # 30 % of the network left without a word
    results = resolve_many(net, targets, lookups=150, paths=4)
    assert summarize(net, results, malicious=0.0, paths=4).success >= 0.99


# ------------------------------------------------------------------ review regressions


def test_ipv4_mapped_addresses_are_limited_like_ipv4() -> None:
    assert address_prefix("[::ffff:203.0.113.9]:1") == "203.0.113.0/24"
    assert address_prefix("127.0.0.5:1") == address_prefix("[::1]:1") == "loopback"


def test_moving_a_contact_respects_the_prefix_limits() -> None:
    table = RoutingTable(bytes(32), per_prefix_bucket=1, per_prefix_table=10)
    a, b = b"\x80" + bytes(31), b"\x81" + bytes(31)
    assert table.add(a, "203.0.113.1:1", NOW).added
    assert table.add(b, "198.51.100.1:1", NOW).added
    assert not table.add(b, "203.0.113.2:1", NOW).added  # would be a second 203.0.113/24
    assert table.get(b).address == "198.51.100.1:1"


def test_peer_records_cannot_outlive_the_maximum_ttl(owner: NodeIdentity) -> None:
    from qiz.resolve.records import MAX_TTL

    raw = PeerRecord.create(owner, ["127.0.0.1:1"], seq=1, now=NOW, lifetime=MAX_TTL * 10).raw
    with pytest.raises(RecordError, match="maximum TTL"):
        validate(RecordKind.PEER, raw, key=None, now=NOW)


def test_one_seed_still_runs_every_path_before_answering(owner: NodeIdentity) -> None:
    """A new node knows one bootstrap peer: a stale answer from it must not end the lookup."""
    seed = Contact(key(1), addr(1))
    lookup = Lookup(key(999), [seed], self_id=key(0), k=8, paths=4, want_value=True)
    stale = validate(
        RecordKind.NAME,
        make_name_record(owner, "x", "old", seq=1, now=NOW, ttl=100),
        key=ServiceName.of(owner.node_id, "x").digest,
        now=NOW,
    )
    (first,) = lookup.next_requests()
    lookup.on_response(first.node_id, [Contact(key(i), addr(i)) for i in range(2, 14)], [stale])
    assert not lookup.done  # the other three paths start from the contacts it gave
    assert all(p.candidates for p in lookup.paths)
