"""A node's identity: its composite signing key, its X-Wing key, and the id they imply."""

from __future__ import annotations

import hashlib

from qiz import wire
from qiz.crypto.composite import CompositePublicKey, CompositeSigningKey
from qiz.crypto.errors import InvalidKey
from qiz.crypto.ids import NodeId
from qiz.crypto.xwing import XWingPrivateKey, XWingPublicKey

SECRET_FORMAT = 1


class NodeIdentity:
    """Everything secret about a node. The node id is derived, never stored."""

    __slots__ = ("node_id", "signing_key", "xwing_key")

    def __init__(self, signing_key: CompositeSigningKey, xwing_key: XWingPrivateKey) -> None:
        self.signing_key = signing_key
        self.xwing_key = xwing_key
        self.node_id = NodeId.from_public_key(signing_key.public_key().raw)

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(CompositeSigningKey.generate(), XWingPrivateKey.generate())

    @classmethod
    def derive(cls, seed: bytes) -> NodeIdentity:
        """The identity whose three key seeds are hashed from ``seed``: reproducible ids for
        simulations and test vectors. Never for a real node (anyone knowing the seed holds the
        keys)."""
        return cls(
            CompositeSigningKey(
                hashlib.sha3_256(seed + b"mldsa").digest(), hashlib.sha3_256(seed + b"ed").digest()
            ),
            XWingPrivateKey(hashlib.sha3_256(seed + b"xwing").digest()),
        )

    @property
    def public_key(self) -> CompositePublicKey:
        return self.signing_key.public_key()

    @property
    def xwing_public(self) -> XWingPublicKey:
        return self.xwing_key.public_key()

    def sign(self, message: bytes, context: str) -> bytes:
        return self.signing_key.sign(message, context)

    def to_secret_bytes(self) -> bytes:
        """The three 32-byte seeds in canonical CBOR: what the key file stores."""
        ml, ed = self.signing_key.seeds
        return wire.encode(
            {"v": SECRET_FORMAT, "mldsa65": ml, "ed25519": ed, "xwing": self.xwing_key.seed}
        )

    @classmethod
    def from_secret_bytes(cls, data: bytes) -> NodeIdentity:
        try:
            fields = wire.decode(data, max_size=1024, what="identity secret")
        except wire.WireError as exc:
            raise InvalidKey(f"identity secret is malformed: {exc}") from None
        if not isinstance(fields, dict) or fields.get("v") != SECRET_FORMAT:
            raise InvalidKey("identity secret has an unknown format")
        seeds = [fields.get(k) for k in ("mldsa65", "ed25519", "xwing")]
        if not all(isinstance(s, bytes) and len(s) == 32 for s in seeds):
            raise InvalidKey("identity secret is missing a 32-byte seed")
        return cls(CompositeSigningKey(seeds[0], seeds[1]), XWingPrivateKey(seeds[2]))
