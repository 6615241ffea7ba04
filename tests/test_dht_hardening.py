"""The DHT under attack (issue 13, items 2, 3 and 4), replayed against real node processes.

* Integers a record carries (seq, expiry) must fit SQLite's signed 64 bits: at 2**63 and
  2**64-1 a ``dht/1.store`` is refused as a bad record (it used to answer ``internal``), and a
  bootstrap peer presenting such a record cannot stop a node from joining.
* A signer whose quota is full can still replace its own records with newer ones.
* A record-store flood over one link is bounded: stores are rate-limited per peer and per
  signer, signers must solve the id puzzle, and the store keeps to its byte budget by evicting
  the flood's own records first, so honest records stay stored and resolvable.

The attacker is always a client written here (``tests/helpers.client``: a bare QMP link with
an identity of its own); the node under attack is a ``qiz node start`` process configured
through its ``config.toml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz import wire
from qiz.crypto.ids import ServiceName
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import CONTEXT, PeerRecordError
from qiz.identity.puzzle import generate_identity, solves
from qiz.qmp.manager import LinkManager
from qiz.qmp.rpc import RpcEndpoint, RpcError
from qiz.resolve.records import RecordError, RecordKind, make_name_record, validate
from qiz.resolve.store import RecordStore

from .helpers import (
    NodeProcess,
    async_eventually,
    client,
    eventually,
    make_node,
    manager,
    node_processes,
    node_status,
    ok_json,
    qiz,
    run,
    running,
)

STORE = "dht/1.store"
FIND_VALUE = "dht/1.find_value"
BITS = 4  # the id puzzle of the nodes under test: 16 tries per id, yet a real check
TOO_BIG = (2**63, 2**64 - 1)


# ----------------------------------------------------------------------------- helpers


def forged_peer_record(identity: NodeIdentity, addresses: list[str], *, seq: int) -> PeerRecord:
    """A correctly signed peer record whatever ``seq`` is (PeerRecord.create would refuse a
    number out of range): what an attacker, or another implementation, can send."""
    now = time.time()
    body = {
        "v": 1,
        "id": identity.node_id.digest,
        "sk": identity.public_key.raw,
        "xk": identity.xwing_public.raw,
        "addrs": addresses,
        "seq": seq,
        "exp": int(now) + 3600,
    }
    raw = wire.encode({**body, "sig": identity.sign(wire.encode(body), CONTEXT)})
    return PeerRecord(
        identity.node_id,
        identity.public_key,
        identity.xwing_public,
        tuple(addresses),
        seq,
        body["exp"],
        raw,
    )


def name_record(owner: NodeIdentity, label: str, *, seq: int = 1, value: str = "v") -> bytes:
    return make_name_record(owner, label, value, seq=seq, now=time.time(), ttl=600)


def forged_name_record(owner: NodeIdentity, label: str, *, seq: int) -> bytes:
    """A signed name record with any ``seq`` (make_name_record refuses what is out of range)."""
    body = {
        "v": 1,
        "owner": owner.public_key.raw,
        "label": label,
        "value": "v",
        "seq": seq,
        "exp": int(time.time()) + 600,
    }
    return wire.encode({**body, "sig": owner.sign(wire.encode(body), "qiz/name-record/v1")})


def make_home(cwd: Path, name: str, **dht: Any) -> str:
    """``qiz init`` a home in ``cwd`` and set ``[dht]`` settings in its config.toml."""
    ok_json(qiz(cwd, "--home", name, "init", "--json"))
    path = cwd / name / "config.toml"
    config = tomllib.loads(path.read_text())
    config["dht"] = {**config.get("dht", {}), "puzzle_bits": BITS, **dht}
    path.write_bytes(tomli_w.dumps(config).encode())
    return name


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """``start(name, peers=(), **dht)``: a node process whose home has those [dht] settings."""
    with node_processes(tmp_path) as start:

        def start_with(name: str, peers: tuple[str, ...] = (), **dht: Any) -> NodeProcess:
            return start(make_home(tmp_path, name, **dht), peers=peers)

        yield start_with


async def store(rpc: RpcEndpoint, raw: bytes, kind: str = "name") -> tuple[str, str]:
    """One ``dht/1.store``: ("stored" | "unchanged", "") or (error code, message)."""
    try:
        reply = await rpc.call(STORE, {"kind": kind, "raw": raw}, timeout=10)
    except RpcError as exc:
        return exc.code, exc.message
    return reply["result"], ""


async def held(rpc: RpcEndpoint, key: bytes, kind: str = "name") -> list[bytes]:
    reply = await rpc.call(FIND_VALUE, {"key": key, "kind": kind}, timeout=10)
    return reply["records"]


def name_key(owner: NodeIdentity, label: str) -> bytes:
    return ServiceName.of(owner.node_id, label).digest


def store_size(node: NodeProcess) -> tuple[int, int]:
    """Rows and raw bytes of the node's records.sqlite, read beside the running node (WAL)."""
    db = sqlite3.connect(f"file:{node.cwd / node.home / 'records.sqlite'}?mode=ro", uri=True)
    try:
        rows, raw = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(raw)), 0) FROM records"
        ).fetchone()
    finally:
        db.close()
    return rows, raw


# ----------------------------------------------------------------------------- item 2: seq range


@settings(max_examples=40, deadline=None)
@given(seq=st.one_of(st.integers(-(2**64), 2**64 - 1), st.sampled_from([2**63 - 1, *TOO_BIG])))
def test_a_record_validates_only_if_its_integers_fit_sqlite(seq: int) -> None:
    """Property: a name record or a peer record with any CBOR integer as its seq validates iff
    0 <= seq <= 2**63-1, and whatever validates is stored without an error."""
    owner = _OWNER
    store_ = RecordStore()
    now = time.time()
    fits = 0 <= seq <= 2**63 - 1
    for kind, raw in (
        (RecordKind.NAME, forged_name_record(owner, "x", seq=seq)),
        (RecordKind.PEER, forged_peer_record(owner, ["127.0.0.1:1"], seq=seq).raw),
    ):
        try:
            record = validate(kind, raw, key=None, now=now)
        except RecordError as exc:
            assert not fits, exc
            assert "2**63-1" in str(exc) and "\n" not in str(exc)
            continue
        assert fits
        assert store_.put(record, now).value == "stored"
        assert store_.newest(kind, record.key, record.holder, now).seq == seq


_OWNER = NodeIdentity.generate()


def test_signing_a_record_with_an_unstorable_seq_is_refused() -> None:
    owner = _OWNER
    for seq in (*TOO_BIG, -1):
        with pytest.raises(RecordError, match="2\\*\\*63-1"):
            make_name_record(owner, "x", "v", seq=seq, now=time.time(), ttl=60)
        with pytest.raises(PeerRecordError, match="2\\*\\*63-1"):
            PeerRecord.create(owner, [], seq=seq, now=time.time())


def test_store_refuses_sequence_numbers_sqlite_cannot_hold(nodes) -> None:
    """The attack: ``dht/1.store`` of validly signed records whose seq is 2**63 or 2**64-1.
    They used to pass validation and overflow SQLite (``internal``, a traceback in the log)."""
    target = nodes("target")
    signer = generate_identity(BITS)

    async def attack() -> None:
        link, rpc = await client(target.address, generate_identity(BITS))
        try:
            edge = await store(rpc, forged_name_record(signer, "edge", seq=2**63 - 1))
            assert edge == ("stored", "")
            assert len(await held(rpc, name_key(signer, "edge"))) == 1
            for seq in TOO_BIG:
                code, message = await store(rpc, forged_name_record(signer, f"n{seq}", seq=seq))
                assert code == "bad-record" and "seq" in message and "2**63-1" in message
                peer = forged_peer_record(signer, ["127.0.0.1:9"], seq=seq).raw
                code, message = await store(rpc, peer, kind="peer")
                assert code == "bad-record" and "sequence number" in message, message
            code, message = await store(rpc, forged_name_record(signer, "neg", seq=-1))
            assert code == "bad-record" and "2**63-1" in message
            # nothing of it reached the database, and the node still answers
            assert await held(rpc, name_key(signer, f"n{2**63}")) == []
            assert await rpc.call("qmp.ping", b"", timeout=5) is not None
        finally:
            link.close()

    run(attack(), timeout=60)
    assert target.alive()
    assert "Traceback" not in target.output()[1] and "OverflowError" not in target.output()[1]


@contextlib.contextmanager
def bad_bootstrap_peer(seq: int) -> Iterator[str]:
    """A peer (in a thread of this process) whose own signed peer record has ``seq``: every
    node that links to it is handed that record in the handshake. Yields ``id@address``."""
    identity = generate_identity(BITS)  # solves the puzzle: it is taken in
    ready = threading.Event()
    stop: dict[str, Any] = {}
    found: dict[str, str] = {}

    async def serve() -> None:
        holder: list[PeerRecord] = []
        links = LinkManager(identity, lambda: holder[0], {"qmp.ping": _pong}, config=manager())
        await links.start("127.0.0.1:0")
        holder.append(forged_peer_record(identity, [links.listener.address], seq=seq))
        found["address"] = f"{identity.node_id}@{links.listener.address}"
        stop["event"] = asyncio.Event()
        stop["loop"] = asyncio.get_running_loop()
        ready.set()
        try:
            await stop["event"].wait()
        finally:
            await links.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield found["address"]
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(30)


async def _pong(_ctx: Any, _body: Any) -> bytes:
    return b""


def test_a_node_joins_through_a_bootstrap_peer_with_a_huge_sequence_number(nodes) -> None:
    """The attack: a node's first bootstrap peer hands it a peer record with seq 2**64-1.
    Before, storing it raised OverflowError out of the link callback, the join stopped there
    and the node never published its record nor ran its DHT upkeep. Now the record is refused,
    and the node joins through its other bootstrap peer: its own record is published there
    and a name it publishes resolves from that peer."""
    honest = nodes("honest")
    with bad_bootstrap_peer(2**64 - 1) as bad:
        victim = nodes("victim", peers=(bad, honest.bootstrap))
        ended = ("joined:", "join failed", "joining the mesh failed")

        def join_ended() -> str:
            text = victim.output()[1]
            return text if any(e in text for e in ended) else ""

        log = eventually(join_ended, timeout=60, what="the victim's join to end")
        assert "joined:" in log, victim.tail()
        published = ok_json(
            qiz(victim.cwd, "--home", "victim", "name", "publish", "svc", "hello", "--json")
        )
        assert published["stored_on"] >= 1
        answer = ok_json(
            qiz(
                honest.cwd, "--home", "honest", "name", "resolve", f"{victim.node_id}/svc", "--json"
            )
        )
        assert answer["value"] == "hello"
    log = victim.output()[1]
    assert "OverflowError" not in log and "joining the mesh failed" not in log
    assert victim.alive()
    assert node_status(victim)["dht"]["contacts"] >= 1


def test_a_bad_record_from_a_bootstrap_peer_does_not_stop_dht_upkeep() -> None:
    """In process, to see the upkeep loop itself: joining through the bad peer ends with the
    DHT maintaining (it never started before)."""

    async def scenario() -> None:
        identity = NodeIdentity.generate()
        holder: list[PeerRecord] = []
        bad = LinkManager(identity, lambda: holder[0], {"qmp.ping": _pong}, config=manager())
        await bad.start("127.0.0.1:0")
        holder.append(forged_peer_record(identity, [bad.listener.address], seq=2**64 - 1))
        try:
            victim = make_node(peers=[bad.listener.address])
            async with running(victim):
                await asyncio.wait_for(victim.joined.wait(), 30)
                await async_eventually(lambda: victim.dht.maintaining, what="DHT upkeep")
                assert len(victim.dht.store) == 1  # its own record only
        finally:
            await bad.close()

    run(scenario(), timeout=60)


# ----------------------------------------------------------------------------- item 3: quota


def test_a_signer_at_its_quota_can_still_update_its_records(nodes) -> None:
    """A signer holding its full quota (3 here) is refused a new key, but replacing one of
    its records with a newer seq always fits (it used to be refused as over the quota)."""
    target = nodes("target", max_records_per_holder=3)
    signer = generate_identity(BITS)

    async def scenario() -> None:
        link, rpc = await client(target.address, generate_identity(BITS))
        try:
            for i in range(3):
                assert await store(rpc, name_record(signer, f"n{i}")) == ("stored", "")
            code, message = await store(rpc, name_record(signer, "n3"))
            assert code == "store-full" and "quota of 3" in message
            update = name_record(signer, "n0", seq=2, value="new")
            assert await store(rpc, update) == ("stored", "")
            assert await held(rpc, name_key(signer, "n0")) == [update]
        finally:
            link.close()

    run(scenario(), timeout=60)


# ----------------------------------------------------------------------------- item 4: floods


def test_a_store_flood_over_one_link_is_rate_limited(nodes) -> None:
    """The attack: one link stores records of ever new (puzzle-solving) signers as fast as
    it can. Only the peer's burst is taken, the rest is refused in one clear line, and an
    honest peer's store over its own link still goes through and resolves."""
    burst = 12
    target = nodes(
        "target",
        store_rate_per_peer=0.001,  # no refill within the test: counts, not timing
        store_burst_per_peer=burst,
    )
    signers = [generate_identity(BITS) for _ in range(4 * burst)]

    async def scenario() -> None:
        link, rpc = await client(target.address, generate_identity(BITS))
        honest_link, honest = await client(target.address, generate_identity(BITS))
        try:
            answers = [await store(rpc, name_record(s, "flood")) for s in signers]
            stored = [a for a in answers if a[0] == "stored"]
            limited = [a for a in answers if a[0] == "rate-limited"]
            assert len(stored) <= burst
            assert len(stored) + len(limited) == len(answers)
            assert "dht.store_rate_per_peer" in limited[0][1]
            owner = generate_identity(BITS)
            good = name_record(owner, "www")
            assert await store(honest, good) == ("stored", "")
            assert await held(honest, name_key(owner, "www")) == [good]
        finally:
            link.close()
            honest_link.close()

    run(scenario(), timeout=120)
    dht = node_status(target)["dht"]
    # the burst, the honest record, and the node's own peer and capacity records
    assert dht["rate_limited_stores"] >= 3 * burst and dht["records"] <= burst + 3


def test_one_signers_records_are_rate_limited_across_links(nodes) -> None:
    """The same signer's records over many links: the signer's own bucket bounds them."""
    target = nodes("target", store_rate_per_signer=0.001, store_burst_per_signer=5)
    signer = generate_identity(BITS)

    async def scenario() -> None:
        answers = []
        for batch in range(4):
            link, rpc = await client(target.address, generate_identity(BITS))
            try:
                for i in range(4):
                    answers.append(await store(rpc, name_record(signer, f"b{batch}-{i}")))
            finally:
                link.close()
        assert sum(a[0] == "stored" for a in answers) == 5
        refused = [a for a in answers if a[0] != "stored"]
        assert {code for code, _ in refused} == {"rate-limited"}
        assert "dht.store_rate_per_signer" in refused[0][1]

    run(scenario(), timeout=120)


def test_signers_and_storing_peers_must_solve_the_id_puzzle(nodes) -> None:
    target = nodes("target")

    def unsolved() -> NodeIdentity:
        while True:
            identity = NodeIdentity.generate()
            if not solves(identity.node_id.digest, BITS):
                return identity

    async def scenario() -> None:
        link, rpc = await client(target.address, generate_identity(BITS))
        try:
            code, message = await store(rpc, name_record(unsolved(), "cheap"))
            assert code == "bad-record" and f"{BITS}-bit id puzzle" in message
        finally:
            link.close()
        link, rpc = await client(target.address, unsolved())
        try:
            code, message = await store(rpc, name_record(generate_identity(BITS), "x"))
            assert code == "bad-peer" and "id puzzle" in message
        finally:
            link.close()

    run(scenario(), timeout=60)


def test_a_store_flood_keeps_to_the_byte_budget_and_evicts_the_flood_first(nodes) -> None:
    """The attack: many links store the records of a few (puzzle-solving) signers until the
    store is full. The store stays within its byte budget (about ten records here); the flood
    evicts its own records, so an honest record stored before the flood is still there and
    one stored after it is taken too. Both resolve."""
    budget = 60_000
    target = nodes(
        "target", store_max_bytes=budget, store_burst_per_signer=200, store_burst_per_peer=100
    )
    flooders = [generate_identity(BITS) for _ in range(3)]
    early, late = generate_identity(BITS), generate_identity(BITS)

    async def scenario() -> None:
        link, rpc = await client(target.address, generate_identity(BITS))
        before = name_record(early, "home")
        assert await store(rpc, before) == ("stored", "")
        link.close()
        answers = []
        for wave in range(5):  # a fresh link per wave: the per-peer limit is not what holds
            link, rpc = await client(target.address, generate_identity(BITS))
            try:
                for i in range(8):
                    for f in flooders:
                        answers.append(await store(rpc, name_record(f, f"w{wave}-{i}")))
            finally:
                link.close()
        assert {code for code, _ in answers} <= {"stored", "store-full"}
        rows, raw = store_size(target)
        assert raw + rows * 160 <= budget and rows <= 11, (rows, raw)
        link, rpc = await client(target.address, generate_identity(BITS))
        try:
            after = name_record(late, "home")
            assert await store(rpc, after) == ("stored", "")
            assert await held(rpc, name_key(early, "home")) == [before]
            assert await held(rpc, name_key(late, "home")) == [after]
        finally:
            link.close()
        rows, raw = store_size(target)
        assert raw + rows * 160 <= budget, (rows, raw)

    run(scenario(), timeout=180)
    dht = node_status(target)["dht"]  # the node's own count agrees with the file
    assert dht["store_bytes"] <= budget and dht["evicted_records"] > 0


def test_replaying_a_signers_record_does_not_spend_its_rate_limit(nodes) -> None:
    """The attack: a peer replays a victim's public record to the victim's closest node,
    many times over (above the signer's rate). Replays of what is held are answered
    ``unchanged`` for free, so the victim's own update (a newer seq) is still stored (it
    used to be refused as rate-limited: every replay took a token of the victim's bucket)."""
    target = nodes(
        "target",
        store_rate_per_signer=0.001,  # no refill within the test: counts, not timing
        store_burst_per_signer=3,
        store_burst_per_peer=100,
    )
    victim = generate_identity(BITS)

    async def scenario() -> None:
        link, rpc = await client(target.address, generate_identity(BITS))
        try:
            first = name_record(victim, "www", seq=1)
            assert await store(rpc, first) == ("stored", "")
            replays = [await store(rpc, first) for _ in range(20)]
            assert set(replays) == {("unchanged", "")}
            newer = name_record(victim, "www", seq=2, value="moved")
            assert await store(rpc, newer) == ("stored", "")
            code, _ = await store(rpc, first)  # an older record is refused, also for free
            assert code == "older-record"
            assert await held(rpc, name_key(victim, "www")) == [newer]
        finally:
            link.close()

    run(scenario(), timeout=60)


def test_stores_from_one_network_are_bounded_whatever_ids_it_mints(nodes) -> None:
    """The attack: fresh (puzzle-solving) ids, each over its own link and so with a fresh
    per-peer burst, store one record each from one network (here 127.0.0.0/24). The
    network's budget bounds them: at most its burst is stored, the rest refused in one line
    naming the setting."""
    burst = 8
    target = nodes("target", store_rate_per_prefix=0.001, store_burst_per_prefix=burst)

    async def scenario() -> None:
        answers = []
        for i in range(3 * burst):
            link, rpc = await client(target.address, generate_identity(BITS))
            try:
                answers.append(await store(rpc, name_record(generate_identity(BITS), f"f{i}")))
            finally:
                link.close()
        stored = [a for a in answers if a[0] == "stored"]
        refused = [a for a in answers if a[0] != "stored"]
        assert len(stored) == burst, answers
        assert {code for code, _ in refused} == {"rate-limited"}
        assert "dht.store_rate_per_prefix" in refused[0][1]
        assert "one network" in refused[0][1]

    run(scenario(), timeout=120)


def test_a_node_republishes_more_records_than_the_signer_burst() -> None:
    """In process, on a clock the test turns: an owner holding more of its own records than
    a receiver's per-signer burst republishes all of them, paced over upkeep rounds (it
    used to send them back to back: the receiver refused those beyond the burst, and they
    were marked published all the same, so they went missing for an hour)."""
    from qiz.resolve.dht import DhtConfig

    now = [time.time()]
    clock = lambda: now[0]  # noqa: E731
    config = DhtConfig(
        store_rate_per_signer=0.1,  # 6 tokens per 60-second round
        store_burst_per_signer=6,  # a round republishes 3
        maintenance_interval=10_000,  # the test runs the rounds itself
    )
    count = 10

    async def scenario() -> None:
        receiver = make_node(dht_config=config, clock=clock)
        async with running(receiver):
            owner = make_node(dht_config=config, clock=clock, peers=[receiver.address])
            async with running(owner):
                await asyncio.wait_for(owner.joined.wait(), 30)
                me = owner.identity
                raws = [
                    make_name_record(me, f"n{i}", "v", seq=1, now=clock(), ttl=7200)
                    for i in range(count)
                ]
                stale = clock() - config.republish_interval - 1  # published long ago
                for raw in raws:
                    record = validate(RecordKind.NAME, raw, key=None, now=clock())
                    owner.dht.store.put(record, stale)

                def received() -> int:
                    return sum(
                        bool(
                            receiver.dht.store.get(RecordKind.NAME, name_key(me, f"n{i}"), clock())
                        )
                        for i in range(count)
                    )

                for _ in range(8):  # 8 minutes: far inside republish_interval
                    await owner.dht.maintain_once()
                    now[0] += 60
                assert received() == count, received()
                assert receiver.dht.rate_limited_stores == 0

    run(scenario(), timeout=120)


# ----------------------------------------------------------------------------- units


def test_the_store_never_evicts_our_own_or_pinned_records() -> None:
    me, pinned = generate_identity(0), generate_identity(0)
    flood = generate_identity(0)
    kept = {me.node_id.digest, pinned.node_id.digest}
    now = time.time()
    one = len(name_record(me, "a")) + 160
    store_ = RecordStore(max_bytes=4 * one + 100, home=me.node_id.digest, keep=lambda: kept)
    for owner in (me, pinned):
        store_.put(validate(RecordKind.NAME, name_record(owner, "a"), key=None, now=now), now)
    for i in range(10):
        store_.put(validate(RecordKind.NAME, name_record(flood, f"f{i}"), key=None, now=now), now)
    assert store_.count_holder(me.node_id.digest) == 1
    assert store_.count_holder(pinned.node_id.digest) == 1
    assert store_.bytes <= store_.max_bytes and store_.evicted >= 8
    # our own record goes in even when nothing else can be evicted for it
    store_.keep = lambda: {*kept, flood.node_id.digest}
    for i in range(3):
        result = store_.put(
            validate(RecordKind.NAME, name_record(me, f"mine{i}"), key=None, now=now), now
        )
        assert result.value == "stored"


def test_a_flood_signer_evicts_at_most_one_honest_record() -> None:
    """Three honest signers with one record each fill the store. A flood signer's first
    record ties with them (one record each) and may take one honest slot; every later record
    of it counts two or more, so it can only replace its own: two honest records always stay,
    and the flood holds one row. A signer replacing its own record always fits."""
    now = time.time()
    owners = [generate_identity(0) for _ in range(3)]
    flood = generate_identity(0)
    one = len(name_record(owners[0], "a")) + 160
    store_ = RecordStore(max_bytes=3 * one + 100)

    def put(owner: NodeIdentity, label: str, seq: int = 1) -> str:
        raw = name_record(owner, label, seq=seq)
        return store_.put(validate(RecordKind.NAME, raw, key=None, now=now), now).value

    assert [put(o, "a") for o in owners] == ["stored"] * 3
    for i in range(10):
        put(flood, f"f{i}")
    assert sum(store_.count_holder(o.node_id.digest) for o in owners) >= 2
    assert store_.count_holder(flood.node_id.digest) <= 1
    assert len(store_) <= 3 and store_.bytes <= store_.max_bytes
    survivor = next(o for o in owners if store_.count_holder(o.node_id.digest))
    assert put(survivor, "a", seq=2) == "stored"


def test_token_buckets_count_with_the_time_passed_in() -> None:
    from qiz.ratelimit import KeyedRateLimiter

    limiter = KeyedRateLimiter(rate=2.0, burst=3, max_keys=2)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("a", 0.4) is False  # 0.8 token
    assert limiter.allow("a", 0.5) is True  # 1.0 token
    assert limiter.allow("b", 0.5) and limiter.allow("c", 0.5)
    assert len(limiter) == 2  # "a", the least recently used, was forgotten (comes back full)


def test_dht_settings_from_config_toml_are_checked() -> None:
    from qiz.resolve.dht import DhtConfig, DhtConfigError

    config = DhtConfig.from_table(
        {"store_max_bytes": 1000, "store_rate_per_peer": 0.5}, puzzle_bits=3
    )
    assert (config.store_max_bytes, config.store_rate_per_peer, config.puzzle_bits) == (
        1000,
        0.5,
        3,
    )
    for bad in (
        {"store_max_bytes": -1},
        {"store_max_bytes": 1.5},
        {"store_rate_per_peer": "x"},
        {"max_records_per_holder": True},
        {"store_max_records": 2**63},
    ):
        with pytest.raises(DhtConfigError, match=r"config\.toml: dht\."):
            DhtConfig.from_table(bad)


def test_a_bad_dht_setting_is_one_line_from_node_start(tmp_path: Path) -> None:
    make_home(tmp_path, "a", store_max_bytes=-5)
    result = qiz(tmp_path, "--home", "a", "node", "start", "--listen", "127.0.0.1:0", timeout=60)
    assert result.returncode == 2
    assert "dht.store_max_bytes" in result.stderr and "Traceback" not in result.stderr
