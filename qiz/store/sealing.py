"""Sealed content (docs/store.md, "Stored chunks and sealing"): a fresh 32-byte content key per
put, AES-256-GCM per chunk, and that key wrapped for each recipient with HPKE X-Wing.

Why the nonces are safe: a content key encrypts exactly one content, chunk i under the nonce
"i as 12 bytes big-endian" and the tree under twelve 0xff bytes, which no chunk index reaches
(there are at most 2**20 chunks), so no nonce repeats under a key. Encryption is deterministic
for a given key, which lets the put's second pass produce the very bytes its first pass hashed.

Why the associated data: the chunk and tree labels keep a chunk from passing as a tree and
back; the wrapped key is bound to ``root || recipient id``, so it cannot be moved into another
manifest or claimed for another recipient. There is no convergent encryption (the doc says why).
"""

from __future__ import annotations

import os

from qiz import QizError, wire
from qiz.crypto.aead import Aead
from qiz.crypto.errors import DecryptionFailed
from qiz.crypto.seal import open_sealed, seal
from qiz.identity.node_identity import NodeIdentity
from qiz.identity.peer_record import PeerRecord
from qiz.store.limits import HASH_SIZE, MAX_CHUNKS
from qiz.store.manifest import CONTENT_KEY_SIZE, Manifest, ManifestError, parse_tree_bytes
from qiz.store.tree import TreeEntry, entries_to_cbor

CHUNK_AAD = b"qiz/store/chunk/v1"
TREE_AAD = b"qiz/store/tree/v1"
TREE_NONCE = b"\xff" * 12


class SealingError(QizError):
    """Sealed content that this node cannot open, or a key that does not fit."""

    exit_code = 1


class NotARecipient(SealingError):
    """The content is sealed, and not to this node."""

    http_status = 403


def new_content_key() -> bytes:
    """A fresh random key for one put (never derived from the content: no convergence)."""
    return os.urandom(CONTENT_KEY_SIZE)


def chunk_nonce(index: int) -> bytes:
    """The nonce of chunk ``index``: the index as 12 bytes big-endian."""
    if not 0 <= index < MAX_CHUNKS:
        raise ValueError(f"chunk index {index} is outside 0..{MAX_CHUNKS - 1}")
    return index.to_bytes(12, "big")


def seal_chunk(key: bytes, index: int, chunk: bytes | memoryview) -> bytes:
    """Stored chunk ``index`` of sealed content: ciphertext || 16-byte tag."""
    return Aead(key).encrypt(chunk_nonce(index), chunk, CHUNK_AAD)


def open_chunk(key: bytes, index: int, stored: bytes) -> bytes:
    """The plaintext of stored chunk ``index``; :class:`DecryptionFailed` if it was altered,
    moved to another index, or sealed under another key."""
    return Aead(key).decrypt(chunk_nonce(index), stored, CHUNK_AAD)


def seal_tree(key: bytes, tree_cbor: bytes) -> bytes:
    """The tree's canonical CBOR, sealed for the manifest's ``tree`` field."""
    return Aead(key).encrypt(TREE_NONCE, tree_cbor, TREE_AAD)


def open_tree(key: bytes, sealed: bytes) -> bytes:
    """The tree's CBOR from its sealed form; :class:`DecryptionFailed` on any mismatch."""
    return Aead(key).decrypt(TREE_NONCE, sealed, TREE_AAD)


def seal_entries(key: bytes, entries: list[TreeEntry] | tuple[TreeEntry, ...]) -> bytes:
    """:func:`seal_tree` of the entries' encoding: what a sealed put puts in its manifest."""
    return seal_tree(key, wire.encode(entries_to_cbor(entries)))


def _associated(root: bytes, recipient_id: bytes) -> bytes:
    if len(root) != HASH_SIZE or len(recipient_id) != 32:
        raise ValueError("a wrapped key is bound to a 32-byte root and a 32-byte node id")
    return root + recipient_id


def wrap_key(key: bytes, root: bytes, recipient: PeerRecord) -> tuple[bytes, bytes]:
    """(recipient id digest, wrapped key): the content key sealed to the recipient's X-Wing key
    as ``qiz seal`` does, bound to this content's root and this recipient."""
    if len(key) != CONTENT_KEY_SIZE:
        raise ValueError(f"a content key is {CONTENT_KEY_SIZE} bytes")
    rid = recipient.node_id.digest
    return rid, seal(key, recipient.xwing_key, associated_data=_associated(root, rid))


def unwrap_key(manifest: Manifest, identity: NodeIdentity) -> bytes:
    """The content key of a sealed manifest for ``identity``, or a one-line error saying why
    not (public content, not a recipient, a wrapped key that does not open)."""
    if manifest.recipients is None:
        raise SealingError("this content is public: it has no key to unwrap")
    rid = identity.node_id.digest
    wrapped = next((w for r, w in manifest.recipients if r == rid), None)
    if wrapped is None:
        count = len(manifest.recipients)
        noun = "recipient" if count == 1 else "recipients"
        raise NotARecipient(
            f"this content is sealed to {count} {noun}; this node is not one of them"
        )
    try:
        key = open_sealed(
            wrapped, identity.xwing_key, associated_data=_associated(manifest.root, rid)
        )
    except DecryptionFailed:
        raise SealingError(
            "the content key wrapped for this node does not open (it was made for another "
            "manifest or altered)"
        ) from None
    if len(key) != CONTENT_KEY_SIZE:
        raise SealingError("the content key wrapped for this node has the wrong length")
    return key


def open_manifest_tree(manifest: Manifest, key: bytes) -> tuple[TreeEntry, ...]:
    """The checked tree of a sealed manifest (the same path rules as a public tree)."""
    if manifest.sealed_tree is None:
        if manifest.tree is None:  # pragma: no cover - a parsed manifest has one or the other
            raise ManifestError("manifest has no tree")
        return manifest.tree
    try:
        tree_cbor = open_tree(key, manifest.sealed_tree)
    except DecryptionFailed:
        raise SealingError("the sealed tree does not open with this content key") from None
    return parse_tree_bytes(manifest, tree_cbor)
