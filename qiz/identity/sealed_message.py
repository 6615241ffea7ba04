"""Signed-then-sealed messages: only the recipient can read them, and it learns for sure who
sent them.

Inner (plaintext of the seal) = canonical CBOR ``{"v": 1, "from": sender composite public key,
"msg": bytes, "sig": composite signature}``, where ``sig`` signs ``recipient id || SHA3-512(msg)``
under the context ``"qiz/sealed-message/v1"``. Naming the recipient inside the signature stops a
recipient from re-sealing the signed message to a third party as if it had been meant for them.
The seal is :func:`qiz.crypto.seal.seal` to the recipient's X-Wing key with the recipient's id
as associated data.
"""

from __future__ import annotations

from dataclasses import dataclass

from qiz import QizError, wire
from qiz.crypto.composite import CompositePublicKey, message_digest
from qiz.crypto.errors import InvalidKey, InvalidSignature
from qiz.crypto.ids import NodeId
from qiz.crypto.seal import MAGIC, OVERHEAD, open_sealed, seal
from qiz.identity.node_identity import NodeIdentity
from qiz.identity.peer_record import PeerRecord

CONTEXT = "qiz/sealed-message/v1"
FORMAT = 1
MAX_MESSAGE = 64 * 1024 * 1024
_INNER_SLACK = 8 * 1024


class SealedMessageError(QizError, ValueError):
    """A sealed message is malformed or its inner signature is bad."""


class NotSealedError(SealedMessageError):
    """The bytes are not a sealed QIZ message at all (no QIZ header, or shorter than any seal):
    the user gave the wrong file, which is a user error (exit 2), not a failed check."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    sender: NodeId
    sender_key: CompositePublicKey
    message: bytes


def seal_message(sender: NodeIdentity, recipient: PeerRecord, message: bytes) -> bytes:
    if len(message) > MAX_MESSAGE:
        raise SealedMessageError(f"a sealed message holds at most {MAX_MESSAGE} bytes")
    sig = sender.signing_key.sign_digest(_signed_digest(recipient.node_id, message), CONTEXT)
    inner = wire.encode({"v": FORMAT, "from": sender.public_key.raw, "msg": message, "sig": sig})
    return seal(inner, recipient.xwing_key, associated_data=recipient.node_id.digest)


def open_message(recipient: NodeIdentity, sealed: bytes) -> OpenedMessage:
    """Decrypt and check the sender's signature; raise on any problem, return nothing partial."""
    if len(sealed) > MAX_MESSAGE + _INNER_SLACK + OVERHEAD:
        raise SealedMessageError("sealed message is over the size limit")
    if len(sealed) < OVERHEAD or not sealed.startswith(MAGIC):
        raise NotSealedError("not a sealed QIZ message (made by 'qiz seal')")
    inner = open_sealed(sealed, recipient.xwing_key, associated_data=recipient.node_id.digest)
    try:
        fields = wire.decode(inner, max_size=MAX_MESSAGE + _INNER_SLACK, what="sealed message")
    except wire.WireError:
        raise SealedMessageError(
            "the sealed message's contents do not have the QIZ layout"
        ) from None
    if not isinstance(fields, dict) or set(fields) != {"v", "from", "msg", "sig"}:
        raise SealedMessageError("sealed message does not have the QIZ layout")
    if fields["v"] != FORMAT or not all(
        isinstance(fields[k], bytes) for k in ("from", "msg", "sig")
    ):
        raise SealedMessageError("sealed message has an unknown format")
    try:
        key = CompositePublicKey(fields["from"])
    except InvalidKey:
        raise SealedMessageError(
            "the sender's key inside the sealed message is malformed"
        ) from None
    digest = _signed_digest(recipient.node_id, fields["msg"])
    try:
        key.verify_digest(fields["sig"], digest, CONTEXT)
    except InvalidSignature:
        raise SealedMessageError(
            "the sender's signature inside the sealed message is bad"
        ) from None
    return OpenedMessage(NodeId.from_public_key(key.raw), key, fields["msg"])


def _signed_digest(recipient: NodeId, message: bytes) -> bytes:
    return message_digest(recipient.digest + message_digest(message))
