"""Sealed content (docs/store.md, "Stored chunks and sealing") and the put's two passes over a
stream (qiz/store/chunks.py): the exact ciphertext layout, who can open a wrapped key, and
chunk tables that hash exactly what is stored."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qiz import wire
from qiz.crypto.errors import DecryptionFailed
from qiz.crypto.seal import open_sealed
from qiz.identity import NodeIdentity, PeerRecord
from qiz.store import chunks, sealing
from qiz.store.manifest import WRAPPED_KEY_SIZE, Manifest, ManifestError, build_manifest
from qiz.store.merkle import merkle_root
from qiz.store.tree import TreeEntry, scan

KIB = 1024
C = 16 * KIB
KEY = bytes(range(32))


def record(identity: NodeIdentity) -> PeerRecord:
    return PeerRecord.create(identity, ["127.0.0.1:4000"], seq=1, now=1_000_000)


# ----------------------------------------------------------------------------- the layout


def test_a_chunk_is_aes_gcm_under_its_index_as_nonce() -> None:
    assert sealing.chunk_nonce(5) == bytes(11) + b"\x05"
    assert sealing.chunk_nonce(0x0102) == bytes(10) + b"\x01\x02"
    stored = sealing.seal_chunk(KEY, 258, b"hello")
    assert stored == AESGCM(KEY).encrypt(bytes(10) + b"\x01\x02", b"hello", b"qiz/store/chunk/v1")
    assert len(stored) == 5 + 16
    assert sealing.open_chunk(KEY, 258, stored) == b"hello"


def test_the_tree_is_sealed_under_the_all_ones_nonce() -> None:
    sealed = sealing.seal_tree(KEY, b"tree bytes")
    assert sealed == AESGCM(KEY).encrypt(b"\xff" * 12, b"tree bytes", b"qiz/store/tree/v1")
    assert sealing.open_tree(KEY, sealed) == b"tree bytes"
    with pytest.raises(ValueError, match="outside"):
        sealing.chunk_nonce(1 << 20)  # no chunk index comes near the tree's nonce


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: sealing.open_chunk(KEY, 3, s),  # moved to another index
        lambda s: sealing.open_chunk(bytes(32), 2, s),  # another key
        lambda s: sealing.open_chunk(KEY, 2, s[:-1] + bytes([s[-1] ^ 1])),  # altered
        lambda s: sealing.open_tree(KEY, s),  # a chunk passed off as the tree
    ],
)
def test_a_chunk_opens_only_where_it_was_sealed(tamper: object) -> None:
    stored = sealing.seal_chunk(KEY, 2, b"payload")
    with pytest.raises(DecryptionFailed):
        tamper(stored)  # type: ignore[operator]


def test_content_keys_are_fresh() -> None:
    keys = {sealing.new_content_key() for _ in range(8)}
    assert len(keys) == 8 and all(len(k) == 32 for k in keys)


# ----------------------------------------------------------------------------- recipients

ENTRIES = [TreeEntry("f", "secret.txt", 100, False)]


def sealed_manifest(
    publisher: NodeIdentity, recipients: list[PeerRecord], root: bytes, key: bytes = KEY
) -> Manifest:
    wrapped = [sealing.wrap_key(key, root, r) for r in recipients]
    return build_manifest(
        publisher, "file", ENTRIES, 100, C, root, 2, 3,
        sealed_tree=sealing.seal_entries(key, ENTRIES), recipients=wrapped, created=1,
    )  # fmt: skip


ROOT = hashlib.sha256(b"a root").digest()


@pytest.fixture(scope="module")
def carol() -> NodeIdentity:
    return NodeIdentity.generate()


@pytest.fixture(scope="module")
def sealed(alice: NodeIdentity, bob: NodeIdentity) -> Manifest:
    return sealed_manifest(alice, [record(alice), record(bob)], ROOT)


def test_each_recipient_opens_the_key_and_the_tree(
    alice: NodeIdentity, bob: NodeIdentity, sealed: Manifest
) -> None:
    assert sealed.sealed and sealed.tree is None
    for who in (alice, bob):
        key = sealing.unwrap_key(sealed, who)
        assert key == KEY
        assert sealing.open_manifest_tree(sealed, key) == tuple(ENTRIES)


def test_the_wrapped_key_is_a_qiz_seal_bound_to_root_and_recipient(
    bob: NodeIdentity, sealed: Manifest
) -> None:
    assert sealed.recipients is not None
    wrapped = dict(sealed.recipients)[bob.node_id.digest]
    assert len(wrapped) == WRAPPED_KEY_SIZE
    assert open_sealed(wrapped, bob.xwing_key, ROOT + bob.node_id.digest) == KEY
    with pytest.raises(DecryptionFailed):
        open_sealed(wrapped, bob.xwing_key, b"")


def test_a_non_recipient_gets_a_clear_error(carol: NodeIdentity, sealed: Manifest) -> None:
    with pytest.raises(
        sealing.NotARecipient,
        match=r"^this content is sealed to 2 recipients; this node is not one of them$",
    ) as info:
        sealing.unwrap_key(sealed, carol)
    assert info.value.http_status == 403


def test_a_wrapped_key_moved_to_another_root_does_not_open(
    alice: NodeIdentity, bob: NodeIdentity, sealed: Manifest
) -> None:
    assert sealed.recipients is not None
    other_root = hashlib.sha256(b"another root").digest()
    moved = build_manifest(
        alice, "file", ENTRIES, 100, C, other_root, 2, 3,
        sealed_tree=sealed.sealed_tree, recipients=list(sealed.recipients), created=1,
    )  # fmt: skip
    with pytest.raises(sealing.SealingError, match="does not open"):
        sealing.unwrap_key(moved, bob)


def test_a_wrapped_key_claimed_for_another_recipient_does_not_open(
    alice: NodeIdentity, carol: NodeIdentity, sealed: Manifest
) -> None:
    assert sealed.recipients is not None
    alices = dict(sealed.recipients)[alice.node_id.digest]
    stolen = build_manifest(
        alice, "file", ENTRIES, 100, C, ROOT, 2, 3,
        sealed_tree=sealed.sealed_tree, recipients=[(carol.node_id.digest, alices)], created=1,
    )  # fmt: skip
    with pytest.raises(sealing.SealingError, match="does not open"):
        sealing.unwrap_key(stolen, carol)


def test_public_content_has_no_key(alice: NodeIdentity) -> None:
    public = build_manifest(alice, "file", ENTRIES, 100, C, ROOT, 2, 3, created=1)
    with pytest.raises(sealing.SealingError, match="public"):
        sealing.unwrap_key(public, alice)
    assert sealing.open_manifest_tree(public, KEY) == tuple(ENTRIES)


def test_a_sealed_tree_is_checked_once_opened(alice: NodeIdentity) -> None:
    bad = sealing.seal_tree(KEY, wire.encode([["f", "../../etc/x", 100, False]]))
    m = build_manifest(
        alice, "file", ENTRIES, 100, C, ROOT, 2, 3,
        sealed_tree=bad, recipients=[sealing.wrap_key(KEY, ROOT, record(alice))], created=1,
    )  # fmt: skip
    with pytest.raises(ManifestError, match=r"'\.\.' component"):
        sealing.open_manifest_tree(m, sealing.unwrap_key(m, alice))
    with pytest.raises(sealing.SealingError, match="does not open"):
        sealing.open_manifest_tree(m, bytes(32))


# ----------------------------------------------------------------------------- chunks


def make_tree(root: Path, sizes: dict[str, int]) -> bytes:
    """Files of the given sizes (random bytes); returns the stream in tree order."""
    root.mkdir()
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return b"".join((root / rel).read_bytes() for rel in sorted(sizes, key=str.encode))


SIZES = {"a": 0, "b": 1, "c/d": C - 1, "c/e": C, "f": C + 1, "g": 0, "h": 3 * C}


def test_the_table_hashes_each_chunk_of_the_stream(tmp_path: Path) -> None:
    stream = make_tree(tmp_path / "t", SIZES)
    table, root = chunks.hash_stream(scan(tmp_path / "t"), C)
    pieces = [stream[i : i + C] for i in range(0, len(stream), C)]
    assert len(pieces) == 7  # 6 C + 1 bytes
    assert table == b"".join(hashlib.sha256(p).digest() for p in pieces)
    assert root == merkle_root([hashlib.sha256(p).digest() for p in pieces])
    again = list(chunks.iter_stored_chunks(scan(tmp_path / "t"), C, table=table))
    assert [i for i, _ in again] == list(range(7))
    assert b"".join(p for _, p in again) == stream


def test_sealed_content_hashes_the_ciphertext(tmp_path: Path) -> None:
    stream = make_tree(tmp_path / "t", SIZES)
    table, _ = chunks.hash_stream(scan(tmp_path / "t"), C, KEY)
    stored = [sealing.seal_chunk(KEY, i, stream[i * C : (i + 1) * C]) for i in range(7)]
    assert table == b"".join(hashlib.sha256(s).digest() for s in stored)
    again = list(chunks.iter_stored_chunks(scan(tmp_path / "t"), C, KEY, table))
    assert [s for _, s in again] == stored
    assert b"".join(sealing.open_chunk(KEY, i, s) for i, s in again) == stream


def test_empty_content_has_an_empty_table(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    assert chunks.hash_stream(scan(tmp_path / "e"), C) == (b"", hashlib.sha256(b"").digest())


def test_hashing_reads_with_a_bounded_buffer(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    found = scan(big)
    tracemalloc.start()
    try:
        chunks.hash_stream(found, C)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * KIB  # one chunk and the table, never the 8 MiB file


def test_a_file_edited_between_the_passes_is_caught(tmp_path: Path) -> None:
    make_tree(tmp_path / "t", {"x": 3 * C})
    found = scan(tmp_path / "t")
    table, _ = chunks.hash_stream(found, C)
    data = bytearray((tmp_path / "t" / "x").read_bytes())
    data[2 * C] ^= 1
    (tmp_path / "t" / "x").write_bytes(data)
    with pytest.raises(chunks.ChunkError, match="chunk 2 changed since it was hashed"):
        list(chunks.iter_stored_chunks(found, C, table=table))


@pytest.mark.parametrize("key", [None, KEY])
def test_the_second_pass_checks_fingerprints_not_hashes(tmp_path: Path, key: bytes | None) -> None:
    """With a ChangeCheck the second pass yields the same stored chunks, and an edit of one
    byte between the passes (even one that keeps the size) is caught at its chunk."""
    stream = make_tree(tmp_path / "t", SIZES)
    found = scan(tmp_path / "t")
    check = chunks.ChangeCheck()
    table, _ = chunks.hash_stream(found, C, key, check)
    assert table == chunks.hash_stream(found, C, key)[0]  # the check changes no hash
    assert len(check) == 7
    again = list(chunks.iter_stored_chunks(found, C, key, check=check))
    plain = [stream[i * C : (i + 1) * C] for i in range(7)]
    expected = (
        plain if key is None else [sealing.seal_chunk(key, i, p) for i, p in enumerate(plain)]
    )
    assert [s for _, s in again] == expected
    data = bytearray((tmp_path / "t" / "h").read_bytes())
    data[C + 5] ^= 0x80  # "h" starts at stream offset 3C + 2: this is chunk 4
    (tmp_path / "t" / "h").write_bytes(data)
    with pytest.raises(chunks.ChunkError, match="chunk 4 changed since it was hashed"):
        list(chunks.iter_stored_chunks(found, C, key, check=check))


def test_a_fingerprint_belongs_to_its_index_and_its_put() -> None:
    first, second = chunks.ChangeCheck(), chunks.ChangeCheck()
    first.add(0, b"a" * 100)
    first.add(1, b"b" * 100)
    second.add(0, b"a" * 100)
    assert first.matches(0, b"a" * 100) and first.matches(1, b"b" * 100)
    assert not first.matches(1, b"a" * 100)  # the same bytes at another index
    assert not first.matches(2, b"b" * 100)  # an index the first pass never saw
    assert not second.matches(1, b"b" * 100)
    with pytest.raises(ValueError, match="in order"):
        second.add(2, b"c")


@pytest.mark.parametrize(("change", "message"), [(b"", "shrank"), (b"xx", "grew")])
def test_a_file_whose_size_changed_is_caught(tmp_path: Path, change: bytes, message: str) -> None:
    (tmp_path / "f").write_bytes(b"ab")
    found = scan(tmp_path / "f")
    (tmp_path / "f").write_bytes(b"a" + change)
    with pytest.raises(chunks.ChunkError, match=message):
        chunks.hash_stream(found, C)


def test_a_file_swapped_for_a_link_after_the_scan_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"ab")
    (tmp_path / "g").write_bytes(b"cd")
    found = scan(tmp_path / "f")
    (tmp_path / "f").unlink()
    (tmp_path / "f").symlink_to(tmp_path / "g")
    with pytest.raises(chunks.ChunkError, match="cannot read"):
        chunks.hash_stream(found, C)


def test_a_bad_chunk_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"ab")
    with pytest.raises(ValueError, match="power of two"):
        chunks.hash_stream(scan(tmp_path / "f"), 3 * KIB)
