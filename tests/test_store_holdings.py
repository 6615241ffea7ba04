"""The holder's storage engine (qiz.store.holdings): offers, pieces, commits, leases, quotas,
collection, restarts and crashes, on real SQLite and real files."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.crypto.ids import NodeId
from qiz.identity.node_identity import NodeIdentity
from qiz.store import direct
from qiz.store.config import StoreConfig, StoreConfigError
from qiz.store.holdings import TABLE, HoldError, Holdings, Ranges, StoreCorrupt
from qiz.store.limits import MAX_LEASE, MAX_PIECE, MAX_UPLOAD_RANGES, OFFER_TTL
from qiz.store.manifest import Manifest, build_manifest
from qiz.store.merkle import table_root
from qiz.store.tree import TreeEntry

# Alice publishes the test content (her uploads are the column's trusted copy); Bob and Carol
# are other owners (pinning nodes, or peers that got hold of the manifest)
PUBLISHER = NodeIdentity.generate()
ALICE = PUBLISHER.node_id
BOB = NodeId(bytes([2]) * 32)
CAROL = NodeId(bytes([3]) * 32)
DAY = 86_400.0
CHUNK = 16 * 1024


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Content:
    manifest: Manifest
    table: bytes
    columns: list[bytes]

    @property
    def raw(self) -> bytes:
        return self.manifest.raw


@pytest.fixture(scope="module")
def publisher() -> NodeIdentity:
    return PUBLISHER


@pytest.fixture(scope="module")
def other_publisher() -> NodeIdentity:
    return NodeIdentity.generate()


def make_content(
    identity: NodeIdentity,
    size: int,
    seed: int = 0,
    k: int = 3,
    n: int = 5,
    created: int | None = None,
):
    """A public content of ``size`` random bytes: its real table and root, and columns of the
    right length (the holder never looks inside a column)."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    chunks = [data[i : i + CHUNK] for i in range(0, size, CHUNK)]
    table = b"".join(hashlib.sha256(c).digest() for c in chunks)
    manifest = build_manifest(
        identity,
        "file",
        [TreeEntry("f", "blob.bin", size)],
        size,
        CHUNK,
        table_root(table),
        k,
        n,
        created=created if created is not None else 1_700_000_000 + seed,
    )
    columns = [rng.randbytes(manifest.column_size()) for _ in range(n)]
    return Content(manifest, table, columns)


@pytest.fixture(scope="module")
def content(publisher: NodeIdentity) -> Content:
    return make_content(publisher, 100_000)


def config(**changes: object) -> StoreConfig:
    base = StoreConfig(max_bytes=64 << 20, per_peer_bytes=16 << 20)
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def holdings(clock: Clock):
    h = Holdings(None, config(), clock)
    yield h
    h.close()


def upload(h: Holdings, peer: NodeId, c: Content, index: int, *, piece: int = 40_000) -> None:
    cid = c.manifest.cid
    column = c.columns[index]
    for offset in range(0, len(column), piece):
        h.write(peer, cid, index, offset, column[offset : offset + piece])
    h.write(peer, cid, TABLE, 0, c.table)


def put(h: Holdings, peer: NodeId, c: Content, index: int, lease: float = DAY) -> float:
    assert h.offer(peer, c.raw, index, lease) is False
    upload(h, peer, c, index)
    return h.commit(peer, c.manifest.cid, index)


def code_of(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.code


# --------------------------------------------------------------------------- round trip


def test_offer_put_commit_read_round_trip(holdings: Holdings, content: Content, clock: Clock):
    cid = content.manifest.cid
    expires = put(holdings, ALICE, content, 2)
    assert expires == clock.now + DAY
    assert holdings.have(cid) == [2]
    assert holdings.manifest(cid) == content.raw
    column = content.columns[2]
    assert holdings.read(cid, 2, 0, len(column)) == column
    assert holdings.read(cid, 2, 1000, 10) == column[1000:1010]
    assert holdings.read(cid, TABLE, 0, len(content.table)) == content.table
    usage = holdings.usage()
    assert usage["bytes_stored"] == len(column) + len(content.table)
    assert usage["columns"] == 1
    assert usage["leases"] == 1
    assert usage["bytes_reserved"] == 0
    # only the complete column is served
    with pytest.raises(HoldError) as excinfo:
        holdings.read(cid, 1, 0, 10)
    assert code_of(excinfo) == "not-found"


@pytest.fixture(scope="module")
def large_content(publisher: NodeIdentity) -> Content:
    """Columns over DIRECT_FROM: written and read around the page cache."""
    return make_content(publisher, 4 * direct.DIRECT_FROM, seed=9)


@pytest.mark.parametrize("seed", range(6))
def test_a_large_column_lands_whole_from_pieces_in_any_order(
    holdings: Holdings, large_content: Content, seed: int
):
    """Pieces of uneven sizes, mostly in order (written directly), some swapped, some sent
    twice (written plainly): the committed column reads back bit-identical at any offset,
    and a commit tried before the last piece is incomplete and leaves the rest to land."""
    rng = random.Random(seed)
    c = large_content
    cid, index = c.manifest.cid, seed % c.manifest.n
    column = c.columns[index]
    assert len(column) >= direct.DIRECT_FROM
    cuts, at = [], 0
    while at < len(column):
        size = rng.choice([1, 4095, 4096, 50_001, MAX_PIECE])
        cuts.append((at, column[at : at + size]))
        at += size
    for i in range(0, len(cuts) - 1, 4):  # swap some neighbours
        if rng.random() < 0.5:
            cuts[i], cuts[i + 1] = cuts[i + 1], cuts[i]
    cuts += rng.sample(cuts, 3)  # retransmissions
    last = cuts.pop(rng.randrange(len(cuts) // 2, len(cuts)))
    assert holdings.offer(ALICE, c.raw, index, DAY) is False
    holdings.write(ALICE, cid, TABLE, 0, c.table)
    for offset, piece in cuts:
        holdings.write(ALICE, cid, index, offset, piece)
    if not any(o == last[0] for o, _ in cuts):
        with pytest.raises(HoldError) as excinfo:
            holdings.commit(ALICE, cid, index)
        assert code_of(excinfo) == "incomplete"
    holdings.write(ALICE, cid, index, *last)
    holdings.commit(ALICE, cid, index)
    assert holdings.read(cid, index, 0, MAX_PIECE) == column[:MAX_PIECE]
    for _ in range(20):
        offset = rng.randrange(len(column))
        length = rng.randrange(min(MAX_PIECE, len(column) - offset) + 1)
        assert holdings.read(cid, index, offset, length) == column[offset : offset + length]
    key = Holdings.storage_key(c.manifest, index, ALICE.digest)
    assert holdings.column_path(key).read_bytes() == column


def test_two_columns_of_one_content_share_the_table(holdings: Holdings, content: Content):
    put(holdings, ALICE, content, 0)
    put(holdings, ALICE, content, 4)
    assert holdings.have(content.manifest.cid) == [0, 4]
    usage = holdings.usage()
    assert usage["tables"] == 1
    assert usage["bytes_stored"] == 2 * len(content.columns[0]) + len(content.table)


def test_an_empty_content_is_held(holdings: Holdings, publisher: NodeIdentity):
    empty = make_content(publisher, 0, seed=9)
    assert empty.manifest.column_size() == 0
    assert holdings.offer(ALICE, empty.raw, 0, DAY) is False
    holdings.commit(ALICE, empty.manifest.cid, 0)
    assert holdings.have(empty.manifest.cid) == [0]
    assert holdings.read(empty.manifest.cid, 0, 0, 0) == b""


def test_the_lease_is_at_most_max_lease(holdings: Holdings, content: Content, clock: Clock):
    assert put(holdings, ALICE, content, 0, lease=10 * MAX_LEASE) == clock.now + MAX_LEASE


# --------------------------------------------------------------------------- dedup


def test_a_held_column_offered_again_adds_only_a_lease(
    holdings: Holdings, content: Content, clock: Clock
):
    put(holdings, ALICE, content, 1)
    before = holdings.usage()["bytes_stored"]
    assert holdings.offer(BOB, content.raw, 1, 2 * DAY) is True
    # nothing to send: a put is refused, a commit confirms the lease
    with pytest.raises(HoldError) as excinfo:
        holdings.write(BOB, content.manifest.cid, 1, 0, b"x")
    assert code_of(excinfo) == "no-offer"
    assert holdings.commit(BOB, content.manifest.cid, 1) == clock.now + 2 * DAY
    assert holdings.usage()["bytes_stored"] == before
    assert holdings.usage()["leases"] == 2
    # Alice's release leaves Bob's lease and the column
    holdings.release(ALICE, content.manifest.cid, 1)
    assert holdings.collect()["columns"] == 0
    assert holdings.have(content.manifest.cid) == [1]


def test_the_same_public_bytes_put_again_by_their_publisher_are_stored_once(
    holdings: Holdings, content: Content, publisher: NodeIdentity, other_publisher: NodeIdentity
):
    again = make_content(publisher, 100_000, created=1_800_000_000)  # seed 0: the same bytes
    assert again.manifest.cid != content.manifest.cid
    assert again.manifest.column_key(3) == content.manifest.column_key(3)
    put(holdings, ALICE, content, 3)
    assert holdings.offer(BOB, again.raw, 3, DAY) is True
    assert holdings.have(again.manifest.cid) == [3]
    assert holdings.manifest(again.manifest.cid) == again.raw
    assert holdings.usage()["columns"] == 1
    # another publisher of the same bytes is not told "already held": its column is its own
    twin = make_content(other_publisher, 100_000)
    assert twin.manifest.column_key(3) != content.manifest.column_key(3)
    assert holdings.offer(BOB, twin.raw, 3, DAY) is False


def test_a_column_sent_by_another_owner_vouches_only_for_that_owner(
    holdings: Holdings, content: Content
):
    """Bob got the manifest and sends garbage as column 2 before Alice (the publisher) does:
    Alice is not told it is held, her copy is kept apart and served first; Carol is told it
    is held once Alice's copy is in, not before."""
    cid = content.manifest.cid
    garbage = Content(content.manifest, content.table, [bytes(len(c)) for c in content.columns])
    put(holdings, BOB, garbage, 2)
    assert holdings.offer(CAROL, content.raw, 2, DAY) is False
    holdings.release(CAROL, cid, 2)
    assert holdings.offer(BOB, content.raw, 2, DAY) is True  # his own copy
    put(holdings, ALICE, content, 2)  # not "held": Alice sends hers
    assert holdings.read(cid, 2, 0, 100) == content.columns[2][:100]
    assert holdings.offer(CAROL, content.raw, 2, DAY) is True
    assert holdings.usage()["columns"] == 2
    # Bob's copy goes with his lease; Alice's stays
    holdings.release(BOB, cid, 2)
    assert holdings.collect()["columns"] == 1
    assert holdings.read(cid, 2, 0, 100) == content.columns[2][:100]
    assert holdings.column_path(content.manifest.column_key(2)).exists()


# --------------------------------------------------------------------------- puts


def test_a_put_without_an_offer_is_no_offer(holdings: Holdings, content: Content):
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, content.manifest.cid, 0, 0, b"data")
    assert code_of(excinfo) == "no-offer"
    # another peer's offer does not let this one write
    holdings.offer(BOB, content.raw, 0, DAY)
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, content.manifest.cid, 0, 0, b"data")
    assert code_of(excinfo) == "no-offer"
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, content.manifest.cid, TABLE, 0, b"data")
    assert code_of(excinfo) == "no-offer"


def test_a_lapsed_offer_takes_no_more_bytes(holdings: Holdings, content: Content, clock: Clock):
    holdings.offer(ALICE, content.raw, 0, DAY)
    holdings.write(ALICE, content.manifest.cid, 0, 0, b"early")
    clock.now += OFFER_TTL + 1
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, content.manifest.cid, 0, 5, b"late")
    assert code_of(excinfo) == "no-offer"
    assert holdings.collect()["offers"] == 1
    assert list((holdings.root / "parts").iterdir()) == []
    assert holdings.usage()["bytes_reserved"] == 0


def test_puts_keep_an_offer_alive(holdings: Holdings, content: Content, clock: Clock):
    """OFFER_TTL bounds the time without a put: a slow upload keeps its reservation, through
    collections, until it stops sending."""
    cid = content.manifest.cid
    column = content.columns[0]
    holdings.offer(ALICE, content.raw, 0, DAY)
    for offset in range(0, len(column), 10_000):
        clock.now += OFFER_TTL * 0.6
        holdings.write(ALICE, cid, 0, offset, column[offset : offset + 10_000])
        assert holdings.collect()["offers"] == 0
    clock.now += OFFER_TTL * 0.6
    holdings.write(ALICE, cid, TABLE, 0, content.table)
    holdings.commit(ALICE, cid, 0)
    assert holdings.have(cid) == [0]
    # an upload that stops sending lapses
    holdings.offer(ALICE, content.raw, 1, DAY)
    holdings.write(ALICE, cid, 1, 0, column[:100])
    clock.now += OFFER_TTL + 1
    assert holdings.collect()["offers"] == 1
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, cid, 1, 100, column[100:200])
    assert code_of(excinfo) == "no-offer"


@pytest.mark.parametrize(
    ("part", "offset", "length"),
    [(0, -1, 1), (0, None, 1), (0, None, 0), (TABLE, 0, None), (TABLE, 1 << 40, 1)],
)
def test_pieces_outside_the_offered_bounds_are_out_of_range(
    holdings: Holdings, content: Content, part: int, offset: int | None, length: int | None
):
    holdings.offer(ALICE, content.raw, 0, DAY)
    size = len(content.columns[0]) if part == 0 else len(content.table)
    if offset is None:
        offset = size if length == 1 else size + 1
    if length is None:
        length = size + 1
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, content.manifest.cid, part, offset, b"\0" * length)
    assert code_of(excinfo) == "out-of-range"


def test_a_piece_over_max_piece_is_refused(holdings: Holdings, publisher: NodeIdentity):
    big = make_content(publisher, 2 * MAX_PIECE + 1000, seed=3, k=1, n=1)
    holdings.offer(ALICE, big.raw, 0, DAY)
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, big.manifest.cid, 0, 0, bytes(MAX_PIECE + 1))
    assert code_of(excinfo) == "out-of-range"
    holdings.write(ALICE, big.manifest.cid, 0, 0, bytes(MAX_PIECE))


def test_overlapping_and_repeated_pieces_do_not_complete_a_column(
    holdings: Holdings, content: Content
):
    cid = content.manifest.cid
    column = content.columns[0]
    size = len(column)
    holdings.offer(ALICE, content.raw, 0, DAY)
    holdings.write(ALICE, cid, TABLE, 0, content.table)
    # the first half, sent three times and overlapping itself; the last byte; not the middle
    for _ in range(3):
        holdings.write(ALICE, cid, 0, 0, column[: size // 2])
    holdings.write(ALICE, cid, 0, 100, column[100 : size // 2])
    holdings.write(ALICE, cid, 0, size - 1, column[-1:])
    with pytest.raises(HoldError) as excinfo:
        holdings.commit(ALICE, cid, 0)
    assert code_of(excinfo) == "incomplete"
    assert holdings.have(cid) == []
    holdings.write(ALICE, cid, 0, size // 2 - 10, column[size // 2 - 10 : size - 1])
    holdings.commit(ALICE, cid, 0)
    assert holdings.read(cid, 0, 0, size) == column


def test_a_missing_table_is_incomplete(holdings: Holdings, content: Content):
    cid = content.manifest.cid
    holdings.offer(ALICE, content.raw, 0, DAY)
    holdings.write(ALICE, cid, 0, 0, content.columns[0])
    holdings.write(ALICE, cid, TABLE, 0, content.table[:-1])
    with pytest.raises(HoldError) as excinfo:
        holdings.commit(ALICE, cid, 0)
    assert code_of(excinfo) == "incomplete"


def test_too_many_gaps_are_refused(holdings: Holdings, publisher: NodeIdentity):
    big = make_content(publisher, 1_000_000, seed=4, k=1, n=1)
    holdings.offer(ALICE, big.raw, 0, DAY)
    for i in range(MAX_UPLOAD_RANGES):
        holdings.write(ALICE, big.manifest.cid, 0, 2 * i, b"x")
    with pytest.raises(HoldError) as excinfo:
        holdings.write(ALICE, big.manifest.cid, 0, 2 * MAX_UPLOAD_RANGES, b"x")
    assert code_of(excinfo) == "out-of-range"
    holdings.write(ALICE, big.manifest.cid, 0, 1, b"x")  # filling a gap still works


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 64),
    pieces=st.lists(st.tuples(st.integers(0, 70), st.integers(0, 20)), max_size=30),
)
def test_ranges_cover_exactly_the_bytes_written(size: int, pieces: list[tuple[int, int]]):
    ranges = Ranges(limit=1000)
    written: set[int] = set()
    for start, length in pieces:
        assert ranges.add(start, start + length)
        written |= set(range(start, start + length))
    assert ranges.covers(size) == (set(range(size)) <= written)
    assert sorted(ranges.starts) == ranges.starts
    assert all(e < s for e, s in zip(ranges.ends, ranges.starts[1:], strict=False))
    assert sum(e - s for s, e in zip(ranges.starts, ranges.ends, strict=True)) == len(written)


# --------------------------------------------------------------------------- commits


def test_a_wrong_table_is_bad_table_and_can_be_sent_again(holdings: Holdings, content: Content):
    cid = content.manifest.cid
    holdings.offer(ALICE, content.raw, 0, DAY)
    holdings.write(ALICE, cid, 0, 0, content.columns[0])
    wrong = bytearray(content.table)
    wrong[5] ^= 1
    holdings.write(ALICE, cid, TABLE, 0, bytes(wrong))
    with pytest.raises(HoldError) as excinfo:
        holdings.commit(ALICE, cid, 0)
    assert code_of(excinfo) == "bad-table"
    assert holdings.have(cid) == []
    with pytest.raises(HoldError) as excinfo:  # the bad table's bytes were forgotten
        holdings.commit(ALICE, cid, 0)
    assert code_of(excinfo) == "incomplete"
    holdings.write(ALICE, cid, TABLE, 0, content.table)
    holdings.commit(ALICE, cid, 0)
    assert holdings.have(cid) == [0]


def test_a_commit_failing_at_the_index_can_be_retried(
    holdings: Holdings, content: Content, monkeypatch: pytest.MonkeyPatch
):
    """A full disk when the rows are written: the commit fails, nothing is served, the offer
    is not left half-committed, and the owner's retry succeeds."""
    cid = content.manifest.cid
    holdings.offer(ALICE, content.raw, 0, DAY)
    upload(holdings, ALICE, content, 0)
    real = holdings.db

    class FullDisk:
        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith("INSERT OR REPLACE INTO leases"):
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(holdings, "db", FullDisk())
    with pytest.raises(sqlite3.OperationalError):
        holdings.commit(ALICE, cid, 0)
    monkeypatch.setattr(holdings, "db", real)
    assert not real.in_transaction
    assert holdings.have(cid) == []
    assert holdings.usage()["columns"] == 0  # the column row was rolled back with the lease
    upload(holdings, ALICE, content, 0)
    holdings.commit(ALICE, cid, 0)
    assert holdings.read(cid, 0, 0, 50) == content.columns[0][:50]


def test_a_release_during_a_commit_cleans_up(holdings: Holdings, content: Content):
    cid = content.manifest.cid
    holdings.offer(ALICE, content.raw, 0, DAY)
    upload(holdings, ALICE, content, 0)
    checked = holdings.prepare(ALICE, cid, 0)
    with pytest.raises(HoldError) as excinfo:  # no second offer while committing
        holdings.offer(ALICE, content.raw, 0, DAY)
    assert code_of(excinfo) == "too-many-offers"
    holdings.release(ALICE, cid, 0)
    Holdings.finish(checked)
    with pytest.raises(HoldError) as excinfo:
        holdings.complete(checked)
    assert code_of(excinfo) == "no-offer"
    assert holdings.have(cid) == []
    assert list((holdings.root / "parts").iterdir()) == []


# --------------------------------------------------------------------------- quotas


def test_a_peer_over_its_quota_is_refused_before_any_byte(clock: Clock, content: Content):
    per_peer = len(content.columns[0]) + len(content.table)
    h = Holdings(None, config(per_peer_bytes=per_peer + 10), clock)
    try:
        assert h.offer(ALICE, content.raw, 0, DAY) is False  # reserved: counts already
        with pytest.raises(HoldError) as excinfo:
            h.offer(ALICE, content.raw, 1, DAY)
        assert code_of(excinfo) == "quota"
        assert str(excinfo.value) == (
            f"quota: peer {ALICE.short()} would hold {2 * per_peer} bytes over its "
            f"{per_peer + 10}-byte quota"
        )
        assert h.offer(BOB, content.raw, 1, DAY) is False  # others have their own
        h.offer(ALICE, content.raw, 0, DAY)  # the same offer again replaces, fits
    finally:
        h.close()


def test_a_full_node_refuses(clock: Clock, content: Content):
    one = len(content.columns[0]) + len(content.table)
    h = Holdings(None, config(max_bytes=2 * one), clock)
    try:
        put(h, ALICE, content, 0)
        h.offer(BOB, content.raw, 1, DAY)
        with pytest.raises(HoldError) as excinfo:
            h.offer(BOB, content.raw, 2, DAY)
        assert code_of(excinfo) == "full"
        assert str(excinfo.value) == (
            f"full: this node holds {one} bytes and has promised {one} more; "
            f"{one} further bytes would pass its {2 * one}-byte limit"
        )
        # a held column still takes new leases: it costs no disk
        assert h.offer(BOB, content.raw, 0, DAY) is True
        # the reservation lapses and frees room
        clock.now += OFFER_TTL + 1
        h.collect()
        assert h.offer(BOB, content.raw, 2, DAY) is False
    finally:
        h.close()


def test_leases_per_peer_are_bounded(clock: Clock, content: Content):
    h = Holdings(None, config(max_leases_per_peer=2), clock)
    try:
        h.offer(ALICE, content.raw, 0, DAY)
        h.offer(ALICE, content.raw, 1, DAY)
        with pytest.raises(HoldError) as excinfo:
            h.offer(ALICE, content.raw, 2, DAY)
        assert code_of(excinfo) == "quota"
        assert "2 leases and offers" in str(excinfo.value)
    finally:
        h.close()


def test_bad_manifests_and_indices_are_refused(holdings: Holdings, content: Content):
    for raw in (b"", b"\xa0", content.raw[:-1], content.raw + b"\0", bytes(200_000)):
        with pytest.raises(HoldError) as excinfo:
            holdings.offer(ALICE, raw, 0, DAY)
        assert code_of(excinfo) == "bad-manifest"
    with pytest.raises(HoldError) as excinfo:
        holdings.offer(ALICE, content.raw, 5, DAY)
    assert code_of(excinfo) == "bad-request"
    assert holdings.usage()["offers"] == 0


# --------------------------------------------------------------------------- leases


def test_reads_remember_a_column_only_while_its_lease_holds(
    holdings: Holdings, content: Content, clock: Clock
):
    """A holder remembers where a column it serves is (a get reads it a piece at a time), but
    a release, an expiry or a lease moved to another owner's copy is seen by the next read."""
    cid = content.manifest.cid
    column = content.columns[0]
    put(holdings, ALICE, content, 0, lease=DAY)
    assert holdings.read(cid, 0, 0, 100) == column[:100]
    assert holdings.read(cid, 0, 100, 100) == column[100:200]  # from memory
    holdings.release(ALICE, cid, 0)
    with pytest.raises(HoldError) as excinfo:
        holdings.read(cid, 0, 0, 100)
    assert code_of(excinfo) == "not-found"
    # Bob leases the column (still on disk: nothing collected it), so it reads again
    assert holdings.offer(BOB, content.raw, 0, DAY) is True
    assert holdings.read(cid, 0, 0, 100) == column[:100]
    clock.now += DAY + 1  # expired, nothing written since the read
    with pytest.raises(HoldError) as excinfo:
        holdings.read(cid, 0, 0, 100)
    assert code_of(excinfo) == "not-found"


def test_leases_expire_and_collect_frees_the_bytes(
    holdings: Holdings, content: Content, clock: Clock
):
    cid = content.manifest.cid
    put(holdings, ALICE, content, 0, lease=DAY)
    put(holdings, ALICE, content, 1, lease=3 * DAY)
    column0 = holdings.column_path(content.manifest.column_key(0))
    assert column0.exists()
    clock.now += DAY + 1
    assert holdings.have(cid) == [1]  # expired: not served, even before collection
    with pytest.raises(HoldError) as excinfo:
        holdings.read(cid, 0, 0, 1)
    assert code_of(excinfo) == "not-found"
    with pytest.raises(HoldError) as excinfo:
        holdings.renew(ALICE, cid, 0, DAY)
    assert code_of(excinfo) == "no-lease"
    freed = holdings.collect()
    assert freed == {
        "freed_bytes": len(content.columns[0]),
        "columns": 1,
        "tables": 0,
        "leases": 1,
        "offers": 0,
    }
    assert not column0.exists()
    # renewing keeps column 1 past its first expiry
    assert holdings.renew(ALICE, cid, 1, 5 * DAY) == clock.now + 5 * DAY
    clock.now += 4 * DAY
    assert holdings.have(cid) == [1]
    clock.now += 2 * DAY
    assert holdings.collect()["freed_bytes"] == len(content.columns[1]) + len(content.table)
    assert holdings.usage()["bytes_stored"] == 0
    assert holdings.manifest(cid) is None
    assert not any(p.is_file() for p in holdings.root.rglob("*") if p.suffix != ".sqlite")


def test_only_the_owner_renews_or_releases_its_lease(holdings: Holdings, content: Content):
    cid = content.manifest.cid
    put(holdings, ALICE, content, 0)
    for call in (
        lambda: holdings.renew(BOB, cid, 0, DAY),
        lambda: holdings.release(BOB, cid, 0),
    ):
        with pytest.raises(HoldError) as excinfo:
            call()
        assert code_of(excinfo) == "no-lease"
    holdings.release(ALICE, cid, 0)
    assert holdings.have(cid) == []
    assert holdings.collect()["columns"] == 1


# --------------------------------------------------------------------------- restarts


def test_a_restart_keeps_complete_columns_and_leases(
    tmp_path: Path, content: Content, clock: Clock
):
    h = Holdings(tmp_path, config(), clock)
    cid = content.manifest.cid
    expires = put(h, ALICE, content, 2)
    h.close()
    h = Holdings(tmp_path, config(), clock)
    try:
        assert h.recovered == {"parts": 0, "offers": 0, "stray": 0, "missing": 0}
        assert h.have(cid) == [2]
        assert h.read(cid, 2, 0, len(content.columns[2])) == content.columns[2]
        assert h.manifest(cid) == content.raw
        assert h.renew(ALICE, cid, 2, DAY) >= expires
        assert h.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        h.close()


def test_a_crash_before_commit_leaves_nothing_served(
    tmp_path: Path, content: Content, clock: Clock
):
    h = Holdings(tmp_path, config(), clock)
    cid = content.manifest.cid
    put(h, BOB, content, 4)
    h.offer(ALICE, content.raw, 0, DAY)
    upload(h, ALICE, content, 0)  # every byte in, no commit
    parts = list((h.root / "parts").iterdir())
    assert len(parts) == 2
    # a crash between a rename and its row: a column file the index does not know
    stray = h.column_path(content.manifest.column_key(1))
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(content.columns[1])
    h.db.close()  # as if killed: no cleanup ran
    h = Holdings(tmp_path, config(), clock)
    try:
        assert h.recovered["parts"] == 2
        assert h.recovered["stray"] == 1
        assert list((h.root / "parts").iterdir()) == []
        assert not stray.exists()
        assert h.have(cid) == [4]
        with pytest.raises(HoldError) as excinfo:
            h.commit(ALICE, cid, 0)  # the bytes are gone with the crash: send again
        assert code_of(excinfo) == "incomplete"
        assert h.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        upload(h, ALICE, content, 0)
        h.commit(ALICE, cid, 0)
        assert h.have(cid) == [0, 4]
    finally:
        h.close()


def test_a_column_file_lost_by_hand_is_forgotten(tmp_path: Path, content: Content, clock: Clock):
    h = Holdings(tmp_path, config(), clock)
    put(h, ALICE, content, 0)
    h.close()
    h.column_path(content.manifest.column_key(0)).write_bytes(b"short")
    h = Holdings(tmp_path, config(), clock)
    try:
        assert h.recovered["missing"] == 1
        assert h.have(content.manifest.cid) == []
    finally:
        h.close()


def test_index_changes_are_all_or_nothing(tmp_path: Path, content: Content, clock: Clock):
    """The connection is in autocommit mode: a transaction must be begun explicitly, or a
    failure half-way would leave half the rows (and every statement would be an fsync)."""
    h = Holdings(tmp_path, config(), clock)
    try:
        with pytest.raises(ZeroDivisionError), h._transaction():
            h.db.execute("INSERT INTO columns VALUES (?, ?, 1)", (bytes(32), 5))
            assert h.db.in_transaction
            _ = 1 / 0
        assert h.usage()["columns"] == 0
    finally:
        h.close()


def test_a_damaged_index_refuses_to_start(tmp_path: Path, clock: Clock):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.sqlite").write_bytes(os.urandom(8192))
    with pytest.raises(StoreCorrupt, match="move it aside"):
        Holdings(tmp_path, config(), clock)


def test_an_index_failing_its_integrity_check_refuses_to_start(
    tmp_path: Path, content: Content, clock: Clock
):
    h = Holdings(tmp_path, config(), clock)
    put(h, ALICE, content, 0)
    h.close()
    db = sqlite3.connect(tmp_path / "store" / "store.sqlite")
    db.execute("PRAGMA writable_schema=ON")
    # the index's b-tree holds owners, its schema now says expiry times: rows "missing"
    db.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX leases_owner ON leases (expires)' "
        "WHERE name = 'leases_owner'"
    )
    db.commit()
    db.close()
    with pytest.raises(StoreCorrupt, match=r"failed its integrity check \(row 1 missing"):
        Holdings(tmp_path, config(), clock)


# --------------------------------------------------------------------------- config


def test_config_from_table_reads_known_keys():
    got = StoreConfig.from_table(
        {"max_bytes": 1 << 30, "per_peer_bytes": 1 << 20, "lease_seconds": 7200, "k": 2, "n": 4}
    )
    assert (got.max_bytes, got.per_peer_bytes, got.lease_seconds, got.k, got.n) == (
        1 << 30,
        1 << 20,
        7200.0,
        2,
        4,
    )
    assert isinstance(got.lease_seconds, float)
    assert StoreConfig.from_table({}) == StoreConfig()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("no", r"\[store\] must be a table"),
        ({"max_byte": 5}, r"store\.max_byte is not a \[store\] setting"),
        ({"max_bytes": "8G"}, r"store\.max_bytes must be a whole number"),
        ({"max_bytes": True}, r"store\.max_bytes must be a whole number"),
        ({"max_bytes": 1.5}, r"store\.max_bytes must be a whole number"),
        ({"per_peer_bytes": -1}, r"store\.per_peer_bytes must be a whole number from 0 to \d+$"),
        ({"lease_seconds": float("nan")}, r"store\.lease_seconds must be a number"),
        ({"enabled": 1}, r"store\.enabled must be true or false"),
        ({"k": 4, "n": 3}, r"store\.k must be between 1 and store\.n"),
        ({"renew_every": 7200, "lease_seconds": 3600}, r"renew_every must be shorter"),
    ],
)
def test_config_from_table_refuses_with_one_line(table: object, message: str):
    with pytest.raises(StoreConfigError, match=message) as excinfo:
        StoreConfig.from_table(table)
    assert "\n" not in str(excinfo.value)


# --------------------------------------------------------------------------- random sequences

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["offer", "send", "send-half", "commit", "renew", "release", "wait", "collect"]
        ),
        st.sampled_from([ALICE, BOB]),
        st.integers(0, 4),
        st.sampled_from([60.0, 700.0, DAY / 2, 2 * DAY]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_any_sequence_serves_only_whole_columns_and_leaves_nothing_behind(ops, content: Content):
    """Offers, pieces, commits, renewals, releases, time and collections in any order: only
    HoldError is ever raised, whatever is served is a whole column's right bytes, and once
    every lease has lapsed a collection leaves no row, no file and no reservation."""
    clock = Clock()
    h = Holdings(None, config(), clock)
    cid = content.manifest.cid
    try:
        for op, peer, index, seconds in ops:
            try:
                if op == "offer":
                    h.offer(peer, content.raw, index, seconds)
                elif op == "send":
                    upload(h, peer, content, index)
                elif op == "send-half":
                    h.write(peer, cid, index, 0, content.columns[index][:1000])
                elif op == "commit":
                    h.commit(peer, cid, index)
                elif op == "renew":
                    h.renew(peer, cid, index, seconds)
                elif op == "release":
                    h.release(peer, cid, index)
                elif op == "wait":
                    clock.now += seconds
                else:
                    h.collect()
            except HoldError:
                pass
            for j in h.have(cid):
                size = len(content.columns[j])
                assert h.read(cid, j, 0, size) == content.columns[j]
            assert h.usage()["bytes_reserved"] == sum(
                size for (size,) in h.db.execute("SELECT column_size + table_size FROM offers")
            )
        clock.now += MAX_LEASE + OFFER_TTL + 1
        h.collect()
        usage = h.usage()
        assert (usage["bytes_stored"], usage["bytes_reserved"], usage["offers"]) == (0, 0, 0)
        assert h.db.execute("SELECT COUNT(*) FROM manifests").fetchone() == (0,)
        assert [p for p in h.root.rglob("*") if p.is_file()] == []
    finally:
        h.close()


def test_a_column_is_due_for_an_early_flush_every_early_flush_bytes(
    publisher: NodeIdentity, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write() hands back the column's part file once per EARLY_FLUSH bytes (the holder
    flushes it in the background so that the commit's fsync waits for little); the table
    never is, and the column still commits."""
    from qiz.store import holdings as holdings_module

    monkeypatch.setattr(holdings_module, "EARLY_FLUSH", 64 * 1024)
    content = make_content(publisher, 600_000, seed=7)
    h = Holdings(None, config(), clock)
    try:
        h.offer(ALICE, content.raw, 0, DAY)
        cid, column = content.manifest.cid, content.columns[0]
        due = []
        for offset in range(0, len(column), 16 * 1024):
            path = h.write(ALICE, cid, 0, offset, column[offset : offset + 16 * 1024])
            if path is not None:
                due.append(path)
        assert len(due) == len(column) // (64 * 1024)
        assert {p.name for p in due} == {due[0].name} and due[0].name.endswith(".part")
        assert h.write(ALICE, cid, TABLE, 0, content.table) is None
        h.commit(ALICE, cid, 0)
        assert h.have(cid) == [0]
    finally:
        h.close()
