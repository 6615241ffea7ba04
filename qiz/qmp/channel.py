"""The QMP channel: AEAD-protected frames after the handshake (sans-IO).

DATA frame body: ``epoch (u32) || counter (u64) || AES-256-GCM(inner)`` with nonce
``epoch || counter`` and the associated data ``kind (u8) || epoch || counter``. ``inner`` is
``type (u8) || payload``. Each direction has its own key; counters never repeat on a link.

Rekeying (the whitepaper's "decoherence management", made real): a sender moves to the next
epoch when its key is ``rekey_interval`` seconds old or has protected ``rekey_bytes``; the next key
is HKDF-Expand(key, "qmp/1 rekey") and the old one is erased, so a key stolen later cannot
decrypt earlier epochs. A receiver follows when it sees ``epoch + 1``, keeps the previous key
briefly for frames still in flight, and refuses a key older than ``reject_after`` seconds.

Time: the sender's rekey by age happens at the first frame sealed after ``rekey_interval``, not
on a timer: a key that seals nothing needs no replacement, and advancing an epoch without a frame
would let a receiver see ``epoch + 2``. The one time-driven duty is erasing the previous receive
key once its grace is over (:meth:`Channel.next_deadline` / :meth:`Channel.tick`), so that it does
not stay in memory until the next rekey.

Replay: a sliding window (``replay_window`` counters, as in RFC 6479) rejects duplicates and
frames too old to judge; such frames are dropped, the link stays up.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from qiz.crypto.aead import TAG_SIZE, Aead
from qiz.crypto.errors import DecryptionFailed
from qiz.crypto.kdf import hkdf_expand
from qiz.qmp.errors import ErrorCode, QmpError
from qiz.qmp.frames import HEADER_SIZE, FrameKind

HEADER = struct.Struct(">IQ")
DATA_OVERHEAD = HEADER.size + 1 + TAG_SIZE
_MAX_COUNTER = (1 << 64) - 2
_DATA_KIND = bytes([FrameKind.DATA])
# Payloads from this size on are opened into a bytearray whose first (inner type) byte is then
# dropped in place: the payload is not copied again to cut that byte off. Smaller ones are
# plain ``bytes`` (they may be used as dict keys: ping tokens).
OPEN_IN_PLACE_FROM = 2048


class InnerType(enum.IntEnum):
    APP = 0
    PING = 1
    PONG = 2
    CLOSE = 3
    CONFIRM = 4


_INNER_TYPES = {t.value: t for t in InnerType}
# The one-byte inner type prefix, indexed by type: no bytes([t]) built per frame.
# every byte value, not only the types we send: a peer's seal (and the fuzz tests' attacker,
# which seals unknown types) goes through the same table
_INNER_PREFIX = tuple(bytes([value]) for value in range(256))
_MIN_BODY = HEADER.size + 1 + TAG_SIZE
_NONCE_SIZE = HEADER.size  # epoch || counter, the nonce


@dataclass(frozen=True)
class ChannelConfig:
    rekey_interval: float = 120.0
    rekey_bytes: int = 1 << 30
    reject_after: float = 180.0
    previous_key_grace: float = 10.0
    replay_window: int = 2048


class ReplayWindow:
    """Tracks which counters were seen: the highest, and a bitmap of the ``size`` below it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.highest = -1
        self._bits = 0
        self._mask = (1 << size) - 1  # built once: a replay_window-bit integer

    def seen_or_too_old(self, counter: int) -> bool:
        if counter > self.highest:
            return False
        offset = self.highest - counter
        return offset >= self.size or bool(self._bits >> offset & 1)

    def mark(self, counter: int) -> None:
        if counter > self.highest:
            shift = counter - self.highest
            if shift >= self.size:  # the peer picks the counter: never shift by it blindly
                self._bits = 1
            else:
                self._bits = ((self._bits << shift) | 1) & self._mask
            self.highest = counter
        else:
            self._bits |= 1 << (self.highest - counter)


def next_key(key: bytes) -> bytes:
    return hkdf_expand(key, info=b"qmp/1 rekey", length=32)


class Channel:
    """Both directions of an established link's record protection."""

    def __init__(
        self, send_key: bytes, receive_key: bytes, *, now: float, config: ChannelConfig
    ) -> None:
        self.config = config
        self._send = Aead(send_key)
        self._send_key = send_key
        self.send_epoch = 0
        self._send_epoch_started = now
        self._send_epoch_bytes = 0
        self._counter = 0
        self._recv = Aead(receive_key)
        self._recv_key = receive_key
        self.recv_epoch = 0
        self._recv_epoch_started = now
        self._previous: tuple[Aead, float] | None = None
        # When the previous receive key is due for erasure (None: no previous key): what
        # next_deadline() returns, kept as an attribute for the per-frame deadline check.
        self.erase_at: float | None = None
        self._window = ReplayWindow(config.replay_window)
        self.replays_dropped = 0

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work: the end of the previous receive key's grace."""
        return self.erase_at

    def tick(self, now: float) -> None:
        """Erase the previous receive key once its grace is over (it could open no frame after
        that anyway: :meth:`open` refuses it), keeping the forward-secrecy promise."""
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            self._previous = None
            self.erase_at = None

    @property
    def holds_previous_key(self) -> bool:
        return self._previous is not None

    def _maybe_rekey(self, now: float) -> None:
        if (
            now - self._send_epoch_started >= self.config.rekey_interval
            or self._send_epoch_bytes >= self.config.rekey_bytes
        ):
            self._rekey(now)

    def _rekey(self, now: float) -> None:
        """Move sending to the next epoch's key; the current one is erased."""
        self._send_key = next_key(self._send_key)
        self._send = Aead(self._send_key)
        self.send_epoch += 1
        self._send_epoch_started = now
        self._send_epoch_bytes = 0

    def seal(self, inner_type: InnerType, payload: bytes, now: float) -> bytes:
        """The body of a DATA frame carrying ``payload``."""
        header, sealed = self.seal_parts(inner_type, payload, now)
        return header + sealed

    def seal_parts(self, inner_type: InnerType, payload: bytes, now: float) -> tuple[bytes, bytes]:
        """(epoch || counter, ciphertext): the DATA body in two pieces, so that a large frame
        is copied once more only when the pieces are joined for the socket."""
        config = self.config  # _maybe_rekey, inline: this runs for every message sent
        if (
            now - self._send_epoch_started >= config.rekey_interval
            or self._send_epoch_bytes >= config.rekey_bytes
        ):
            self._rekey(now)
        counter = self._counter
        if counter > _MAX_COUNTER:
            raise QmpError(ErrorCode.KEY_EXPIRED, "frame counter exhausted")
        header = HEADER.pack(self.send_epoch, counter)
        self._counter = counter + 1
        self._send_epoch_bytes += len(payload)
        # The 12-byte header (epoch || counter) is also the nonce: unique per key.
        sealed = self._send.encrypt(
            header, _INNER_PREFIX[inner_type] + payload, _DATA_KIND + header
        )
        return header, sealed

    def seal_frame(self, inner_type: InnerType, payload: bytes, now: float) -> bytearray:
        """The whole DATA frame (frame header included) carrying ``payload``, sealed in place
        into one buffer: for large messages, one copy fewer than :meth:`seal_parts` and a join.
        The caller must not change the buffer once it is handed to the transport."""
        self._maybe_rekey(now)
        if self._counter > _MAX_COUNTER:
            raise QmpError(ErrorCode.KEY_EXPIRED, "frame counter exhausted")
        header = HEADER.pack(self.send_epoch, self._counter)
        self._counter += 1
        self._send_epoch_bytes += len(payload)
        plaintext = _INNER_PREFIX[inner_type] + payload
        body = HEADER.size + len(plaintext) + TAG_SIZE
        frame = bytearray(HEADER_SIZE + body)
        frame[0] = FrameKind.DATA
        frame[1:HEADER_SIZE] = body.to_bytes(3, "big")
        start = HEADER_SIZE + HEADER.size
        frame[HEADER_SIZE:start] = header
        self._send.encrypt_into(header, plaintext, _DATA_KIND + header, memoryview(frame)[start:])
        return frame

    def open(
        self, body: bytes | memoryview, now: float
    ) -> tuple[InnerType, bytes | bytearray] | None:
        """Open a DATA frame body: ``None`` for a replay (dropped), :class:`QmpError` to close.
        A payload of ``OPEN_IN_PLACE_FROM`` bytes or more is a bytearray (see there)."""
        if len(body) < _MIN_BODY:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, "DATA frame too short")
        epoch, counter = HEADER.unpack_from(body)
        advance = False
        if epoch == self.recv_epoch:
            if now - self._recv_epoch_started > self.config.reject_after:
                raise QmpError(ErrorCode.KEY_EXPIRED, "peer kept using a key past its lifetime")
            aead = self._recv
        elif epoch == self.recv_epoch + 1:
            candidate = next_key(self._recv_key)
            aead = Aead(candidate)
            advance = True
        elif (
            epoch + 1 == self.recv_epoch
            and self._previous is not None
            and now < self._previous[1] + self.config.previous_key_grace
        ):
            aead = self._previous[0]
        else:
            raise QmpError(ErrorCode.KEY_EXPIRED, f"frame under unknown epoch {epoch}")
        window = self._window
        if counter <= window.highest and window.seen_or_too_old(counter):
            self.replays_dropped += 1
            return None
        header = bytes(body[:_NONCE_SIZE])
        ciphertext = body[_NONCE_SIZE:]
        in_place = len(ciphertext) - TAG_SIZE > OPEN_IN_PLACE_FROM
        inner: bytes | bytearray
        try:
            if in_place:
                inner = bytearray(len(ciphertext) - TAG_SIZE)
                aead.decrypt_into(header, ciphertext, _DATA_KIND + header, inner)
            else:
                inner = aead.decrypt(header, ciphertext, _DATA_KIND + header)
        except DecryptionFailed:
            raise QmpError(
                ErrorCode.AUTHENTICATION_FAILED, "DATA frame does not authenticate"
            ) from None
        window.mark(counter)
        if advance:
            self._previous = (self._recv, now)
            self.erase_at = now + self.config.previous_key_grace
            self._recv_key = next_key(self._recv_key)
            self._recv = aead
            self.recv_epoch += 1
            self._recv_epoch_started = now
        kind = _INNER_TYPES.get(inner[0])
        if kind is None:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, f"unknown inner type {inner[0]}")
        if in_place:
            del inner[:1]  # O(1) at the front of a bytearray: no copy of the payload
            return kind, inner
        return kind, inner[1:]
