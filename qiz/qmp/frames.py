"""QMP framing on a byte stream: ``kind (u8) || length (u24) || body``.

The length is checked against the limit *before* any body byte is buffered, so a peer that
announces a huge frame is refused at once, and the decoder never holds more than one frame plus
a header of unprocessed input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qiz.qmp.errors import ErrorCode, QmpError

HEADER_SIZE = 4
MAX_BODY = (1 << 24) - 1


class FrameKind(enum.IntEnum):
    HELLO = 1  # initiator asks for the responder's peer record
    RECORD = 2  # responder's signed peer record
    INIT = 3  # first handshake message
    COOKIE = 4  # responder under load: retry INIT with this cookie
    RESPONSE = 5  # second handshake message
    ERROR = 6  # plaintext refusal during the handshake: u16 code || UTF-8 reason
    DATA = 16  # AEAD-protected channel frame


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    body: bytes

    def encode(self) -> bytes:
        return encode_frame(self.kind, self.body)


def encode_frame(kind: FrameKind, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError("frame body too large for the 24-bit length")
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole frames; errors are :class:`QmpError`."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= HEADER_SIZE:
            kind_byte = self._buffer[0]
            length = int.from_bytes(self._buffer[1:4], "big")
            try:
                kind = FrameKind(kind_byte)
            except ValueError:
                raise QmpError(
                    ErrorCode.PROTOCOL_ERROR, f"unknown frame kind {kind_byte}"
                ) from None
            if length > self.max_body:
                raise QmpError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {length} bytes announced, limit is {self.max_body}",
                )
            if len(self._buffer) < HEADER_SIZE + length:
                break
            body = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + length])
            del self._buffer[: HEADER_SIZE + length]
            frames.append(Frame(kind, body))
        return frames
