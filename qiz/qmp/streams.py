"""Byte streams over one QMP link's RPC layer (docs/nat.md §4.1), and a transport that runs a
whole QMP link over one of them.

The RPC layer carries, besides calls, three more kinds of canonical CBOR arrays::

    [4, sid, data]            STREAM_DATA     1 .. MAX_STREAM_CHUNK bytes
    [5, sid, credit]          STREAM_CREDIT   1 .. 2**31 - 1
    [6, sid, code, reason]    STREAM_CLOSE    reason at most 200 characters

:class:`StreamMux` owns the streams of one link: ids (the link's QMP initiator opens even ones,
its responder odd ones, so the ends never pick the same), at most :data:`MAX_STREAMS_PER_LINK`
open at once, and the outgoing queue (messages keep their order; a link that cannot take more
now gets them from one pump task). A malformed message, or data or credit for a stream that is
not open, closes that stream (``STREAM_CLOSE "protocol"``), never the link: the link carries
other streams and calls that did nothing wrong.

Each open stream has a handler: a :class:`CircuitTransport` for a stream that ends here (a
relayed QMP link runs over it), or a relay's forwarder (``qiz.qmp.relay_service``).

:class:`CircuitTransport` is an :class:`asyncio.Transport` over one stream, so that the same
:class:`~qiz.qmp.transport.Link` protocol that runs a QMP connection over TCP runs one over a
stream unchanged: ``write`` sends within the stream's credit and buffers the rest (above the
high-water mark the link is told to pause writing, and resumes when credit drains it),
``pause_reading`` keeps received bytes (at most the window we granted) and withholds credit,
and the stream's close reaches the link as ``connection_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Protocol

from qiz import QizError, wire
from qiz.qmp.circuit import (
    CIRCUIT_WINDOW,
    MAX_STREAM_CHUNK,
    MAX_STREAM_CREDIT,
    MAX_STREAM_REASON,
    StreamBufferFull,
    StreamEnd,
    StreamProtocolError,
)
from qiz.qmp.transport import Link, LinkError
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.streams")

STREAM_DATA, STREAM_CREDIT, STREAM_CLOSE = 4, 5, 6
STREAM_KINDS = frozenset({STREAM_DATA, STREAM_CREDIT, STREAM_CLOSE})
# Streams open on one link at once (both directions together): bounds the ids, windows and
# handlers a peer can make a node hold per link.
MAX_STREAMS_PER_LINK = 64
# Bytes of stream messages queued for a link that cannot take them now. Credit bounds a
# stream's data to one window in flight, so every stream's data fits; refusals of stray
# messages beyond this are dropped (a peer that floods them and does not read gets no more).
MAX_STREAM_QUEUE = MAX_STREAMS_PER_LINK * CIRCUIT_WINDOW + 1024 * 1024
# Seconds a closed CircuitTransport waits for credit to send what it still buffers (its QMP
# CLOSE, typically) before it gives up and drops it.
CLOSE_LINGER = 5.0
MAX_SID = 2**62


class StreamError(QizError):
    """A stream could not be opened or accepted (no free slot, a bad id)."""


class StreamHandler(Protocol):
    """What a stream's owner is told: data, credit, and the end of the stream (closed by the
    peer, by a protocol error, or because the link closed)."""

    def on_stream_data(self, data: bytes) -> None: ...

    def on_stream_credit(self, credit: int) -> None: ...

    def on_stream_close(self, code: str, reason: str) -> None: ...


class StreamMux:
    """The streams of one link."""

    def __init__(self, link: Link, tasks: TaskOwner) -> None:
        self.link = link
        self.tasks = tasks
        self.streams: dict[int, StreamHandler] = {}
        self._parity = 0 if link.conn.is_initiator else 1
        self._next = self._parity
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self.peak_queued = 0  # the most bytes the queue ever held (tests assert on it)
        self._pump: asyncio.Task[None] | None = None
        self.protocol_closes = 0  # streams closed because the peer broke the protocol
        self.dropped = 0  # refusals not queued (the queue was full)
        self.closed = False
        if link.is_open:
            link.add_close_listener(self._on_link_closed)
        else:
            self.closed = True

    # ------------------------------------------------------------------ opening

    def open(self, handler: StreamHandler) -> int:
        """A new stream id of ours, with ``handler`` for what arrives on it."""
        self._check_room()
        while self._next in self.streams:
            self._next = (self._next + 2) % MAX_SID
        sid = self._next
        self._next = (self._next + 2) % MAX_SID
        self.streams[sid] = handler
        return sid

    def accept(self, sid: int, handler: StreamHandler) -> None:
        """Take a stream the peer opened (it named ``sid`` in a call)."""
        if isinstance(sid, bool) or not isinstance(sid, int) or not 0 <= sid < MAX_SID:
            raise StreamError("a stream id is an integer in [0, 2**62)")
        if sid % 2 == self._parity:
            raise StreamError(f"stream id {sid} is not the peer's to open")
        if sid in self.streams:
            raise StreamError(f"stream {sid} is already open")
        self._check_room()
        self.streams[sid] = handler

    def _check_room(self) -> None:
        if self.closed:
            raise StreamError("the link closed")
        if len(self.streams) >= MAX_STREAMS_PER_LINK:
            raise StreamError(f"{MAX_STREAMS_PER_LINK} streams already open on this link")

    # ------------------------------------------------------------------ sending

    def send_data(self, sid: int, data: bytes) -> None:
        self._enqueue([STREAM_DATA, sid, data])

    def send_credit(self, sid: int, credit: int) -> None:
        self._enqueue([STREAM_CREDIT, sid, credit])

    def close_stream(self, sid: int, code: str, reason: str = "", *, notify: bool = True) -> None:
        """End stream ``sid`` here: tell the peer, forget it, and (``notify``) tell its
        handler."""
        handler = self.streams.pop(sid, None)
        self._enqueue([STREAM_CLOSE, sid, code, reason[:MAX_STREAM_REASON]], refusal=True)
        if handler is not None and notify:
            handler.on_stream_close(code, reason)

    def _enqueue(self, message: list, *, refusal: bool = False) -> None:
        if self.closed:
            return
        data = wire.encode(message)
        if not self._queue:
            try:
                if self.link.send_nowait(data):
                    return
            except LinkError:
                return
        if self._queued + len(data) > MAX_STREAM_QUEUE:
            if refusal:
                self.dropped += 1
                return
            # Credit bounds every stream's data below the cap: only a bug gets here.
            self.link.close(reason="stream queue overflow")
            return
        self._queue.append(data)
        self._queued += len(data)
        self.peak_queued = max(self.peak_queued, self._queued)
        if self._pump is None and not self.tasks.closed:
            self._pump = self.tasks.spawn(self._run_pump(), "stream pump")

    async def _run_pump(self) -> None:
        try:
            while self._queue:
                data = self._queue[0]
                await self.link.send(data)
                self._queue.popleft()
                self._queued -= len(data)
        except LinkError:
            self._queue.clear()
            self._queued = 0
        finally:
            self._pump = None

    @property
    def queued(self) -> int:
        """Bytes of stream messages waiting for the link now."""
        return self._queued

    # ------------------------------------------------------------------ receiving

    def on_message(self, message: list) -> None:
        """One stream message from the RPC layer (kind 4, 5 or 6, ``message[1]`` an int)."""
        kind, sid = message[0], message[1]
        handler = self.streams.get(sid)
        if kind == STREAM_CLOSE:
            if handler is None:
                return  # never answer a close: two ends cannot ping-pong closes
            del self.streams[sid]
            ok = len(message) == 4 and isinstance(message[2], str) and isinstance(message[3], str)
            code, reason = (message[2], message[3]) if ok else ("protocol", "malformed close")
            handler.on_stream_close(code[:64], reason[:MAX_STREAM_REASON])
            return
        if handler is None:
            if 0 <= sid < MAX_SID:
                self.protocol_closes += 1
                self._enqueue([STREAM_CLOSE, sid, "protocol", "no such stream"], refusal=True)
            return
        value = message[2] if len(message) == 3 else None
        try:
            if kind == STREAM_DATA:
                if not isinstance(value, bytes) or not 0 < len(value) <= MAX_STREAM_CHUNK:
                    raise StreamProtocolError("stream data must be 1 to 65536 bytes")
                handler.on_stream_data(value)
            else:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    or not 0 < value <= MAX_STREAM_CREDIT
                ):
                    raise StreamProtocolError("stream credit must be 1 to 2**31 - 1")
                handler.on_stream_credit(value)
        except StreamProtocolError as exc:
            self.protocol_closes += 1
            if self.streams.get(sid) is handler:
                self.close_stream(sid, "protocol", str(exc))

    def _on_link_closed(self, _link: Link) -> None:
        self.closed = True
        self._queue.clear()
        self._queued = 0
        streams, self.streams = self.streams, {}
        for handler in streams.values():
            handler.on_stream_close("closed", "link closed")


class CircuitTransport(asyncio.Transport):
    """An asyncio transport over one stream: a QMP :class:`~qiz.qmp.transport.Link` runs on it
    as on a socket. ``peername`` is None (a relayed link has no meaningful far end)."""

    def __init__(
        self, mux: StreamMux, *, high_water: int = 64 * 1024, window: int = CIRCUIT_WINDOW
    ) -> None:
        super().__init__()
        self.mux = mux
        self.sid: int | None = None
        self.end = StreamEnd(window=window)
        self._protocol: asyncio.Protocol | None = None
        self._high = high_water
        self._low = high_water // 4
        self._writing_paused = False
        self._reading = True
        self._received: deque[bytes] = deque()
        self._closing = False
        self._lost = False
        self._linger: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.close_code: str | None = None  # how the stream ended, once it has
        self.close_reason = ""

    # ------------------------------------------------------------------ wiring

    def open(self) -> int:
        """Open a stream of ours on the mux for this transport; returns its id."""
        self.sid = self.mux.open(self)
        return self.sid

    def accept(self, sid: int) -> None:
        """Bind this transport to a stream the peer opened."""
        self.mux.accept(sid, self)
        self.sid = sid

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return None
        if name == "stream_id":
            return self.sid
        return default

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.sid is None:
            return
        try:
            chunks = self.end.write(bytes(data))
        except StreamBufferFull as exc:
            self._end_here("limit", str(exc))
            return
        for chunk in chunks:
            self.mux.send_data(self.sid, chunk)
        if not self._writing_paused and self.end.buffered > self._high:
            self._writing_paused = True
            if self._protocol is not None:
                self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a stream has no half-close")

    def get_write_buffer_size(self) -> int:
        return self.end.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    # ------------------------------------------------------------------ reading

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.call_soon(self._deliver)

    def is_reading(self) -> bool:
        return self._reading and not self._lost

    def _deliver(self) -> None:
        while self._received and self._reading and not self._lost:
            data = self._received.popleft()
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        assert self._protocol is not None and self.sid is not None
        self._protocol.data_received(data)
        grant = self.end.consumed(len(data))
        if grant and not self._lost and self.sid in self.mux.streams:
            self.mux.send_credit(self.sid, grant)

    # ------------------------------------------------------------------ StreamHandler

    def on_stream_data(self, data: bytes) -> None:
        self.end.on_data(len(data))  # beyond our credit: StreamProtocolError, the mux closes
        if self._lost:
            return
        if self._reading and not self._received and self._protocol is not None:
            self._feed(data)
        else:
            self._received.append(data)  # at most the window we granted

    def on_stream_credit(self, credit: int) -> None:
        chunks = self.end.on_credit(credit)
        assert self.sid is not None
        for chunk in chunks:
            self.mux.send_data(self.sid, chunk)
        if self._writing_paused and self.end.buffered <= self._low:
            self._writing_paused = False
            if self._protocol is not None and not self._closing:
                self._protocol.resume_writing()
        if self._closing and not self.end.buffered:
            self._end_here("normal", "closed")

    def on_stream_close(self, code: str, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        self._closing = True
        self.end.close()
        if code == "normal":
            self._lose(None)
        else:
            self._lose(ConnectionResetError(f"stream closed ({code}): {reason}"))

    # ------------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send what waits (within credit), then close the stream; at most
        :data:`CLOSE_LINGER` seconds of waiting for credit."""
        if self._closing:
            return
        self._closing = True
        if not self.end.buffered:
            self._end_here("normal", "closed")
        else:
            self._linger = self._loop.call_later(
                CLOSE_LINGER, self._end_here, "normal", "closed with data unsent"
            )

    def abort(self) -> None:
        self._closing = True
        self._end_here("normal", "aborted")

    def _end_here(self, code: str, reason: str) -> None:
        if self._lost:
            return
        self._closing = True
        self.close_code, self.close_reason = code, reason
        self.end.close()
        if self.sid is not None and self.sid in self.mux.streams:
            self.mux.close_stream(self.sid, code, reason, notify=False)
        self._lose(None if code == "normal" else ConnectionResetError(reason))

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._received.clear()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._protocol is not None:
            protocol = self._protocol
            self._loop.call_soon(protocol.connection_lost, exc)


def close_quietly(transport: CircuitTransport) -> None:
    """Abort a circuit transport whatever its state (for error paths)."""
    with contextlib.suppress(Exception):
        transport.abort()
