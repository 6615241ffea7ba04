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


class SignatureFileError(QizError, ValueError):
    """A ``.sig`` file is malformed or does not match; the message says which."""


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
    except wire.WireError as exc:
        raise SignatureFileError(str(exc)) from None
    if not isinstance(fields, dict) or set(fields) != {"v", "signer", "sig"}:
        raise SignatureFileError("signature file does not have the QIZ .sig layout")
    if fields["v"] != FORMAT:
        raise SignatureFileError(f"signature file has unknown format {fields['v']!r}")
    signer, sig = fields["signer"], fields["sig"]
    if not isinstance(signer, bytes) or not isinstance(sig, bytes) or len(sig) != SIGNATURE_SIZE:
        raise SignatureFileError("signature file fields have the wrong types or sizes")
    try:
        key = CompositePublicKey(signer)
    except InvalidKey as exc:
        raise SignatureFileError(str(exc)) from None
    signer_id = NodeId.from_public_key(key.raw)
    if expected_id is not None and signer_id != expected_id:
        raise InvalidSignature(f"signed by {signer_id}, not by {expected_id}")
    if expected_key is not None and expected_key != key:
        raise InvalidSignature("signed with a key other than the one in the peer record")
    key.verify_digest(sig, file_digest, CONTEXT)
    return signer_id
