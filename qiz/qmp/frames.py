"""QMP framing on a byte stream: ``kind (u8) || length (u24) || body``.

The length is checked against the limit *before* any body byte is buffered, so a peer that
announces a huge frame is refused at once, and the decoder never holds more than one frame plus
a header of unprocessed input. A zero-length body is refused too: no frame kind is empty (the
shortest, HELLO, carries its 2-byte version), so an empty one is a malformed stream.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass

from qiz.qmp.errors import NOT_QMP, ErrorCode, QmpError

HEADER_SIZE = 4
MAX_BODY = (1 << 24) - 1
MIN_BODY = 1  # every frame kind carries something; an empty body is a PROTOCOL_ERROR


class FrameKind(enum.IntEnum):
    HELLO = 1  # initiator asks for the responder's peer record
    RECORD = 2  # responder's signed peer record
    INIT = 3  # first handshake message
    COOKIE = 4  # responder under load: retry INIT with this cookie
    RESPONSE = 5  # second handshake message
    ERROR = 6  # plaintext refusal during the handshake: u16 code || UTF-8 reason
    DATA = 16  # AEAD-protected channel frame


_KINDS = {kind.value: kind for kind in FrameKind}  # a dict lookup, not an enum call per frame
_DATA = FrameKind.DATA
_HEADER = struct.Struct(">I")  # kind (top byte) || length (low 24 bits), read in one call


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    body: bytes | memoryview  # a view only for DATA frames (see FrameDecoder)

    def encode(self) -> bytes:
        return encode_frame(self.kind, self.body)


def encode_frame(kind: FrameKind, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError("frame body too large for the 24-bit length")
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole frames; errors are :class:`QmpError`.

    Input chunks are kept as they came, not appended to one growing buffer: a frame that lies
    inside one chunk is returned as a zero-copy view of it (DATA frames), and a frame spanning
    chunks is joined once. Handshake frames are returned as ``bytes``.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of the first chunk already consumed
        self._size = 0  # unconsumed bytes in all chunks
        self._decoded = 0  # frames returned so far: an error before the first is "not QMP"

    @property
    def buffered(self) -> int:
        return self._size

    def _take(self, n: int) -> bytes | memoryview:
        if n == 0:
            return b""
        first = self._chunks[0]
        if len(first) - self._offset >= n:
            piece: bytes | memoryview = memoryview(first)[self._offset : self._offset + n]
            self._offset += n
            if self._offset == len(first):
                self._chunks.popleft()
                self._offset = 0
        else:
            parts = []
            need = n
            while need:
                chunk = self._chunks[0]
                available = len(chunk) - self._offset
                if available <= need:
                    parts.append(memoryview(chunk)[self._offset :])
                    self._chunks.popleft()
                    self._offset = 0
                    need -= available
                else:
                    parts.append(memoryview(chunk)[self._offset : self._offset + need])
                    self._offset += need
                    need = 0
            piece = b"".join(parts)
        self._size -= n
        return piece

    def _peek_header(self) -> bytes:
        first = self._chunks[0]
        if len(first) - self._offset >= HEADER_SIZE:
            return first[self._offset : self._offset + HEADER_SIZE]
        out = b""
        for i, chunk in enumerate(self._chunks):
            out += chunk[self._offset :] if i == 0 else chunk
            if len(out) >= HEADER_SIZE:
                break
        return out[:HEADER_SIZE]

    def feed(self, data: bytes) -> list[Frame]:
        return [Frame(kind, body) for kind, body in self.feed_pairs(data)]

    def feed_pairs(self, data: bytes) -> list[tuple[FrameKind, bytes | memoryview]]:
        """:meth:`feed` as ``(kind, body)`` pairs: what the connection's receive path reads,
        without a :class:`Frame` built per frame.

        When nothing is buffered (the usual case: a read holds whole frames), the frames are
        cut straight out of ``data``; a partial frame at its end is kept (the chunk itself,
        with an offset) for the next call. Either way the same checks run in the same order."""
        if self._chunks or not data:
            return self._feed_buffered(data)
        if type(data) is not bytes:
            data = bytes(data)  # a caller's bytearray may change after the call
        frames: list[tuple[FrameKind, bytes | memoryview]] = []
        size = len(data)
        at = 0
        view: memoryview | None = None
        max_body = self.max_body
        unpack = _HEADER.unpack_from
        while size - at >= HEADER_SIZE:
            word = unpack(data, at)[0]
            kind = _KINDS.get(word >> 24)
            length = word & 0xFFFFFF
            if kind is None or length < MIN_BODY or length > max_body:
                self._check_header(kind, word >> 24, length, max_body)
            start = at + HEADER_SIZE
            if size - start < length:
                break
            at = start + length
            if kind is _DATA:
                if view is None:
                    view = memoryview(data)
                frames.append((kind, view[start:at]))
            else:
                frames.append((kind, data[start:at]))  # type: ignore[arg-type]
            self._decoded += 1
        if at < size:
            self._chunks.append(data)
            self._offset = at
            self._size = size - at
        return frames

    def _check_header(
        self, kind: FrameKind | None, kind_byte: int, length: int, max_body: int
    ) -> None:
        """Raise the error a bad header earns (nothing for a good one)."""
        if kind is None:
            raise self._error(ErrorCode.PROTOCOL_ERROR, f"unknown frame kind {kind_byte}")
        if length < MIN_BODY:
            raise QmpError(ErrorCode.PROTOCOL_ERROR, f"empty {kind.name} frame")
        if length > max_body:
            raise self._error(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {length} bytes announced, limit is {max_body}",
            )

    def _feed_buffered(self, data: bytes) -> list[tuple[FrameKind, bytes | memoryview]]:
        """The general path: input joined to what earlier calls left, frames taken across
        chunk boundaries."""
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
        frames: list[tuple[FrameKind, bytes | memoryview]] = []
        while self._size >= HEADER_SIZE:
            header = self._peek_header()
            kind_byte = header[0]
            length = int.from_bytes(header[1:4], "big")
            kind = _KINDS.get(kind_byte)
            self._check_header(kind, kind_byte, length, self.max_body)
            assert kind is not None
            if self._size - HEADER_SIZE < length:
                break
            self._take(HEADER_SIZE)
            body = self._take(length)
            frames.append((kind, body if kind is _DATA else bytes(body)))
            self._decoded += 1
        return frames

    def _error(self, code: ErrorCode, detail: str) -> QmpError:
        """A header no QMP speaker sends (an unknown kind, an absurd length): before any frame
        was read, the bytes are not QMP at all (an HTTP server's answer, say), and the reason
        says that in plain words."""
        if self._decoded == 0:
            return QmpError(code, f"{NOT_QMP} ({detail})")
        return QmpError(code, detail)
