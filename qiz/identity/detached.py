"""Detached file signatures (``FILE.sig``).

A ``.sig`` file is canonical CBOR ``{"v": 1, "signer": composite public key (1984 bytes),
"sig": composite signature}``; the signature is over SHA3-512 of the file under the context
``"qiz/file/v1"``. The signer's key travels with the signature, so a node id alone is enough to
check it (the id is the hash of that key); a peer record, when given, must name the same key.
"""

from __future__ import annotations

from qiz import QizError, wire
from qiz.crypto.composite import SIGNATURE_SIZE, CompositePublicKey
from qiz.crypto.errors import InvalidKey, InvalidSignature
from qiz.crypto.ids import NodeId
from qiz.identity.node_identity import NodeIdentity

CONTEXT = "qiz/file/v1"
FORMAT = 1
MAX_SIG_FILE = 8 * 1024
NOT_A_SIGNATURE = "not a QIZ signature file (made by 'qiz sign')"


class SignatureFileError(QizError, ValueError):
    """A ``.sig`` file is not one (garbage, truncated, another kind of file, an unknown format):
    the user gave the wrong file, a user error (exit 2). A signature that does not hold, or was
    made by someone else, is :class:`InvalidSignature` (a check that said no, exit 1)."""

    exit_code = 2


def make_signature_file(identity: NodeIdentity, file_digest: bytes) -> bytes:
    """The ``.sig`` bytes for a file whose SHA3-512 is ``file_digest``."""
    sig = identity.signing_key.sign_digest(file_digest, CONTEXT)
    return wire.encode({"v": FORMAT, "signer": identity.public_key.raw, "sig": sig})


def verify_signature_file(
    sig_file: bytes,
    file_digest: bytes,
    *,
    expected_id: NodeId | None,
    expected_key: CompositePublicKey | None = None,
) -> NodeId:
    """Return the signer's id if the signature is valid and from the expected signer.

    Raises :class:`SignatureFileError` for a malformed file or a signer other than the one
    expected, and :class:`InvalidSignature` when the signature itself does not verify.
    """
    try:
        fields = wire.decode(sig_file, max_size=MAX_SIG_FILE, what="signature file")
    except wire.WireError:
        raise SignatureFileError(NOT_A_SIGNATURE) from None
    if not isinstance(fields, dict) or set(fields) != {"v", "signer", "sig"}:
        raise SignatureFileError(NOT_A_SIGNATURE)
    if fields["v"] != FORMAT:
        version = fields["v"] if isinstance(fields["v"], int) else "?"
        raise SignatureFileError(f"a QIZ signature file of unknown format version {version}")
    signer, sig = fields["signer"], fields["sig"]
    if not isinstance(signer, bytes) or not isinstance(sig, bytes) or len(sig) != SIGNATURE_SIZE:
        raise SignatureFileError("a damaged QIZ signature file (fields of the wrong type or size)")
    try:
        key = CompositePublicKey(signer)
    except InvalidKey:
        raise SignatureFileError(
            "a damaged QIZ signature file (the signer's key is malformed)"
        ) from None
    signer_id = NodeId.from_public_key(key.raw)
    if expected_id is not None and signer_id != expected_id:
        raise InvalidSignature(f"signed by {signer_id}, not by {expected_id}")
    if expected_key is not None and expected_key != key:
        raise InvalidSignature("signed with a key other than the one in the peer record")
    key.verify_digest(sig, file_digest, CONTEXT)
    return signer_id
