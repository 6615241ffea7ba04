"""The storage pool on a real mesh (issue 16, item 9): 8 in-process nodes on 127.0.0.1, real
QMP links, real SQLite and files in each node's home.

What must hold: a 64 MiB file and a directory tree come back bit-identical on another node;
with 2 of 5 holders gone the content still reads and repair restores 5 live columns; a holder
whose bytes were flipped is found, routed around and its score falls; sealed content opens for
each recipient and for nobody else; a full node refuses and placement moves on; pins and shares
survive a restart; an unknown id is a clear "not found".
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from qiz.compute.service import ComputeConfig
from qiz.crypto.ids import ContentId
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.resolve.records import RecordKind, make_provider_record
from qiz.store.config import StoreConfig
from qiz.store.errors import ContentNotFound, NotEnoughHolders, StoreError
from qiz.store.sealing import NotARecipient
from tests.helpers import make_node, run, start_mesh, stop_all

MESH = 8
MIB = 1 << 20


def store_config(**overrides: object) -> StoreConfig:
    values: dict[str, object] = {
        "renew_every": 3600.0,
        "repair_every": 3600.0,  # the tests run the upkeep themselves
        "collect_every": 3600.0,
        **overrides,
    }
    return StoreConfig(**values)  # type: ignore[arg-type]


def node_in(home: Path, identity: NodeIdentity, peers: list[str] | None, **store: object) -> Node:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return make_node(
        identity,
        peers=peers,
        control_dir=home,
        store=store_config(**store),
        compute=ComputeConfig(worker=False),
    )


def on_mesh(
    tmp_path: Path, body: Callable[[list[Node]], Awaitable[None]], timeout: float = 120
) -> None:
    """Run ``body`` on a fresh mesh of ``MESH`` nodes (stopped however it ends)."""
    identities = [NodeIdentity.generate() for _ in range(MESH)]

    async def main() -> None:
        nodes = await start_mesh(
            MESH, lambda peers, i: node_in(tmp_path / f"n{i}", identities[i], peers)
        )
        try:
            await body(nodes)
        finally:
            await stop_all(nodes)

    run(main(), timeout=timeout)


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MIB))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def by_id(nodes: list[Node], text: str) -> Node:
    return next(n for n in nodes if str(n.node_id) == text)


def test_a_64_mib_file_and_a_tree_round_trip_from_another_node(tmp_path: Path) -> None:
    async def body(mesh: list[Node]) -> None:
        source = tmp_path / "big.bin"
        digest = random_file(source, 64 * MIB + 12345)  # not a multiple of the chunk size
        owner, reader = mesh[1], mesh[6]
        put = await owner.store.put(source)
        assert put.k == 3 and put.n == 5 and put.size == source.stat().st_size
        assert len(set(put.holders)) == 5 and str(owner.node_id) not in put.holders
        got = await reader.store.get(put.cid, tmp_path / "out.bin")
        assert sha256_of(tmp_path / "out.bin") == digest
        assert got.bad_shares == 0

        # a get cancelled while its bytes are being written leaves no temp, no target and no
        # writer thread behind
        cancelled = tmp_path / "cancelled"
        cancelled.mkdir()
        task = asyncio.ensure_future(reader.store.get(put.cid, cancelled / "out.bin"))
        for _ in range(2000):
            temps = [p for p in cancelled.iterdir() if p.name.startswith(".qiz-get-")]
            if temps and temps[0].stat().st_size > 0:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list(cancelled.iterdir()) == []
        assert not [t for t in threading.enumerate() if t.name.startswith("qiz-store-writer")]

        tree = tmp_path / "tree"
        (tree / "a" / "b").mkdir(parents=True)
        (tree / "empty").mkdir()
        (tree / "a" / "b" / "x.qasm").write_text("OPENQASM 3.0;\nqubit q;\nh q;\n")
        (tree / "a" / "zero").write_bytes(b"")
        (tree / "run.sh").write_text("#!/bin/sh\necho hi\n")
        (tree / "run.sh").chmod(0o755)
        put_tree = await owner.store.put(tree, k=2, n=3)
        await reader.store.get(put_tree.cid, tmp_path / "tree-out")
        out = tmp_path / "tree-out"
        assert (out / "a" / "b" / "x.qasm").read_text() == "OPENQASM 3.0;\nqubit q;\nh q;\n"
        assert (out / "a" / "zero").read_bytes() == b""
        assert (out / "empty").is_dir()
        assert os.access(out / "run.sh", os.X_OK)

    on_mesh(tmp_path, body)


def test_two_holders_lost_still_reads_and_repair_restores_five(tmp_path: Path) -> None:
    async def body(mesh: list[Node]) -> None:
        source = tmp_path / "data.bin"
        digest = random_file(source, 3 * MIB + 7)
        owner = mesh[0]
        put = await owner.store.put(source)
        gone = [by_id(mesh, holder) for holder in put.holders[:2]]
        await stop_all(gone)
        reader = next(n for n in mesh if n not in gone and n is not owner)
        await reader.store.get(put.cid, tmp_path / "after-loss.bin")
        assert sha256_of(tmp_path / "after-loss.bin") == digest

        assert await owner.store.check(put.cid, repair=True) == "ok"
        status = await owner.store.status(put.cid)
        assert status["live"] == 5 and status["health"] == "ok"
        holders = {share["holder"] for share in status["shares"]}
        assert not holders & {str(n.node_id) for n in gone}
        assert owner.store.stats()["repairs"] == 2

    on_mesh(tmp_path, body)


def test_a_holder_flipping_bytes_is_found_and_routed_around(tmp_path: Path) -> None:
    async def body(mesh: list[Node]) -> None:
        source = tmp_path / "data.bin"
        digest = random_file(source, 2 * MIB)
        owner = mesh[2]
        put = await owner.store.put(source)
        liar = by_id(mesh, put.holders[0])  # share 0: a systematic one, read first by every get
        columns = [p for p in (liar.store.holdings.root / "columns").rglob("*") if p.is_file()]
        assert columns
        for column in columns:
            data = bytearray(column.read_bytes())
            for at in range(0, len(data), 4096):
                data[at] ^= 0xFF
            column.write_bytes(bytes(data))
        reader = next(n for n in mesh if n not in (owner, liar))
        got = await reader.store.get(put.cid, tmp_path / "out.bin")
        assert sha256_of(tmp_path / "out.bin") == digest
        assert got.bad_shares >= 1
        assert reader.store.stats()["bad_shares"] >= 1

        # the owner's audit finds it too, and repair moves its column to another holder
        await owner.store.check(put.cid, repair=True)
        status = await owner.store.status(put.cid)
        assert status["live"] == 5
        assert str(liar.node_id) not in {
            s["holder"] for s in status["shares"] if s["state"] == "ok"
        }

    on_mesh(tmp_path, body)


def test_sealed_content_opens_for_each_recipient_and_nobody_else(tmp_path: Path) -> None:
    async def body(mesh: list[Node]) -> None:
        source = tmp_path / "secret.txt"
        source.write_bytes(b"the ground state is -7.1 Ha\n" * 1000)
        owner, alice, bob, eve = mesh[0], mesh[3], mesh[4], mesh[5]
        put = await owner.store.put(source, to=[alice.record(), bob.record()])
        assert sorted(put.sealed_to) == sorted([str(alice.node_id), str(bob.node_id)])
        for recipient in (alice, bob):
            out = tmp_path / f"for-{recipient.node_id.short()}"
            await recipient.store.get(put.cid, out)
            assert out.read_bytes() == source.read_bytes()
        with pytest.raises(NotARecipient, match="not one of them"):
            await eve.store.get(put.cid, tmp_path / "eve")
        assert not (tmp_path / "eve").exists()
        for holder_id in put.holders:  # holders keep ciphertext only
            holder = by_id(mesh, holder_id)
            for column in (holder.store.holdings.root / "columns").rglob("*"):
                if column.is_file():
                    assert b"ground state" not in column.read_bytes()

    on_mesh(tmp_path, body)


def test_an_unknown_id_is_not_found_and_a_full_mesh_refuses(tmp_path: Path) -> None:
    async def body(mesh: list[Node]) -> None:
        unknown = ContentId(hashlib.sha3_256(b"nothing").digest())
        with pytest.raises(ContentNotFound, match="not found after"):
            await mesh[1].store.get(unknown, tmp_path / "nothing")
        assert not (tmp_path / "nothing").exists()

        source = tmp_path / "data.bin"
        random_file(source, 1 * MIB)
        with pytest.raises(NotEnoughHolders, match="holders needed accepted"):
            await mesh[0].store.put(source, k=3, n=MESH)  # only 7 others can hold a column

    on_mesh(tmp_path, body)


def test_a_full_node_refuses_and_placement_moves_on(tmp_path: Path) -> None:
    """Nodes 1-3 are full (a 1 KiB quota): a put needing one holder skips every one of them
    it asks and lands on node 4; a put needing two cannot be placed and says why."""

    async def main() -> None:
        identities = [NodeIdentity.generate() for _ in range(5)]

        def make(peers: list[str] | None, i: int) -> Node:
            quota = {"max_bytes": 1024} if i in (1, 2, 3) else {}
            return node_in(tmp_path / f"q{i}", identities[i], peers, **quota)

        nodes = await start_mesh(5, make)
        try:
            source = tmp_path / "data.bin"
            random_file(source, 512 * 1024)
            put = await nodes[0].store.put(source, k=1, n=1)
            assert put.holders == [str(nodes[4].node_id)]
            with pytest.raises(NotEnoughHolders, match=r"1 of the 2 holders needed.*full"):
                await nodes[0].store.put(source, k=1, n=2)
            refused = sum(n.store.holder.counters["refused"] for n in nodes[1:4])
            assert refused >= 3  # the second put asked every full node
            for full in nodes[1:4]:
                assert full.store.holdings.usage()["bytes_stored"] == 0
        finally:
            await stop_all(nodes)

    run(main(), timeout=120)


def test_pins_and_shares_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        identities = [NodeIdentity.generate() for _ in range(5)]
        nodes = await start_mesh(
            5, lambda peers, i: node_in(tmp_path / f"r{i}", identities[i], peers)
        )
        try:
            source = tmp_path / "data.bin"
            digest = random_file(source, 700 * 1024)
            put = await nodes[0].store.put(source, k=2, n=4)
            pinner = nodes[1] if str(nodes[1].node_id) not in put.holders else nodes[2]
            await pinner.store.pin(put.cid)
        finally:
            await stop_all(nodes)
        nodes = await start_mesh(
            5,
            lambda peers, i: node_in(tmp_path / f"r{i}", identities[i], peers),
        )
        try:
            owner = nodes[0]
            assert [row["cid"] for row in owner.store.listing()] == [str(put.cid)]
            again = next(n for n in nodes if n.node_id == pinner.node_id)
            assert again.store.listing()[0]["pinned"] is True
            assert await owner.store.check(put.cid, repair=False) == "ok"
            await nodes[4].store.get(put.cid, tmp_path / "after-restart.bin")
            assert sha256_of(tmp_path / "after-restart.bin") == digest
            for n in nodes:
                assert n.store.holdings.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            await stop_all(nodes)

    run(main(), timeout=120)


def test_a_hostile_provider_claiming_every_column_is_routed_around(tmp_path: Path) -> None:
    """A node that holds nothing announces itself as a provider, claims every column and
    serves bytes of the right length but the wrong content, answering first: the get still
    succeeds from the honest holders, and the liar is the one found out."""

    async def body(mesh: list[Node]) -> None:
        source = tmp_path / "data.bin"
        digest = random_file(source, 1 * MIB + 5)
        owner = mesh[0]
        put = await owner.store.put(source)
        liar = next(n for n in mesh[1:] if str(n.node_id) not in put.holders)
        reader = next(n for n in mesh[1:] if n is not liar and str(n.node_id) not in put.holders)

        async def have(ctx: object, body: object) -> dict:
            return {"indices": list(range(5))}

        async def read(ctx: object, body: dict) -> dict:
            return {"data": b"\0" * body["length"]}

        liar.handlers["store.have"] = have
        liar.handlers["store.read"] = read
        raw = make_provider_record(liar.identity, put.cid, [liar.address], now=time.time(), ttl=600)
        await liar.dht.publish(raw, RecordKind.PROVIDER)
        got = await reader.store.get(put.cid, tmp_path / "out.bin")
        assert sha256_of(tmp_path / "out.bin") == digest
        scores = reader.compute.scores
        baseline = scores.get(NodeIdentity.generate().node_id.digest)
        for holder in put.holders:  # nobody honest is blamed; the liar is, if it was read
            assert scores.get(by_id(mesh, holder).node_id.digest) == baseline
        if got.bad_shares:
            assert scores.get(liar.node_id.digest) < baseline
        assert got.bad_shares <= 1

    on_mesh(tmp_path, body)


def test_hostile_lease_answers_and_a_lost_column_are_repaired(tmp_path: Path) -> None:
    """A holder whose commit states an expiry no lease can have is not relied on (the put
    still ends with 5 live columns); a holder whose column file vanished is found missing at
    the next check (it cannot renew what it no longer has) and the column is rebuilt."""

    async def body(mesh: list[Node]) -> None:
        owner = mesh[0]
        source = tmp_path / "data.bin"
        digest = random_file(source, 1 * MIB)
        placed = await owner.store.put(source)
        liar = by_id(mesh, placed.holders[1])
        honest_commit = liar.handlers["store.commit"]

        async def commit(ctx: object, body: object) -> dict:
            await honest_commit(ctx, body)
            return {"expires": 2**64 - 1}

        liar.handlers["store.commit"] = commit
        second = tmp_path / "second.bin"
        random_file(second, 1 * MIB)
        put = await owner.store.put(second)
        assert put.live == 5 and str(liar.node_id) not in put.holders

        keeper = by_id(mesh, placed.holders[2])
        for column in (keeper.store.holdings.root / "columns").rglob("*"):
            if column.is_file():
                column.unlink()
        assert await owner.store.check(placed.cid, repair=True) == "ok"
        status = await owner.store.status(placed.cid)
        assert str(keeper.node_id) not in {s["holder"] for s in status["shares"]}
        await mesh[7].store.get(placed.cid, tmp_path / "out.bin")
        assert sha256_of(tmp_path / "out.bin") == digest

    on_mesh(tmp_path, body)


def test_a_get_that_cannot_complete_leaves_no_temporary_and_no_descriptor(
    tmp_path: Path,
) -> None:
    async def body(mesh: list[Node]) -> None:
        source = tmp_path / "data.bin"
        random_file(source, 300 * 1024)
        put = await mesh[0].store.put(source, k=2, n=2)
        await stop_all([by_id(mesh, h) for h in put.holders])
        reader = mesh[0]  # the owner: it has the manifest, but no holder answers any more
        out = tmp_path / "outdir"
        out.mkdir()
        descriptors = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            with pytest.raises(StoreError, match="cannot be read"):
                await reader.store.get(put.cid, out / "data.bin")
        assert os.listdir(out) == []
        assert len(os.listdir("/proc/self/fd")) <= descriptors

    on_mesh(tmp_path, body)
