"""The QMP handshake: hybrid post-quantum key exchange with mutual authentication by KEMs.

Pattern (after PQNoise's pqIK and Rosenpass; ``s`` static X-Wing keys bound to node ids by
signed peer records, ``e`` the initiator's ephemeral X-Wing key)::

    <- s_R                       (pre-message: the initiator holds R's peer record)
    INIT     -> e_I, ct1 = Encaps(s_R), {I's peer record}
    RESPONSE <- ct2 = Encaps(e_I), ct3 = Encaps(s_I), {payload}

* ct1: only the holder of s_R can derive the keys, which authenticates R to I;
* ct2: to a fresh ephemeral key, which gives forward secrecy;
* ct3: to I's static key from I's record; only the holder of s_I can derive the final keys, so
  I's first valid channel frame authenticates I to R.

The transcript hash ``h`` absorbs the protocol name, R's node id and X-Wing key, every public
value and every ciphertext; the chaining key ``ck`` absorbs each KEM secret through HKDF. Both
node ids are therefore bound into the keys. ``docs/qmp.md`` gives the byte layouts.

Randomness: with ``rng=None`` OpenSSL draws it (the fast path); an injected ``rng`` makes every
choice from ``rng(n)`` -- ephemeral seed, encapsulation seeds -- which is how the committed
transcript vector is reproduced. Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from qiz import wire
from qiz.crypto.aead import Aead, counter_nonce
from qiz.crypto.errors import DecryptionFailed, InvalidKey
from qiz.crypto.kdf import hkdf_extract_expand
from qiz.crypto.xwing import (
    CIPHERTEXT_SIZE,
    PUBLIC_KEY_SIZE,
    X25519Ephemeral,
    XWingPrivateKey,
    XWingPublicKey,
)
from qiz.identity import NodeIdentity, PeerRecord, PeerRecordError
from qiz.identity.peer_record import VerifiedRecordCache
from qiz.qmp.cookie import MAC_SIZE, compute_mac1, compute_mac2
from qiz.qmp.errors import ErrorCode, QmpError

VERSION = 1
PROTOCOL_NAME = b"QMP/1 XWing(MLKEM768+X25519) MLDSA65+Ed25519 AES256GCM SHA3-256 HKDF-SHA256"
TAG_SIZE = 16
INIT_FIXED = 2 + PUBLIC_KEY_SIZE + CIPHERTEXT_SIZE + 2  # version, e, ct1, payload length
RESPONSE_FIXED = 2 * CIPHERTEXT_SIZE + 2
MAX_PAYLOAD = 16 * 1024

Rng = Callable[[int], bytes]


class SymmetricState:
    """Transcript hash ``h`` and chaining key ``ck``, Noise-style, with SHA3-256 and HKDF."""

    def __init__(self) -> None:
        self.h = hashlib.sha3_256(PROTOCOL_NAME).digest()
        self.ck = self.h
        self._key: bytes | None = None
        self._n = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha3_256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        out = hkdf_extract_expand(ikm, salt=self.ck, info=b"qmp/1 mix", length=64)
        self.ck, self._key, self._n = out[:32], out[32:], 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self._key is not None
        ct = Aead(self._key).encrypt(counter_nonce(self._n), plaintext, self.h)
        self._n += 1
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self._key is not None
        try:
            pt = Aead(self._key).decrypt(counter_nonce(self._n), ciphertext, self.h)
        except DecryptionFailed:
            raise QmpError(
                ErrorCode.AUTHENTICATION_FAILED,
                "handshake payload does not authenticate (wrong keys or altered message)",
            ) from None
        self._n += 1
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        """(initiator-to-responder key, responder-to-initiator key)."""
        out = hkdf_extract_expand(b"", salt=self.ck, info=b"qmp/1 split", length=64)
        return out[:32], out[32:]


def _start(responder: PeerRecord) -> SymmetricState:
    state = SymmetricState()
    state.mix_hash(b"QMP prologue" + VERSION.to_bytes(2, "big"))
    state.mix_hash(responder.node_id.digest)
    state.mix_hash(responder.xwing_key.raw)
    return state


def _encapsulate(key: XWingPublicKey, rng: Rng | None) -> tuple[bytes, bytes]:
    try:
        if rng is None:
            return key.encapsulate(ephemeral=EPHEMERAL_POOL.take_x25519())
        return key.encapsulate(rng(64))
    except InvalidKey as exc:
        raise QmpError(ErrorCode.AUTHENTICATION_FAILED, f"unusable X-Wing key: {exc}") from None


def _decapsulate(key: XWingPrivateKey, ct: bytes) -> bytes:
    try:
        return key.decapsulate(ct)
    except InvalidKey as exc:
        raise QmpError(ErrorCode.AUTHENTICATION_FAILED, f"bad KEM ciphertext: {exc}") from None


class EphemeralPool:
    """Ephemeral keys made ahead of time, off the handshake's critical path.

    * X-Wing key pairs for the initiator's ``e``: key generation is its largest cost (about
      0.15 ms);
    * X25519 key pairs for encapsulations (the ephemeral half of every X-Wing ciphertext: ct1
      on the initiator, ct2 and ct3 on the responder): deriving the public value is a third of
      an encapsulation's cost and does not depend on the recipient.

    The transport refills the pool once a flight is written, while it waits for the peer, so
    the next handshake finds its keys ready. Each key is taken out once and never reused:
    forward secrecy is unchanged, a key merely exists a little earlier. An empty pool is not an
    error: the key is made on the spot, as before.
    """

    def __init__(self, size: int = 2, x25519_size: int = 4) -> None:
        self.size = size
        self.x25519_size = x25519_size
        self._keys: list[XWingPrivateKey] = []
        self._x25519: list[X25519Ephemeral] = []

    def take(self) -> XWingPrivateKey:
        return self._keys.pop() if self._keys else XWingPrivateKey.generate()

    def take_x25519(self) -> X25519Ephemeral:
        return self._x25519.pop() if self._x25519 else X25519Ephemeral.generate()

    @property
    def full(self) -> bool:
        return len(self._keys) >= self.size and len(self._x25519) >= self.x25519_size

    def refill(self) -> None:
        while len(self._x25519) < self.x25519_size:
            self._x25519.append(X25519Ephemeral.generate())
        while len(self._keys) < self.size:
            self._keys.append(XWingPrivateKey.generate())

    def clear(self) -> None:
        self._keys.clear()
        self._x25519.clear()


EPHEMERAL_POOL = EphemeralPool()
# A forked child must never use a key its parent may also use.
os.register_at_fork(after_in_child=EPHEMERAL_POOL.clear)


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What both sides agree on when the handshake completes."""

    peer: PeerRecord
    send_key: bytes
    receive_key: bytes
    handshake_hash: bytes  # channel binding: equal on both sides


class InitiatorHandshake:
    """The dialing side. Build with the responder's verified peer record."""

    def __init__(
        self,
        identity: NodeIdentity,
        local_record: PeerRecord,
        responder: PeerRecord,
        *,
        rng: Rng | None = None,
        payload_extra: dict | None = None,
    ) -> None:
        self.identity = identity
        self.responder = responder
        self._state = _start(responder)
        self._ephemeral = EPHEMERAL_POOL.take() if rng is None else XWingPrivateKey(rng(32))
        state = self._state
        version = VERSION.to_bytes(2, "big")
        e_pub = self._ephemeral.public_key().raw
        state.mix_hash(version)
        state.mix_hash(e_pub)
        ss1, ct1 = _encapsulate(responder.xwing_key, rng)
        state.mix_hash(ct1)
        state.mix_key(ss1)
        payload = wire.encode({"rec": local_record.raw, **(payload_extra or {})})
        enc = state.encrypt_and_hash(payload)
        self._body = version + e_pub + ct1 + len(enc).to_bytes(2, "big") + enc
        self.mac1 = compute_mac1(responder.xwing_key.raw, self._body)
        self._cookie: bytes | None = None

    def init_message(self) -> bytes:
        """The INIT frame body; with a cookie received, it carries the matching mac2."""
        with_mac1 = self._body + self.mac1
        mac2 = compute_mac2(self._cookie, with_mac1) if self._cookie else bytes(MAC_SIZE)
        return with_mac1 + mac2

    def set_cookie(self, cookie: bytes) -> None:
        self._cookie = cookie

    def read_response(self, body: bytes) -> tuple[HandshakeResult, dict]:
        """Process RESPONSE; return the result and the responder's decoded payload."""
        if len(body) < RESPONSE_FIXED + TAG_SIZE:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, "RESPONSE is too short")
        ct2 = body[:CIPHERTEXT_SIZE]
        ct3 = body[CIPHERTEXT_SIZE : 2 * CIPHERTEXT_SIZE]
        length = int.from_bytes(body[2 * CIPHERTEXT_SIZE : RESPONSE_FIXED], "big")
        enc = body[RESPONSE_FIXED:]
        if length != len(enc):
            raise QmpError(ErrorCode.PROTOCOL_ERROR, "RESPONSE payload length mismatch")
        state = self._state
        state.mix_hash(ct2)
        state.mix_key(_decapsulate(self._ephemeral, ct2))
        state.mix_hash(ct3)
        state.mix_key(_decapsulate(self.identity.xwing_key, ct3))
        payload = _decode_payload(state.decrypt_and_hash(enc))
        send_key, receive_key = state.split()
        return HandshakeResult(self.responder, send_key, receive_key, state.h), payload


class ResponderHandshake:
    """The listening side: check INIT, verify the initiator's record, build RESPONSE."""

    def __init__(
        self,
        identity: NodeIdentity,
        local_record: PeerRecord,
        records: VerifiedRecordCache | None = None,
    ) -> None:
        self.identity = identity
        self.local_record = local_record
        self.records = records

    @staticmethod
    def split_init(body: bytes) -> tuple[bytes, bytes, bytes]:
        """(message covered by mac1, mac1, mac2) -- cheap parsing before any KEM work."""
        if len(body) < INIT_FIXED + TAG_SIZE + 2 * MAC_SIZE:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, "INIT is too short")
        return body[: -2 * MAC_SIZE], body[-2 * MAC_SIZE : -MAC_SIZE], body[-MAC_SIZE:]

    @staticmethod
    def init_ciphertext(message: bytes) -> bytes:
        """``ct1`` of an INIT (``message`` as :meth:`split_init` returns it): the input of the
        responder's decapsulation, and so the key of its replay cache."""
        return message[2 + PUBLIC_KEY_SIZE : 2 + PUBLIC_KEY_SIZE + CIPHERTEXT_SIZE]

    def respond(
        self,
        body: bytes,
        *,
        now: float,
        rng: Rng | None = None,
        payload_extra: dict | None = None,
    ) -> tuple[bytes, HandshakeResult, dict]:
        """Process INIT (macs already checked); return RESPONSE body, result, peer payload."""
        message, _, _ = self.split_init(body)
        version = int.from_bytes(message[:2], "big")
        if version != VERSION:
            raise QmpError(ErrorCode.UNSUPPORTED_VERSION, f"QMP version {version} is not supported")
        e_pub = message[2 : 2 + PUBLIC_KEY_SIZE]
        ct1 = message[2 + PUBLIC_KEY_SIZE : 2 + PUBLIC_KEY_SIZE + CIPHERTEXT_SIZE]
        length = int.from_bytes(message[INIT_FIXED - 2 : INIT_FIXED], "big")
        enc = message[INIT_FIXED:]
        if length != len(enc) or length > MAX_PAYLOAD:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, "INIT payload length mismatch")
        state = _start(self.local_record)
        state.mix_hash(message[:2])
        state.mix_hash(e_pub)
        state.mix_hash(ct1)
        state.mix_key(_decapsulate(self.identity.xwing_key, ct1))
        payload = _decode_payload(state.decrypt_and_hash(enc))
        raw_record = payload.get("rec")
        if not isinstance(raw_record, bytes):
            raise QmpError(ErrorCode.BAD_PEER_RECORD, "INIT carries no peer record")
        try:
            if self.records is not None:
                initiator = self.records.verify(raw_record, now=now)
            else:
                initiator = PeerRecord.verify(raw_record, now=now)
        except PeerRecordError as exc:
            raise QmpError(ErrorCode.BAD_PEER_RECORD, f"initiator's record: {exc}") from None
        try:
            ephemeral = XWingPublicKey(e_pub)
        except InvalidKey as exc:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, str(exc)) from None
        ss2, ct2 = _encapsulate(ephemeral, rng)
        state.mix_hash(ct2)
        state.mix_key(ss2)
        ss3, ct3 = _encapsulate(initiator.xwing_key, rng)
        state.mix_hash(ct3)
        state.mix_key(ss3)
        enc2 = state.encrypt_and_hash(wire.encode(dict(payload_extra or {})))
        receive_key, send_key = state.split()
        response = ct2 + ct3 + len(enc2).to_bytes(2, "big") + enc2
        return response, HandshakeResult(initiator, send_key, receive_key, state.h), payload


def _decode_payload(data: bytes) -> dict:
    try:
        value = wire.decode(data, max_size=MAX_PAYLOAD, what="handshake payload")
    except wire.WireError as exc:
        raise QmpError(ErrorCode.PROTOCOL_ERROR, str(exc)) from None
    if not isinstance(value, dict):
        raise QmpError(ErrorCode.PROTOCOL_ERROR, "handshake payload is not a map")
    return value
