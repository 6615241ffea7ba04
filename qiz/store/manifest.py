"""Manifests: the signed description of one content, whose SHA3-256 is the content id.

A manifest is canonical CBOR (docs/store.md, "The manifest"). Building one signs it; parsing
one trusts nothing: every manifest a node reads comes from a peer or a file, and holders parse
them before they agree to hold anything. :func:`parse_manifest` therefore checks cheapest first
and before anything is sized from the input: the byte length, canonical CBOR, the exact key
set, every type and integer bound, the consistency of sizes and counts, the tree's paths, the
recipients, then the composite signature (both halves), and the content id when it is known.

The share geometry (stored chunk sizes, share sizes and offsets, column and table sizes) is
derived here from a checked manifest, so holders and owners compute the same numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from qiz import QizError, wire
from qiz.crypto.composite import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, CompositePublicKey
from qiz.crypto.errors import InvalidKey, InvalidSignature
from qiz.crypto.ids import ContentId, NodeId
from qiz.crypto.seal import OVERHEAD as SEAL_OVERHEAD
from qiz.identity.node_identity import NodeIdentity
from qiz.store.erasure import share_length
from qiz.store.limits import (
    FORMAT_VERSION,
    HASH_SIZE,
    MAX_CHUNK,
    MAX_CHUNKS,
    MAX_CONTENT,
    MAX_MANIFEST,
    MAX_RECIPIENTS,
    MAX_SHARES,
    MAX_UINT,
    MIN_CHUNK,
    TAG_SIZE,
)
from qiz.store.tree import KINDS, TreeEntry, TreeError, entries_to_cbor, parse_entries

CONTEXT = "qiz/store-manifest/v1"
COLUMN_DOMAIN = b"qiz/store/column/v1"
CONTENT_KEY_SIZE = 32
WRAPPED_KEY_SIZE = SEAL_OVERHEAD + CONTENT_KEY_SIZE  # an HPKE X-Wing seal of a 32-byte key
KEYS = frozenset(
    {"v", "kind", "publisher", "created", "size", "chunk", "chunks", "root", "k", "n", "tree"}
    | {"sealed", "sig"}
)


class ManifestError(QizError, ValueError):
    """A manifest was refused (or cannot be built); the message names the fault."""

    exit_code = 1  # a check ran and said no


@dataclass(frozen=True, slots=True)
class Manifest:
    """A checked manifest. ``tree`` is None when sealed (``sealed_tree`` holds it encrypted);
    ``recipients`` is None for public content, else (recipient id digest, wrapped key) pairs
    sorted by id. ``raw`` is the exact signed bytes: what is stored, sent and hashed."""

    kind: str
    publisher: bytes
    created: int
    size: int
    chunk: int
    chunks: int
    root: bytes
    k: int
    n: int
    tree: tuple[TreeEntry, ...] | None
    sealed_tree: bytes | None
    recipients: tuple[tuple[bytes, bytes], ...] | None
    sig: bytes
    raw: bytes = field(repr=False)
    # the id, hashed once: a get names it in every piece it asks for
    _cid: ContentId = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cid", ContentId.of(self.raw))

    def __repr__(self) -> str:
        return f"Manifest({self.cid}, {self.kind}, {self.size} bytes, k={self.k}, n={self.n})"

    @property
    def cid(self) -> ContentId:
        return self._cid

    @property
    def publisher_id(self) -> NodeId:
        return NodeId.from_public_key(self.publisher)

    @property
    def sealed(self) -> bool:
        return self.recipients is not None

    @property
    def name(self) -> str | None:
        """The file's name for a public ``file`` content (what ``get`` writes by default)."""
        if self.kind == "file" and self.tree:
            return self.tree[0].path
        return None

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.chunks:
            raise IndexError(f"chunk {i} is outside 0..{self.chunks - 1}")

    def chunk_size(self, i: int) -> int:
        """Plaintext bytes of chunk ``i`` (the last one may be shorter)."""
        self._check_index(i)
        return min(self.chunk, self.size - i * self.chunk)

    def stored_size(self, i: int) -> int:
        """Bytes of stored chunk ``i``: the chunk, plus the GCM tag when sealed."""
        return self.chunk_size(i) + (TAG_SIZE if self.sealed else 0)

    def share_size(self, i: int) -> int:
        """Bytes of each share of chunk ``i``."""
        return share_length(self.stored_size(i), self.k)

    def share_offset(self, i: int) -> int:
        """Where share (i, j) starts in column j: all shares but the last have one size."""
        self._check_index(i)
        return i * self.share_size(0)

    def column_size(self) -> int:
        """Bytes of each column: (chunks - 1) * S_0 + S_last."""
        if self.chunks == 0:
            return 0
        return (self.chunks - 1) * self.share_size(0) + self.share_size(self.chunks - 1)

    def table_size(self) -> int:
        """Bytes of the chunk table (32 per chunk)."""
        return HASH_SIZE * self.chunks

    def column_key(self, index: int) -> bytes:
        """The name of column ``index`` on a holder's disk (docs/store.md): equal for the same
        public column put twice by the same publisher, so it is stored once. ``size`` is in it
        so that one key always means one column length, whatever a lying manifest claims; the
        publisher's id, so that nobody can plant garbage under a column that another publisher
        will later offer (a holder cannot check a share's bytes)."""
        if not 0 <= index < self.n:
            raise IndexError(f"column {index} is outside 0..{self.n - 1}")
        return hashlib.sha256(
            COLUMN_DOMAIN
            + self.root
            + self.publisher_id.digest
            + bytes([self.k, self.n])
            + self.chunk.to_bytes(4, "big")
            + self.size.to_bytes(8, "big")
            + bytes([index, int(self.sealed)])
        ).digest()


# ----------------------------------------------------------------------------- parsing


def _uint(value: object, what: str, limit: int = MAX_UINT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise ManifestError(f"manifest {what} must be an integer from 0 to {limit}")
    return value


def _bytes(value: object, what: str, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise ManifestError(f"manifest {what} must be {size} bytes")
    return value


def _check_geometry(size: int, chunk: int, chunks: int, k: int, n: int) -> None:
    if chunk & (chunk - 1) or not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise ManifestError(
            f"manifest chunk size {chunk} is not a power of two from {MIN_CHUNK} to {MAX_CHUNK}"
        )
    if chunks != -(-size // chunk):
        raise ManifestError(
            f"manifest says {chunks} chunks, but {size} bytes in chunks of {chunk} "
            f"are {-(-size // chunk)}"
        )
    if not 1 <= k <= n <= MAX_SHARES:
        raise ManifestError(f"manifest erasure parameters need 1 <= k <= n <= {MAX_SHARES}")


def _recipients(value: object) -> tuple[tuple[bytes, bytes], ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RECIPIENTS:
        raise ManifestError(f"manifest recipients must be a list of 1 to {MAX_RECIPIENTS}")
    out: list[tuple[bytes, bytes]] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise ManifestError("a manifest recipient is [node id, wrapped key]")
        rid = _bytes(item[0], "recipient id", 32)
        wrapped = _bytes(item[1], "wrapped key", WRAPPED_KEY_SIZE)
        if out and rid <= out[-1][0]:
            raise ManifestError("manifest recipients must be sorted by id and unique")
        out.append((rid, wrapped))
    return tuple(out)


def parse_manifest(raw: bytes, *, cid: ContentId | None = None) -> Manifest:
    """A checked :class:`Manifest` from untrusted bytes, or :class:`ManifestError`."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ManifestError("a manifest is a byte string")
    if len(raw) > MAX_MANIFEST:
        raise ManifestError(f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST}-byte limit")
    raw = bytes(raw)
    if cid is not None and ContentId.of(raw) != cid:
        raise ManifestError(f"manifest does not hash to the content id {cid}")
    try:
        fields = wire.decode(raw, max_size=MAX_MANIFEST, what="manifest")
    except wire.WireError as exc:
        raise ManifestError(str(exc)) from None
    if not isinstance(fields, dict) or set(fields) != KEYS:
        raise ManifestError("manifest does not have exactly the qiz-store/1 keys")
    if fields["v"] != FORMAT_VERSION or isinstance(fields["v"], bool):
        raise ManifestError(f"manifest version {fields['v']!r} is not {FORMAT_VERSION}")
    kind = fields["kind"]
    if kind not in KINDS or not isinstance(kind, str):
        raise ManifestError(f"manifest kind must be 'file' or 'dir', got {kind!r}")
    publisher = _bytes(fields["publisher"], "publisher key", PUBLIC_KEY_SIZE)
    created = _uint(fields["created"], "created")
    size = _uint(fields["size"], "size", MAX_CONTENT)
    chunk = _uint(fields["chunk"], "chunk size", MAX_CHUNK)
    chunks = _uint(fields["chunks"], "chunk count", MAX_CHUNKS)
    root = _bytes(fields["root"], "root", HASH_SIZE)
    k = _uint(fields["k"], "k", MAX_SHARES)
    n = _uint(fields["n"], "n", MAX_SHARES)
    _check_geometry(size, chunk, chunks, k, n)
    sig = _bytes(fields["sig"], "signature", SIGNATURE_SIZE)
    tree: tuple[TreeEntry, ...] | None = None
    sealed_tree: bytes | None = None
    recipients: tuple[tuple[bytes, bytes], ...] | None = None
    if fields["sealed"] is None:
        try:
            tree = parse_entries(fields["tree"], kind, size)
        except TreeError as exc:
            raise ManifestError(f"manifest tree: {exc}") from None
    else:
        recipients = _recipients(fields["sealed"])
        sealed_tree = fields["tree"]
        if not isinstance(sealed_tree, bytes) or len(sealed_tree) <= TAG_SIZE:
            raise ManifestError("a sealed manifest's tree must be encrypted bytes")
    body = {key: value for key, value in fields.items() if key != "sig"}
    try:
        CompositePublicKey(publisher).verify(sig, wire.encode(body), CONTEXT)
    except (InvalidSignature, InvalidKey):
        raise ManifestError("manifest signature does not verify") from None
    return Manifest(
        kind, publisher, created, size, chunk, chunks, root, k, n,
        tree, sealed_tree, recipients, sig, raw,
    )  # fmt: skip


def parse_tree_bytes(manifest: Manifest, tree_cbor: bytes) -> tuple[TreeEntry, ...]:
    """The checked entries of a sealed manifest's tree once decrypted (same rules as public)."""
    try:
        value = wire.decode(tree_cbor, max_size=MAX_MANIFEST, what="sealed tree")
        return parse_entries(value, manifest.kind, manifest.size)
    except (wire.WireError, TreeError) as exc:
        raise ManifestError(f"manifest tree: {exc}") from None


# ----------------------------------------------------------------------------- building


def build_manifest(  # noqa: PLR0917 (the format's fields, in its order)
    identity: NodeIdentity,
    kind: str,
    tree: Sequence[TreeEntry],
    size: int,
    chunk: int,
    root: bytes,
    k: int,
    n: int,
    *,
    sealed_tree: bytes | None = None,
    recipients: Sequence[tuple[bytes, bytes]] | None = None,
    created: int,
) -> Manifest:
    """Sign a manifest for ``identity`` and return it parsed back (so that what we publish is
    exactly what every other node will accept). Sealed content gives ``sealed_tree`` (the tree
    sealed with the content key, :func:`qiz.store.sealing.seal_tree`) and ``recipients``; the
    plain ``tree`` is then only checked, never written."""
    if (sealed_tree is None) != (recipients is None):
        raise ManifestError("a sealed manifest needs both the sealed tree and its recipients")
    if kind not in KINDS:
        raise ManifestError(f"manifest kind must be 'file' or 'dir', got {kind!r}")
    _uint(size, "size", MAX_CONTENT)
    _uint(created, "created")
    _uint(chunk, "chunk size", MAX_CHUNK)
    chunks = _uint(-(-size // chunk) if chunk else 0, "chunk count", MAX_CHUNKS)
    _check_geometry(size, chunk, chunks, k, n)
    try:
        parse_entries(entries_to_cbor(tree), kind, size)
    except TreeError as exc:
        raise ManifestError(f"manifest tree: {exc}") from None
    body = {
        "v": FORMAT_VERSION,
        "kind": kind,
        "publisher": identity.public_key.raw,
        "created": created,
        "size": size,
        "chunk": chunk,
        "chunks": chunks,
        "root": _bytes(root, "root", HASH_SIZE),
        "k": k,
        "n": n,
        "tree": entries_to_cbor(tree) if sealed_tree is None else sealed_tree,
        "sealed": None
        if recipients is None
        else [[rid, wrapped] for rid, wrapped in sorted(recipients)],
    }
    raw = wire.encode({**body, "sig": identity.sign(wire.encode(body), CONTEXT)})
    if len(raw) > MAX_MANIFEST:
        raise ManifestError(
            f"the manifest would be {len(raw)} bytes, over the {MAX_MANIFEST}-byte limit "
            "(too many files or too long paths: pack the tree into an archive first)"
        )
    return parse_manifest(raw)
