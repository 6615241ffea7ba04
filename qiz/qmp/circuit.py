"""Flow control for one end of a stream (docs/nat.md §4.1): a sans-IO credit account.

A stream carries bytes in ``STREAM_DATA`` messages of at most :data:`MAX_STREAM_CHUNK` bytes.
Each side may send :data:`CIRCUIT_WINDOW` bytes before any credit; the receiver grants more
with ``STREAM_CREDIT`` as it consumes what arrived. So a receiver never holds more than one
window of a stream's bytes it has not consumed, and a relay in the middle never more than one
window per direction: the window is what bounds memory, not the sender's good will.

:class:`StreamEnd` keeps the account for one end and decides, without doing any IO:

* :meth:`StreamEnd.write`: which chunks may be sent now, buffering the rest (up to a bound);
* :meth:`StreamEnd.on_credit`: the peer granted more, so these buffered chunks may go now;
* :meth:`StreamEnd.on_data`: whether the peer stayed within the credit we granted;
* :meth:`StreamEnd.consumed`: how much credit to grant now (once half a window is consumed,
  so credit costs one small message per 128 KiB, not one per chunk).
"""

from __future__ import annotations

from collections import deque

from qiz import QizError

# Bytes each side may send on a stream before any credit, and the most it is ever owed: bounds
# what a receiver (or a relay between the ends) buffers per stream and direction.
CIRCUIT_WINDOW = 256 * 1024
# Bytes of one STREAM_DATA message: one fits in a QMP frame with room to spare.
MAX_STREAM_CHUNK = 64 * 1024
# Largest credit one STREAM_CREDIT may grant (the wire's bound).
MAX_STREAM_CREDIT = 2**31 - 1
# Bytes a stream end buffers for sending beyond its credit before writes are refused: the
# local writer (a QMP link over the stream) stops at its own high-water mark long before.
MAX_STREAM_BUFFER = 16 * 1024 * 1024
# Characters of a STREAM_CLOSE reason (longer ones are cut).
MAX_STREAM_REASON = 200


class StreamProtocolError(QizError):
    """The peer broke the stream protocol (data beyond credit, a bad credit): the stream, never
    the link, is closed with ``STREAM_CLOSE "protocol"``."""


class StreamBufferFull(QizError):
    """A local writer went past :data:`MAX_STREAM_BUFFER` bytes waiting for credit."""


class StreamEnd:
    """The credit account of one stream end, both directions."""

    def __init__(
        self, *, window: int = CIRCUIT_WINDOW, max_buffer: int = MAX_STREAM_BUFFER
    ) -> None:
        self.window = window
        self.max_buffer = max_buffer
        self.send_credit = window  # bytes we may still send before the peer grants more
        self.recv_allowance = window  # bytes the peer may still send before we grant more
        self.unconsumed = 0  # bytes received and not yet consumed by our reader
        self.consumed_ungranted = 0  # bytes consumed for which no credit was granted yet
        self._pending: deque[bytes] = deque()
        self.buffered = 0  # bytes waiting for credit
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closed = False

    # ------------------------------------------------------------------ sending

    def write(self, data: bytes) -> list[bytes]:
        """The chunks of ``data`` that may be sent now (each at most :data:`MAX_STREAM_CHUNK`);
        the rest waits for credit. Raises :class:`StreamBufferFull` past the buffer bound."""
        if self.closed:
            return []
        if not data:
            return []
        left = self.buffered + len(data) - self.send_credit  # what would wait for credit
        if left > self.max_buffer:
            raise StreamBufferFull(
                f"stream buffer would hold {left} bytes (at most {self.max_buffer})"
            )
        self._pending.append(bytes(data))
        self.buffered += len(data)
        return self._release()

    def on_credit(self, credit: int) -> list[bytes]:
        """The peer granted ``credit`` more bytes: the buffered chunks that may go now."""
        if isinstance(credit, bool) or not isinstance(credit, int):
            raise StreamProtocolError("stream credit must be an integer")
        if not 0 < credit <= MAX_STREAM_CREDIT:
            raise StreamProtocolError(f"stream credit {credit} is out of range")
        if self.send_credit + credit > self.window:
            # An honest receiver grants only what it consumed: we can never be owed more than
            # a window. More would let a peer make us queue without bound.
            raise StreamProtocolError("stream credit beyond the window")
        self.send_credit += credit
        return self._release()

    def _release(self) -> list[bytes]:
        chunks: list[bytes] = []
        while self._pending and self.send_credit > 0:
            head = self._pending[0]
            size = min(len(head), MAX_STREAM_CHUNK, self.send_credit)
            chunk, rest = head[:size], head[size:]
            if rest:
                self._pending[0] = rest
            else:
                self._pending.popleft()
            self.send_credit -= size
            self.buffered -= size
            self.bytes_sent += size
            chunks.append(chunk)
        return chunks

    def take_buffered(self) -> bytes:
        """Everything still waiting for credit, removed (for a caller giving up on it)."""
        data = b"".join(self._pending)
        self._pending.clear()
        self.buffered = 0
        return data

    # ------------------------------------------------------------------ receiving

    def on_data(self, size: int) -> None:
        """``size`` bytes arrived; raises :class:`StreamProtocolError` if the peer sent more
        than we granted or a chunk out of range."""
        if not 0 < size <= MAX_STREAM_CHUNK:
            raise StreamProtocolError(f"stream data of {size} bytes (1 to {MAX_STREAM_CHUNK})")
        if size > self.recv_allowance:
            raise StreamProtocolError(
                f"stream data of {size} bytes beyond the {self.recv_allowance} granted"
            )
        self.recv_allowance -= size
        self.unconsumed += size
        self.bytes_received += size

    def consumed(self, size: int) -> int:
        """Our reader took ``size`` received bytes. Returns the credit to grant now (0: not
        yet, wait until half a window is consumed)."""
        if not 0 <= size <= self.unconsumed:
            raise ValueError(f"consumed {size} bytes of {self.unconsumed} received")
        self.unconsumed -= size
        self.consumed_ungranted += size
        if self.closed or self.consumed_ungranted < self.window // 2:
            return 0
        grant, self.consumed_ungranted = self.consumed_ungranted, 0
        self.recv_allowance += grant
        return grant

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """No more sending or granting; what waited for credit is dropped."""
        self.closed = True
        self.take_buffered()
