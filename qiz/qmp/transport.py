"""QMP over asyncio TCP: the adapter that feeds :class:`~qiz.qmp.connection.Connection` with
socket bytes and wall-clock time.

* :func:`dial` opens a link and returns it established (or raises :class:`LinkError`);
* :class:`Listener` accepts links and keeps two budgets apart: handshakes in progress
  (unauthenticated: a cap of their own, a cap per network prefix, a short deadline, and the
  oldest silent one dropped to make room) and established links (a cap, part of it reserved for
  peers the node already knows); it turns on the handshake cookie when too many handshakes are
  in progress at once;
* :class:`Link` gives ``send``/``recv``/``ping`` with backpressure both ways: ``send`` waits while
  the socket's write buffer is above its high-water mark, and reading pauses while more than
  ``max_queued`` received messages, or ``max_queued_bytes`` of them, wait for the application.

Timers: each link has one event-loop timer, armed at the connection's
:meth:`~qiz.qmp.connection.Connection.next_deadline` (handshake timeout, idle timeout, erasure of
an old key) and re-armed after the calls that can move that deadline earlier (bytes received, a
tick). A deadline that moves later (every frame received pushes the idle timeout back) leaves the
timer where it is: it fires early, ``tick`` finds nothing due, and the timer is armed again at
the new deadline. So a quiet link wakes the event loop about once per idle timeout, a busy one
costs no timer operation per frame, and a timeout is enforced when it is due, not up to a polling
interval later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from qiz import QizError
from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import VerifiedRecordCache, parse_address
from qiz.qmp.admission import PendingTable, address_prefix
from qiz.qmp.connection import (
    Connection,
    ConnectionClosed,
    ConnectionStateError,
    HandshakeComplete,
    MessageReceived,
    PongReceived,
    QmpConfig,
    State,
)
from qiz.qmp.cookie import KEM_BURST_PER_PREFIX, KEM_RATE_PER_PREFIX, CookieAuthority
from qiz.qmp.errors import NOT_QMP, ErrorCode, QmpError
from qiz.qmp.handshake import EPHEMERAL_POOL
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.qmp")
_CLOSED = State.CLOSED  # Connection.closed without the property call, on the per-message paths
# Unsent bytes a link may hold before its handshake completes. A real handshake leaves a few KiB
# (RECORD, RESPONSE); more means the peer makes us answer but does not read the answers.
HANDSHAKE_WRITE_LIMIT = 64 * 1024
# received messages' bytes a link queues for an application that has not taken them (reading
# pauses above it, as above ``max_queued`` messages): messages may be up to 1 MiB
MAX_QUEUED_BYTES = 16 * 1024 * 1024
# Before the handshake completes, input is fed in slices this small and the output is checked
# after each, so that a burst of tiny requests (HELLO) cannot build a huge reply in one go.
HANDSHAKE_FEED_SLICE = 2048
# Inbound limits (the link manager's config passes its own values; these are the defaults).
# Established inbound links: bounds the node's sockets and per-link memory.
MAX_INBOUND = 256
# ... of which this many are kept for peers the node already knows (pinned, dialled by us):
# a crowd of new identities cannot take the last slots from the peers the node relies on.
RESERVED_KNOWN = 32
# ... of which one /24 (IPv4) or /64 (IPv6) may hold at most this many with peers the node does
# not know: one host minting cheap identities cannot take every unreserved slot. Half the cap
# leaves a loopback mesh (every node in 127.0.0.0/24) far more than it needs.
MAX_INBOUND_PER_PREFIX = 128
# Handshakes in progress (not yet authenticated), counted apart from established links: bounds
# what unauthenticated connections can hold; at the cap the oldest one of the busiest prefix is
# dropped, whatever its state (one waiting for its CONFIRM has cost all it will cost).
MAX_PENDING = 128
# ... per /24 (IPv4) or /64 (IPv6) source prefix, loopback included: one network cannot hold
# more than half the pending slots. 64 lets 50 local clients dial one node at once.
MAX_PENDING_PER_PREFIX = 64
# Seconds an inbound connection may take to authenticate (an honest one needs one round trip
# plus a little CPU); the dialler's own handshake_timeout (10 s) is for its side.
PENDING_TIMEOUT = 5.0
# Handshakes in progress above which an INIT must carry a cookie (mac2) to be decapsulated:
# a flood then has to prove it receives at its source address.
COOKIE_THRESHOLD = 64


class LinkError(QizError, ConnectionError):
    """A link could not be set up, or closed while in use; ``code`` says why."""

    http_status = 502  # the peer could not be reached: the owner's request itself was fine

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Link(asyncio.Protocol):
    """One QMP link on one TCP connection."""

    def __init__(
        self,
        conn: Connection,
        *,
        max_queued: int = 256,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        on_message: Callable[[Link, bytes], None] | None = None,
        on_close: Callable[[Link], None] | None = None,
        on_made: Callable[[Link], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self.on_made = on_made
        self.clock = clock
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.on_message = on_message
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.remote_address = ""
        self.established = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.rtt: float | None = None
        self.since = clock()
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._writable = True  # _can_write.is_set(), read per message without a call
        self._paused_for: set[str] = set()  # why reading is paused: "inbox", "output"
        self._pings: dict[bytes, float] = {}
        self._ping_seq = 0
        self._pong_waiters: dict[bytes, asyncio.Future[float]] = {}
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the connection deadline the timer is armed for
        self._close_listeners: list[Callable[[Link], None]] = []

    # ------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            host, port = peer[0], peer[1]
            self.remote_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.conn.peer_address = self.remote_address
        if self.on_made is not None:
            self.on_made(self)  # may refuse the connection (the listener's per-address cap)
        if self.conn.is_initiator and self.conn.state is State.START:
            self.conn.start(self.clock())  # dial() builds INIT during the TCP connect instead
        self._flush()  # also delivers a refusal queued before the connection was made (BUSY)
        if self.conn.is_initiator:
            # Make the next dial's ephemeral keys while this one waits for the responder.
            self._refill_soon()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self.established.done():
            conn = self.conn
            events = conn.receive_data(data, self.clock())
            if conn.outbound_buffered or conn.state is _CLOSED:  # pongs, a CLOSE: out first
                self._flush()
            self._dispatch(events)
            if conn.state is not _CLOSED:
                self._arm_timer()
            return
        kem_before = self.conn.kem_operations
        for start in range(0, len(data), HANDSHAKE_FEED_SLICE):
            piece = data[start : start + HANDSHAKE_FEED_SLICE]
            events = self.conn.receive_data(piece, self.clock())
            self._flush()
            self._dispatch(events)
            if self.conn.closed:
                return
        if self.conn.kem_operations != kem_before:
            # RESPONSE is written: make the next handshake's ephemerals while the peer works.
            self._refill_soon()
        self._arm_timer()

    def _refill_soon(self) -> None:
        if not EPHEMERAL_POOL.full:
            self._loop.call_soon(EPHEMERAL_POOL.refill)

    def eof_received(self) -> bool | None:
        self._finish(ErrorCode.NORMAL_CLOSE, "peer closed the connection", by_peer=True)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed"
        if self.conn.close_reason is not None:
            event = self.conn.close_reason
            self._finish(event.code, event.reason, by_peer=event.by_peer)
        else:
            self._finish(ErrorCode.NORMAL_CLOSE, reason, by_peer=True)

    def pause_writing(self) -> None:
        self._can_write.clear()
        self._writable = False

    def resume_writing(self) -> None:
        self._can_write.set()
        self._writable = True
        self._resume_reading("output")

    def _pause_reading(self, reason: str) -> None:
        if not self._paused_for and self.transport is not None:
            self.transport.pause_reading()
        self._paused_for.add(reason)

    def _resume_reading(self, reason: str) -> None:
        if reason in self._paused_for:
            self._paused_for.discard(reason)
            if not self._paused_for and self.transport is not None:
                self.transport.resume_reading()

    # ------------------------------------------------------------- public API

    @property
    def peer(self) -> PeerRecord | None:
        return self.conn.peer

    @property
    def peer_id(self) -> NodeId | None:
        return self.conn.peer.node_id if self.conn.peer else None

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    @property
    def frames_dropped(self) -> int:
        """Authentic-looking frames dropped as replays or too old (the link stays up)."""
        return self.conn.frames_dropped

    @property
    def reading_paused(self) -> bool:
        """Whether the link stopped reading its peer (inbox full, or answers not drained)."""
        return bool(self._paused_for)

    @property
    def timer_deadline(self) -> float | None:
        """The connection deadline (in ``clock`` time) the link's one timer is armed for, or
        None when no timer is armed. Never later than the connection's own deadline."""
        return self._timer_at

    def add_close_listener(self, listener: Callable[[Link], None]) -> None:
        """Call ``listener(link)`` when the link closes, synchronously, after ``on_close``:
        unlike a callback on :attr:`closed` it has run by the time ``close()`` returns."""
        if self.closed.done():
            raise LinkError(ErrorCode.NORMAL_CLOSE, "link already closed")
        self._close_listeners.append(listener)

    def take_queued(self) -> list[bytes]:
        """Messages received before a consumer attached (``on_message`` set later)."""
        queued = list(self._inbox)
        self._inbox.clear()
        self._inbox_bytes = 0
        self._resume_reading("inbox")
        return queued

    async def wait_established(self, timeout: float | None = None) -> PeerRecord:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation (a Ctrl-C)
        # that arrives as the awaited future completes, and the caller then waits on
        async with asyncio.timeout(timeout):
            await asyncio.shield(self.established)
        assert self.conn.peer is not None
        return self.conn.peer

    async def send(self, payload: bytes) -> None:
        """Send one message, waiting while the socket's buffer is full."""
        while True:
            if self.closed.done():
                raise self._closed_error()
            await self._can_write.wait()
            if self.closed.done() or self.conn.closed:
                raise self._closed_error()
            try:
                self.conn.send(payload, self.clock())
            except BufferError:
                # The connection's own buffer is full (it is flushed to the socket after every
                # call, so this is rare): hand it to the socket and let the loop run.
                self._flush()
                await asyncio.sleep(0)
                continue
            self._flush()
            return

    def send_nowait(self, payload: bytes) -> bool:
        """Send at once if the socket is taking data; False if the caller must wait.

        Raises :class:`LinkError` once the connection is closed, also while the events of the
        read that closed it are still being dispatched (a request and the peer's close can
        arrive in one read: the request's handler then answers a closed connection)."""
        conn = self.conn
        if self.closed.done() or conn.state is _CLOSED:
            raise self._closed_error()
        if not self._writable:
            return False
        try:
            conn.send(payload, self.clock())
        except BufferError:
            return False
        self._flush()
        return True

    async def recv(self) -> bytes:
        """The next message from the peer; raises :class:`LinkError` once the link is closed.
        Bytes-like: ``bytes``, or for a large message (``channel.OPEN_IN_PLACE_FROM`` bytes
        or more) a ``bytearray`` the link no longer refers to."""
        while not self._inbox:
            if self.closed.done():
                raise self._closed_error()
            self._inbox_waiter = asyncio.get_running_loop().create_future()
            await self._inbox_waiter  # woken by a message or by the close
        message = self._inbox.popleft()
        self._inbox_bytes -= len(message)
        self._after_take()
        return message

    def _after_take(self) -> None:
        if (
            len(self._inbox) <= self.max_queued // 2
            and self._inbox_bytes <= self.max_queued_bytes // 2
        ):
            self._resume_reading("inbox")

    async def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time of one encrypted ping, in seconds."""
        self._ping_seq += 1
        token = self._ping_seq.to_bytes(8, "big")
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pong_waiters[token] = waiter
        self._pings[token] = time.perf_counter()
        try:
            self.conn.ping(token, self.clock())
        except ConnectionStateError:
            self._pong_waiters.pop(token, None)
            self._pings.pop(token, None)
            raise self._closed_error() from None
        except BufferError:
            self._pong_waiters.pop(token, None)
            self._pings.pop(token, None)
            raise LinkError(ErrorCode.BUFFER_LIMIT, "outbound buffer full") from None
        self._flush()
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see wait_established
                return await waiter
        finally:
            self._pong_waiters.pop(token, None)
            self._pings.pop(token, None)

    def close(self, code: ErrorCode = ErrorCode.NORMAL_CLOSE, reason: str = "") -> None:
        if not self.conn.closed:
            self.conn.close(code, reason, self.clock())
            self._flush()
        self._close_transport()
        self._finish(code, reason or "closed locally", by_peer=False)

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)

    def stats(self) -> dict:
        return {
            "peer": str(self.peer_id) if self.peer_id else None,
            "address": self.remote_address,
            # where the peer says it listens (a dialler's source port is not its listening port)
            "listens_at": list(self.peer.addresses) if self.peer else [],
            "direction": "out" if self.conn.is_initiator else "in",
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "bytes_sent": self.conn.bytes_sent,
            "bytes_received": self.conn.bytes_received,
            "since": self.since,
            "established": self.established.done()
            and not self.established.cancelled()
            and self.established.exception() is None,
        }

    # ------------------------------------------------------------- internals

    def _closed_error(self) -> LinkError:
        event = self.conn.close_reason
        if event is not None:
            return LinkError(event.code, f"link closed: {event.reason}")
        return LinkError(ErrorCode.NORMAL_CLOSE, "link closed")

    def _flush(self) -> None:
        conn = self.conn
        data = conn.data_to_send()
        transport = self.transport
        if transport is None:
            return
        if data and not transport.is_closing():
            transport.write(data)
        buffered = transport.get_write_buffer_size()
        if not buffered:  # the usual case: the socket took it all
            if conn.state is _CLOSED:
                self._close_transport()
            return
        if not self.established.done() and buffered > HANDSHAKE_WRITE_LIMIT:
            # An unauthenticated peer that is not reading: drop what it made us buffer.
            conn.close(ErrorCode.BUFFER_LIMIT, "peer does not read the handshake replies")
            conn.data_to_send()
            transport.abort()
            return
        if buffered > conn.config.max_outbound_buffer:
            # The peer makes us answer (pings, RPC) faster than it reads: stop reading it
            # until our answers drain. If it never reads, the idle timeout ends the link.
            self._pause_reading("output")
        if self.conn.closed:
            self._close_transport()

    def _close_transport(self) -> None:
        """Close gracefully, unless much is still unsent: a peer that does not read must not
        keep our buffer alive after the link is gone."""
        if self.transport is None:
            return
        if self.transport.get_write_buffer_size() > HANDSHAKE_WRITE_LIMIT:
            self.transport.abort()
        else:
            self.transport.close()

    def _dispatch(self, events: list) -> None:
        for event in events:
            if isinstance(event, MessageReceived):
                if self.on_message is not None:
                    self.on_message(self, event.payload)
                else:
                    self._inbox.append(event.payload)
                    self._inbox_bytes += len(event.payload)
                    self._wake_reader()
                    if (
                        len(self._inbox) >= self.max_queued
                        or self._inbox_bytes >= self.max_queued_bytes
                    ):
                        self._pause_reading("inbox")
            elif isinstance(event, HandshakeComplete):
                if not self.established.done():
                    self.established.set_result(event.peer)
            elif isinstance(event, PongReceived):
                sent = self._pings.get(event.payload)
                waiter = self._pong_waiters.get(event.payload)
                if sent is not None:
                    self.rtt = time.perf_counter() - sent
                    if waiter is not None and not waiter.done():
                        waiter.set_result(self.rtt)
            elif isinstance(event, ConnectionClosed):
                self._close_transport()
                self._finish(event.code, event.reason, by_peer=event.by_peer)

    def _wake_reader(self) -> None:
        if self._inbox_waiter is not None and not self._inbox_waiter.done():
            self._inbox_waiter.set_result(None)

    def _finish(self, code: ErrorCode, reason: str, *, by_peer: bool) -> None:
        if self.closed.done():
            return
        self._cancel_timer()
        error = LinkError(code, reason)
        if not self.established.done():
            self.established.set_exception(error)
            self.established.exception()  # mark retrieved: a failed dial is reported by dial()
        for waiter in self._pong_waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._can_write.set()
        self._writable = True
        self.closed.set_result((code, reason, by_peer))
        self._wake_reader()
        if code not in (ErrorCode.NORMAL_CLOSE, ErrorCode.SHUTDOWN):
            log.info("link %s closed: %r (%s)", self.remote_address, reason, code.name)
        if self.on_close is not None:
            self.on_close(self)
        listeners, self._close_listeners = self._close_listeners, []
        for listener in listeners:
            listener(self)

    def _arm_timer(self) -> None:
        """Arm the link's timer at the connection's deadline, unless it is already armed no
        later than that (see the module docstring: an early wake-up is cheaper than a re-arm
        per frame)."""
        deadline = self.conn.next_deadline()
        if deadline is None:
            self._cancel_timer()
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= deadline:
            return
        self._cancel_timer()
        # The connection's clock may be wall time and the loop's is monotonic: convert the
        # deadline to a delay from now in the connection's clock.
        self._timer = self._loop.call_later(max(0.0, deadline - self.clock()), self._on_timer)
        self._timer_at = deadline

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        events = self.conn.tick(self.clock())
        self._flush()
        self._dispatch(events)
        if not self.closed.done():
            self._arm_timer()


# Socket errors in the words a person reads (the CLI, job logs, the dashboard), not errno text
# such as "[Errno 111] Connect call failed ('127.0.0.1', 1)".
_PLAIN_ERRNO = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "no answer (timed out)",
    errno.EADDRNOTAVAIL: "address not available here",
    errno.EACCES: "not allowed (permission denied)",
    errno.EPERM: "not allowed (operation not permitted)",
}


def _check_port_free(host: str, port: int) -> None:
    """Raise ``OSError(EADDRINUSE)`` if anything holds ``host:port``. The listener binds with
    SO_REUSEPORT (so that a hole punch can dial from its port), which would otherwise let a
    second node of the same user share the port silently, each getting half the connections;
    a bind without it is refused by any holder."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no holder
        probe.bind((host, port))


def why_not(exc: OSError) -> str:
    """Why a connection could not be made, in plain words."""
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if exc.errno in _PLAIN_ERRNO:
        return _PLAIN_ERRNO[exc.errno]
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _begin_connect(host: str, port: int) -> tuple[socket.socket, bool]:
    """A non-blocking TCP socket whose connect to ``host:port`` has started; True if it is
    already connected. The caller works while the kernel completes the handshake.

    The socket names its protocol (``IPPROTO_TCP``, not 0): asyncio turns Nagle's algorithm
    off (``TCP_NODELAY``) only on sockets whose ``proto`` says TCP. Made with proto 0, the
    dialling side of every link kept Nagle: a message written while an earlier segment was
    unacknowledged waited for the peer's delayed ACK, 40 ms (the last pieces of a put, a
    get's ``store.holders`` calls)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setblocking(False)
        err = sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock, err == 0


async def _connected(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until a connect started by :func:`_begin_connect` completes; raise its error."""
    done = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


async def dial(
    address: str,
    identity: NodeIdentity,
    local_record: PeerRecord,
    *,
    expected: PeerRecord | NodeId | None = None,
    config: QmpConfig | None = None,
    timeout: float = 10.0,
    clock: Callable[[], float] = time.time,
    on_message: Callable[[Link, bytes], None] | None = None,
    on_close: Callable[[Link], None] | None = None,
) -> Link:
    """Open an established link to ``address`` (``ip:port``)."""
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    conn = Connection.initiator(
        identity, local_record, expected=expected, now=clock(), config=config
    )
    sock: socket.socket | None = None  # ours to close until the transport owns it
    try:
        async with asyncio.timeout(timeout):  # not wait_for: see Link.wait_established
            sock, connected = _begin_connect(host, port)
            # INIT (an encapsulation, the record's encryption) is built while the TCP handshake
            # and the responder's accept run, and goes out in the first write.
            conn.start(clock())
            if not connected:
                await _connected(loop, sock)
            connecting, sock = sock, None
            _, link = await loop.create_connection(
                lambda: Link(conn, clock=clock, on_message=on_message, on_close=on_close),
                sock=connecting,
            )
    except (OSError, TimeoutError) as exc:
        if sock is not None:
            sock.close()
        why = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else why_not(exc)
        raise LinkError(ErrorCode.PROTOCOL_ERROR, f"cannot reach {address}: {why}") from None
    except QmpError as exc:  # the responder's record holds an unusable key
        if sock is not None:
            sock.close()
        raise LinkError(exc.code, f"cannot dial {address}: {exc}") from None
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    try:
        await link.wait_established(timeout)
    except TimeoutError:
        link.close(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timed out")
        raise LinkError(
            ErrorCode.HANDSHAKE_TIMEOUT, f"handshake with {address} timed out"
        ) from None
    except LinkError as exc:
        if str(exc).startswith(NOT_QMP):
            raise LinkError(
                exc.code, f"{address} answered but is not a QIZ node (it does not speak QMP)"
            ) from None
        raise
    except BaseException:  # failed or cancelled: leave no half-open link behind
        link.close(ErrorCode.SHUTDOWN, "dial abandoned")
        raise
    return link


class Listener:
    """Accepts QMP links on one address.

    Two budgets, kept apart so that unauthenticated connections can never take the slots of
    established ones:

    * handshakes in progress: at most ``max_pending`` in all and ``max_pending_per_prefix``
      from one /24 or /64 (loopback included), each closed after ``pending_timeout`` seconds
      (and ``config.confirm_timeout`` after our RESPONSE). A connection from a full prefix is
      refused (BUSY); when the node's total is reached, the oldest connection of the prefix
      holding the most pending handshakes is dropped (BUSY) to make room, whatever its state
      (silent, or decapsulated and waiting for its CONFIRM: dropping it costs nothing more), so
      a flood from a few networks cannot lock out a newcomer from another one;
    * established inbound links: at most ``max_inbound``; the last ``reserved_known`` of them
      only for peers ``is_known`` names (the link manager's pinned and dialled peers, and its
      ``known_peer``: the node's routing table); peers it does not know hold at most
      ``max_inbound_per_prefix`` from one /24 or /64. An unknown peer over its share is closed
      (BUSY) once authenticated. Connections refused at accept never count as established.

    ``counters`` counts each refusal by reason; KEM work is counted by :attr:`cookies`.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        local_record_provider: Callable[[], PeerRecord],
        *,
        on_link: Callable[[Link], Awaitable[None] | None],
        config: QmpConfig | None = None,
        max_inbound: int = MAX_INBOUND,
        reserved_known: int = RESERVED_KNOWN,
        max_inbound_per_prefix: int = MAX_INBOUND_PER_PREFIX,
        cookie_threshold: int = COOKIE_THRESHOLD,
        max_pending: int = MAX_PENDING,
        max_pending_per_prefix: int = MAX_PENDING_PER_PREFIX,
        pending_timeout: float = PENDING_TIMEOUT,
        kem_rate: float = KEM_RATE_PER_PREFIX,
        kem_burst: int = KEM_BURST_PER_PREFIX,
        is_known: Callable[[NodeId], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.local_record_provider = local_record_provider
        self.on_link = on_link
        self.config = config or QmpConfig()
        # inbound handshakes get the shorter of the two deadlines
        self._responder_config = dataclasses.replace(
            self.config, handshake_timeout=min(self.config.handshake_timeout, pending_timeout)
        )
        self.max_inbound = max_inbound
        # never more than a quarter of the cap: a small node still takes new peers
        self.reserved_known = min(reserved_known, max_inbound // 4)
        self.max_inbound_per_prefix = max_inbound_per_prefix
        self.cookie_threshold = cookie_threshold
        self.pending: PendingTable[Link] = PendingTable(
            total=max_pending, per_prefix=max_pending_per_prefix
        )
        self.is_known = is_known
        self.clock = clock
        self.cookies = CookieAuthority(
            identity.xwing_public.raw, now=clock(), kem_rate=kem_rate, kem_burst=kem_burst
        )
        self.records = VerifiedRecordCache()
        self.links: set[Link] = set()  # every inbound connection not yet closed
        # the authenticated, accepted ones among them, by source prefix (what the caps count)
        self._established: dict[Link, str] = {}
        self._established_per_prefix: Counter[str] = Counter()
        self.server: asyncio.base_events.Server | None = None
        self.refused = 0
        self.handshakes_failed = 0
        self.counters = {
            "inbound_full": 0,  # refused at accept: every established slot taken
            "pending_refused": 0,  # refused at accept: the source prefix's handshakes at cap
            "pending_evicted": 0,  # dropped to make room when all pending slots were taken
            "pending_timed_out": 0,  # did not authenticate within the pending deadline
            "unknown_refused": 0,  # authenticated, but only reserved (known-peer) slots left
            "prefix_inbound_full": 0,  # authenticated, unknown, its prefix's links at cap
        }
        # the applications' on_link coroutines: cancelled and awaited by close()
        self.tasks = TaskOwner("qmp.listener", log)

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def established_count(self) -> int:
        """Inbound links authenticated, accepted and open (not handshakes in progress, not
        connections refused and still closing)."""
        return len(self._established)

    def established_from(self, prefix: str) -> int:
        """Accepted inbound links open now from ``prefix`` (see :func:`address_prefix`)."""
        return self._established_per_prefix[prefix]

    async def start(self, address: str) -> None:
        host, port = (
            parse_address(address)
            if not address.endswith(":0")
            else (
                address.rsplit(":", 1)[0].strip("[]"),
                0,
            )
        )
        loop = asyncio.get_running_loop()
        if port:
            _check_port_free(host, port)
        # reuse_port: a hole punch dials from this very port (docs/nat.md §5.1)
        self.server = await loop.create_server(self._make_link, host, port, reuse_port=True)

    def _make_link(self) -> Link:
        conn = Connection.responder(
            self.identity,
            self.local_record_provider(),
            cookies=self.cookies,
            peer_address="",
            now=self.clock(),
            config=self._responder_config,
            records=self.records,
        )
        link = Link(conn, clock=self.clock, on_close=self._on_close, on_made=self._admit)
        if self.established_count >= self.max_inbound:
            self._refuse(link, "inbound_full", "too many inbound links")
        self.links.add(link)
        link.established.add_done_callback(lambda fut, link=link: self._on_established(link, fut))
        return link

    def _refuse(self, link: Link, reason: str, message: str) -> None:
        self.refused += 1
        self.counters[reason] += 1
        link.conn.close(ErrorCode.BUSY, message)

    def _admit(self, link: Link) -> None:
        """Count a new connection against its prefix's and the node's handshake budget, or
        refuse it (its prefix is at its cap), dropping the oldest silent handshake of the
        busiest prefix when the node's total is reached."""
        if link.conn.closed:
            return
        prefix = address_prefix(link.remote_address)
        if self.pending.prefix_full(prefix):
            self._refuse(link, "pending_refused", "too many handshakes in progress from here")
            return
        if self.pending.full:
            victim = self.pending.victim(lambda _link: True)
            if victim is None:
                self._refuse(link, "pending_refused", "too many handshakes in progress")
                return
            self.counters["pending_evicted"] += 1
            self.pending.discard(victim)
            victim.close(ErrorCode.BUSY, "handshake dropped: too many in progress")
        self.pending.add(link, prefix)
        self.cookies.under_load = len(self.pending) >= self.cookie_threshold

    def _done_pending(self, link: Link) -> None:
        self.pending.discard(link)
        self.cookies.under_load = len(self.pending) >= self.cookie_threshold

    def _on_established(self, link: Link, fut: asyncio.Future) -> None:
        self._done_pending(link)
        if fut.cancelled() or fut.exception() is not None:
            self.handshakes_failed += 1
            error = None if fut.cancelled() else fut.exception()
            if isinstance(error, LinkError) and error.code is ErrorCode.HANDSHAKE_TIMEOUT:
                self.counters["pending_timed_out"] += 1
            return
        if not link.is_open:  # closed before this callback ran: _on_close has been and gone
            return
        if self.tasks.closed:  # established while the listener was closing
            link.close(ErrorCode.SHUTDOWN, "node shutting down")
            return
        peer_id = link.peer_id
        known = peer_id is not None and self.is_known is not None and self.is_known(peer_id)
        limit = self.max_inbound if known else self.max_inbound - self.reserved_known
        prefix = address_prefix(link.remote_address)
        if self.established_count >= limit:
            self.refused += 1
            self.counters["unknown_refused" if not known else "inbound_full"] += 1
            link.close(ErrorCode.BUSY, "too many inbound links")
            return
        if not known and self._established_per_prefix[prefix] >= self.max_inbound_per_prefix:
            self.refused += 1
            self.counters["prefix_inbound_full"] += 1
            link.close(ErrorCode.BUSY, "too many inbound links from this network")
            return
        self._established[link] = prefix
        self._established_per_prefix[prefix] += 1
        result = self.on_link(link)
        if asyncio.iscoroutine(result):
            self.tasks.spawn(result, f"on_link {link.remote_address}")

    def _on_close(self, link: Link) -> None:
        self.links.discard(link)
        self._done_pending(link)
        prefix = self._established.pop(link, None)
        if prefix is not None:
            self._established_per_prefix[prefix] -= 1
            if not self._established_per_prefix[prefix]:
                del self._established_per_prefix[prefix]

    async def close(self) -> None:
        """Stop accepting, close every inbound link, and wait for the ``on_link`` tasks."""
        if self.server is not None:
            self.server.close()
        for link in list(self.links):
            link.close(ErrorCode.SHUTDOWN, "node shutting down")
        await self.tasks.close()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except TimeoutError:
                log.warning("listener %s: sockets still closing after 2 s", self.address)
