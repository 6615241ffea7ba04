"""The storage format's pure core (docs/store.md): the RFC 6962 Merkle root, manifests built,
signed and parsed strictly, and the share geometry holders and owners compute from them.

Every refusal test re-signs its altered manifest, so it proves that the named check (not the
signature) refused it."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz import wire
from qiz.crypto.composite import MLDSA_SIGNATURE_SIZE
from qiz.crypto.ids import ContentId
from qiz.identity import NodeIdentity
from qiz.store import limits
from qiz.store.erasure import encode_chunk
from qiz.store.manifest import (
    CONTEXT,
    WRAPPED_KEY_SIZE,
    Manifest,
    ManifestError,
    build_manifest,
    parse_manifest,
    parse_tree_bytes,
)
from qiz.store.merkle import merkle_root, split_table, table_root
from qiz.store.tree import TreeEntry

KIB = 1024
ROOT = hashlib.sha256(b"root").digest()


# ----------------------------------------------------------------------------- Merkle


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written from the text: recursive, split at the largest power of
    two smaller than n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def test_merkle_root_of_nothing_is_the_hash_of_the_empty_string() -> None:
    assert merkle_root([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert table_root(b"") == merkle_root([])


@pytest.mark.parametrize("count", [*range(1, 18), 31, 32, 33, 100])
def test_merkle_root_matches_rfc6962_written_recursively(count: int) -> None:
    leaves = [hashlib.sha256(bytes([i % 256, i // 256])).digest() for i in range(count)]
    assert merkle_root(leaves) == mth(leaves)
    assert table_root(b"".join(leaves)) == mth(leaves)


def test_merkle_root_of_two_leaves_by_hand() -> None:
    a, b = b"\x11" * 32, b"\x22" * 32
    sha = hashlib.sha256
    expected = sha(b"\x01" + sha(b"\x00" + a).digest() + sha(b"\x00" + b).digest()).digest()
    assert merkle_root([a, b]) == expected
    assert merkle_root([b, a]) != expected


def test_a_table_that_is_not_whole_hashes_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        split_table(b"\x00" * 33)


# ----------------------------------------------------------------------------- manifests


def file_manifest(identity: NodeIdentity, size: int = 300_000, **kw: object) -> Manifest:
    args: dict = {"chunk": 128 * KIB, "k": 3, "n": 5, "root": ROOT, "created": 1_700_000_000}
    args.update(kw)
    return build_manifest(
        identity,
        "file",
        [TreeEntry("f", "data.bin", size, False)],
        size,
        args["chunk"],
        args["root"],
        args["k"],
        args["n"],
        created=args["created"],
    )


DIR_TREE = [
    TreeEntry("f", "a.txt", 10, False),
    TreeEntry("d", "empty"),
    TreeEntry("f", "run.sh", 5, True),
    TreeEntry("f", "sub/x", 0, False),
    TreeEntry("f", "sub/y", 20, False),
]


@pytest.fixture(scope="module")
def public(alice: NodeIdentity) -> Manifest:
    return file_manifest(alice)


def test_a_built_manifest_parses_back_to_itself(alice: NodeIdentity, public: Manifest) -> None:
    again = parse_manifest(public.raw, cid=public.cid)
    assert again == public
    assert public.cid == ContentId.of(public.raw)
    assert str(public.cid).startswith("qizc1")
    assert public.publisher_id == alice.node_id
    assert public.tree == (TreeEntry("f", "data.bin", 300_000, False),)
    assert public.name == "data.bin"
    assert not public.sealed
    fields = wire.decode(public.raw, max_size=limits.MAX_MANIFEST)
    assert set(fields) == {
        *("v", "kind", "publisher", "created", "size", "chunk", "chunks", "root", "k", "n"),
        *("tree", "sealed", "sig"),
    }
    assert fields["tree"] == [["f", "data.bin", 300_000, False]]
    assert fields["sealed"] is None
    body = {k: v for k, v in fields.items() if k != "sig"}
    alice.public_key.verify(fields["sig"], wire.encode(body), "qiz/store-manifest/v1")


def test_a_directory_manifest_keeps_its_tree(alice: NodeIdentity) -> None:
    m = build_manifest(alice, "dir", DIR_TREE, 35, 16 * KIB, ROOT, 1, 3, created=5)
    assert parse_manifest(m.raw).tree == tuple(DIR_TREE)
    assert m.name is None
    assert m.chunks == 1


def test_the_wrong_content_id_is_refused(alice: NodeIdentity, public: Manifest) -> None:
    other = file_manifest(alice, created=1)
    with pytest.raises(ManifestError, match="does not hash to the content id"):
        parse_manifest(public.raw, cid=other.cid)


def test_share_geometry_matches_the_encoded_columns(alice: NodeIdentity) -> None:
    size, chunk, k, n = 40_000, 16 * KIB, 3, 5
    m = build_manifest(
        alice, "file", [TreeEntry("f", "f", size, False)], size, chunk, ROOT, k, n, created=0
    )
    stream = os.urandom(size)
    assert m.chunks == 3
    assert [m.chunk_size(i) for i in range(3)] == [16384, 16384, 40_000 - 32768]
    columns = [b""] * n
    for i in range(m.chunks):
        assert m.share_offset(i) == len(columns[0])
        shares = encode_chunk(stream[i * chunk : (i + 1) * chunk], k, n)
        assert all(len(s) == m.share_size(i) for s in shares)
        columns = [c + s for c, s in zip(columns, shares, strict=True)]
    assert {len(c) for c in columns} == {m.column_size()}
    assert m.table_size() == 96
    with pytest.raises(IndexError):
        m.stored_size(3)


def test_sealed_chunks_are_a_tag_longer(alice: NodeIdentity) -> None:
    m = build_manifest(
        alice,
        "file",
        [TreeEntry("f", "f", 100, False)],
        100,
        16 * KIB,
        ROOT,
        2,
        4,
        sealed_tree=b"\x01" * 40,
        recipients=[(b"\x07" * 32, b"\x00" * WRAPPED_KEY_SIZE)],
        created=0,
    )
    assert m.sealed and m.tree is None and m.sealed_tree == b"\x01" * 40
    assert m.stored_size(0) == 116
    assert m.share_size(0) == 58
    assert m.column_size() == 58


def test_empty_content_has_no_chunks_and_empty_columns(alice: NodeIdentity) -> None:
    m = build_manifest(alice, "dir", [], 0, 128 * KIB, merkle_root([]), 3, 5, created=0)
    assert (m.chunks, m.column_size(), m.table_size()) == (0, 0, 0)


def test_column_keys_dedupe_only_the_same_public_column(
    alice: NodeIdentity, bob: NodeIdentity, public: Manifest
) -> None:
    again = file_manifest(alice, created=99)  # the same publisher puts the same bytes again
    assert again.cid != public.cid
    assert again.column_key(2) == public.column_key(2)
    # another publisher of the same bytes never shares a column: nobody can plant garbage
    # under a key that someone else will later be told is "already held"
    assert file_manifest(bob).column_key(2) != public.column_key(2)
    keys = {public.column_key(j) for j in range(5)}
    assert len(keys) == 5
    assert file_manifest(alice, k=2).column_key(0) != public.column_key(0)
    assert file_manifest(alice, n=6).column_key(0) != public.column_key(0)
    assert file_manifest(alice, size=300_001).column_key(0) != public.column_key(0)
    assert file_manifest(alice, chunk=64 * KIB).column_key(0) != public.column_key(0)
    expected = hashlib.sha256(
        b"qiz/store/column/v1"
        + ROOT
        + alice.node_id.digest
        + bytes([3, 5])
        + (128 * KIB).to_bytes(4, "big")
        + (300_000).to_bytes(8, "big")
        + bytes([4, 0])
    ).digest()
    assert public.column_key(4) == expected
    with pytest.raises(IndexError):
        public.column_key(5)


def test_a_manifest_over_the_size_limit_is_refused_before_decoding() -> None:
    with pytest.raises(ManifestError, match="over the 131072-byte limit"):
        parse_manifest(b"\xff" * (limits.MAX_MANIFEST + 1))


def test_build_refuses_a_tree_too_large_for_a_manifest(alice: NodeIdentity) -> None:
    tree = [TreeEntry("f", f"{i:05d}-" + "x" * 200, 0, False) for i in range(700)]
    with pytest.raises(ManifestError, match="over the 131072-byte limit"):
        build_manifest(alice, "dir", tree, 0, 128 * KIB, ROOT, 3, 5, created=0)


def test_build_refuses_inconsistent_sealing(alice: NodeIdentity) -> None:
    with pytest.raises(ManifestError, match="both the sealed tree and its recipients"):
        build_manifest(alice, "dir", [], 0, 128 * KIB, ROOT, 3, 5, sealed_tree=b"x" * 20, created=0)


# -- refusals, each re-signed


def body_of(m: Manifest) -> dict:
    fields = wire.decode(m.raw, max_size=limits.MAX_MANIFEST)
    del fields["sig"]
    return fields


def resign(identity: NodeIdentity, body: dict) -> bytes:
    """The body signed again (a "sig" already in it, for the signature's own case, is kept)."""
    if "sig" in body:
        return wire.encode(body)
    return wire.encode({**body, "sig": identity.sign(wire.encode(body), CONTEXT)})


RECIPIENT = [b"\x01" * 32, b"\x00" * WRAPPED_KEY_SIZE]


def tree_of(*entries: list) -> dict:
    total = sum(e[2] for e in entries if e[0] == "f")
    return {"kind": "dir", "tree": list(entries), "size": total, "chunks": 1 if total else 0}


BAD = {
    "extra key": ({"extra": 1}, "exactly the qiz-store/1 keys"),
    "version": ({"v": 2}, "version 2"),
    "version bool": ({"v": True}, "version True"),
    "kind": ({"kind": "blob"}, "kind must be"),
    "kind type": ({"kind": 1}, "kind must be"),
    "publisher": ({"publisher": b"\x00" * 32}, "publisher key must be 1984 bytes"),
    "created negative": ({"created": -1}, "created must be an integer"),
    "created over 2**63-1": ({"created": 2**63}, "created must be an integer"),
    "size bool": ({"size": True}, "size must be an integer"),
    "size float": ({"size": 300000.0}, "size must be an integer"),
    "size over MAX_CONTENT": (
        {"size": limits.MAX_CONTENT + 1, "chunks": -(-(limits.MAX_CONTENT + 1) // (128 * KIB))},
        "size must be an integer from 0 to",
    ),
    "chunks inconsistent": ({"chunks": 4}, "says 4 chunks, but 300000 bytes"),
    "chunks over MAX_CHUNKS": (
        {"size": limits.MAX_CONTENT, "chunk": 16 * KIB, "chunks": limits.MAX_CONTENT // (16 * KIB)},
        "chunk count must be",
    ),
    "chunk not a power of two": ({"chunk": 100_000, "chunks": 3}, "not a power of two"),
    "chunk too small": ({"chunk": 8 * KIB, "chunks": 37}, "not a power of two from 16384"),
    "chunk too large": ({"chunk": 256 * KIB, "chunks": 2}, "chunk size must be"),
    "k over n": ({"k": 6}, "1 <= k <= n"),
    "k zero": ({"k": 0}, "1 <= k <= n"),
    "n over 16": ({"n": 17}, "n must be an integer from 0 to 16"),
    "root short": ({"root": b"\x00" * 31}, "root must be 32 bytes"),
    "sig short": ({"sig": b"\x00" * 10}, "signature must be 3373 bytes"),
    "tree not a list": ({"tree": b"xx"}, "a tree is a list"),
    "file with a dir path": (
        {"tree": [["f", "a/b", 300_000, False]]},
        "exactly one file entry, named by a base name",
    ),
    "file with two entries": (
        {"tree": [["f", "a", 1, False], ["f", "b", 299_999, False]]},
        "exactly one file entry",
    ),
    "file sizes do not add up": ({"tree": [["f", "a", 3, False]]}, "add up to 3"),
    "dotdot": (tree_of(["f", "../x", 1, False]), "'..' component"),
    "dotdot inside": (tree_of(["f", "a/../../x", 1, False]), "'..' component"),
    "dot": (tree_of(["f", "./x", 1, False]), "'..' component"),
    "absolute": (tree_of(["f", "/etc/passwd", 1, False]), "absolute"),
    "trailing slash": (tree_of(["d", "a/"]), "empty component"),
    "double slash": (tree_of(["f", "a//b", 1, False]), "empty component"),
    "backslash": (tree_of(["f", "..\\x", 1, False]), "backslash"),
    "nul": (tree_of(["f", "a\x00b", 1, False]), "NUL"),
    "empty path": (tree_of(["f", "", 1, False]), "not 1 to 1024 bytes"),
    "long component": (tree_of(["f", "a" * 256, 1, False]), "component over 255"),
    "long path": (tree_of(["f", "/".join(["a" * 200] * 6), 1, False]), "not 1 to 1024"),
    "duplicate": (tree_of(["f", "a", 1, False], ["f", "a", 1, False]), "out of order or repeated"),
    "dir and file alike": (tree_of(["d", "a"], ["f", "a", 1, False]), "out of order or repeated"),
    "unsorted": (tree_of(["f", "b", 1, False], ["f", "a", 1, False]), "out of order"),
    "file as a parent": (
        tree_of(["f", "a", 1, False], ["f", "a-b", 1, False], ["f", "a/x", 1, False]),
        "'a/x' lies under a file",
    ),
    "entry kind": (tree_of(["l", "a", "b"]), "a tree entry is"),
    "file entry short": (tree_of(["f", "a", 1]), "a file entry is"),
    "dir entry long": (tree_of(["d", "a", 1]), "a directory entry is"),
    "entry size bool": (tree_of(["f", "a", True, False]), "size of 'a' must be"),
    "entry size huge": (
        {**tree_of(["f", "a", 1, False]), "tree": [["f", "a", 2**64 - 1, False]]},
        "size of 'a' must be",
    ),
    "executable flag": (tree_of(["f", "a", 1, 1]), "executable flag"),
    "path not text": (tree_of(["f", b"a", 1, False]), "must be text"),
    "recipients empty": ({"sealed": [], "tree": b"x" * 40}, "recipients must be a list of 1"),
    "recipients too many": (
        {"sealed": [[bytes([i]) * 32, RECIPIENT[1]] for i in range(17)], "tree": b"x" * 40},
        "1 to 16",
    ),
    "recipients unsorted": (
        {"sealed": [[b"\x02" * 32, RECIPIENT[1]], RECIPIENT], "tree": b"x" * 40},
        "sorted by id and unique",
    ),
    "recipients repeated": ({"sealed": [RECIPIENT, RECIPIENT], "tree": b"x" * 40}, "unique"),
    "recipient id short": ({"sealed": [[b"\x01" * 31, RECIPIENT[1]]], "tree": b"x" * 40}, "id"),
    "wrapped key size": (
        {"sealed": [[b"\x01" * 32, b"\x00" * (WRAPPED_KEY_SIZE + 1)]], "tree": b"x" * 40},
        "wrapped key must be 1172 bytes",
    ),
    "recipient shape": ({"sealed": [[b"\x01" * 32]], "tree": b"x" * 40}, "[node id, wrapped key]"),
    "sealed tree in the clear": (
        {"sealed": [RECIPIENT], "tree": [["f", "data.bin", 300_000, False]]},
        "must be encrypted bytes",
    ),
    "sealed tree too short": ({"sealed": [RECIPIENT], "tree": b"x" * 16}, "encrypted bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_fault_is_refused_by_its_own_check(
    alice: NodeIdentity, public: Manifest, case: str
) -> None:
    change, message = BAD[case]
    raw = resign(alice, {**body_of(public), **change})
    with pytest.raises(ManifestError, match=_escape(message)):
        parse_manifest(raw)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_sealed_manifest_that_follows_the_rules_passes(alice: NodeIdentity, public: Manifest):
    raw = resign(alice, {**body_of(public), "sealed": [RECIPIENT], "tree": b"x" * 40})
    m = parse_manifest(raw)
    assert m.recipients == (tuple(RECIPIENT),)
    assert m.stored_size(0) == 128 * KIB + 16


def test_non_canonical_cbor_is_refused(public: Manifest) -> None:
    # the same map, its first key's length written in a longer form
    fields = wire.decode(public.raw, max_size=limits.MAX_MANIFEST)
    import cbor2

    loose = cbor2.dumps(fields)  # not canonical: keys in insertion order
    if loose == public.raw:
        loose = public.raw[:1] + b"\x78" + bytes([public.raw[1] - 0x60]) + public.raw[2:]
    with pytest.raises(ManifestError, match="canonical"):
        parse_manifest(loose)
    with pytest.raises(ManifestError, match="canonical"):
        parse_manifest(public.raw + b"\x00")


def test_a_changed_field_breaks_the_signature(public: Manifest) -> None:
    fields = wire.decode(public.raw, max_size=limits.MAX_MANIFEST)
    fields["created"] += 1
    with pytest.raises(ManifestError, match="signature does not verify"):
        parse_manifest(wire.encode(fields))


@pytest.mark.parametrize("where", [0, MLDSA_SIGNATURE_SIZE - 1, MLDSA_SIGNATURE_SIZE, -1])
def test_both_signature_halves_are_checked(public: Manifest, where: int) -> None:
    fields = wire.decode(public.raw, max_size=limits.MAX_MANIFEST)
    sig = bytearray(fields["sig"])
    sig[where] ^= 0x01
    fields["sig"] = bytes(sig)
    with pytest.raises(ManifestError, match="signature does not verify"):
        parse_manifest(wire.encode(fields))


def test_another_publishers_key_does_not_verify(bob: NodeIdentity, public: Manifest) -> None:
    fields = wire.decode(public.raw, max_size=limits.MAX_MANIFEST)
    fields["publisher"] = bob.public_key.raw
    with pytest.raises(ManifestError, match="signature does not verify"):
        parse_manifest(wire.encode(fields))


def test_a_publisher_key_that_is_not_a_key_is_refused(public: Manifest) -> None:
    fields = wire.decode(public.raw, max_size=limits.MAX_MANIFEST)
    fields["publisher"] = b"\xff" * 1984
    with pytest.raises(ManifestError, match="signature does not verify"):
        parse_manifest(wire.encode(fields))


def test_a_decrypted_tree_is_checked_like_a_public_one(public: Manifest) -> None:
    good = wire.encode([["f", "data.bin", 300_000, False]])
    assert parse_tree_bytes(public, good) == public.tree
    with pytest.raises(ManifestError, match=r"'\.\.' component"):
        parse_tree_bytes(public, wire.encode([["f", "..", 300_000, False]]))
    with pytest.raises(ManifestError, match="not valid CBOR"):
        parse_tree_bytes(public, b"\xff")


# -- hostile bytes never raise anything else

mutation = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert"]),
        st.integers(0, 40) | st.integers(3400, 3500) | st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


@given(ops=mutation)
def test_mutated_manifests_raise_only_manifest_error(public: Manifest, ops: list) -> None:
    data = bytearray(public.raw)
    for op, where, value in ops:
        if not data:
            break
        pos = where % len(data)
        if op == "flip":
            data[pos] ^= 1 << (value % 8)
        elif op == "set":
            data[pos] = value
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = bytes([value])
    try:
        parsed = parse_manifest(bytes(data))
    except ManifestError:
        return
    assert parsed.raw == public.raw  # only an unchanged manifest may pass


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64) + 1, 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(value=plain)
def test_random_cbor_values_raise_only_manifest_error(value: object) -> None:
    try:
        raw = wire.encode(value)
    except wire.WireError:
        return
    with pytest.raises(ManifestError):
        parse_manifest(raw)


@given(
    changes=st.dictionaries(
        st.sampled_from(
            sorted(
                {
                    "v",
                    "kind",
                    "publisher",
                    "created",
                    "size",
                    "chunk",
                    "chunks",
                    "root",
                    "k",
                    "n",
                    "tree",
                    "sealed",
                    "sig",
                }
            )
        ),
        plain,
        min_size=1,
        max_size=4,
    )
)
def test_manifests_with_random_fields_raise_only_manifest_error(
    public: Manifest, changes: dict
) -> None:
    body = {**wire.decode(public.raw, max_size=limits.MAX_MANIFEST), **changes}
    try:
        raw = wire.encode(body)
    except wire.WireError:
        return
    try:
        parse_manifest(raw)
    except ManifestError:
        return
    assert raw == public.raw
